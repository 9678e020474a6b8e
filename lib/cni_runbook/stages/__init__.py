"""The stage layer: the registry of stages, the one stage base, and opening a stage.

* the registry (:mod:`.registry`): :data:`STAGES`, :func:`get`, :func:`select`, :func:`outline`
  - pure data, importable by the params schema;
* the base (:mod:`.base`): :class:`Stage` with ``plan(ctx) -> Plan`` and
  ``apply(ctx, plan) -> Outcome``, and the lifecycle every stage shares;
* :func:`open` - what a stage notebook calls first: validate the params, open the context
  (:func:`cni_runbook.state.open_stage`) and return the stage's object.

One module per stage: ``preflight`` (00), ``cluster`` (01), ... (see ``StageSpec.impl``).
Adding a stage: a :class:`StageSpec` in :mod:`.registry` naming its class, a module here with
the :class:`Stage` subclass, and a notebook of the same six cells (docs/stage-contract.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import NOTEBOOKS_DIR, STAGE_IDS, STAGES, StageSpec, get, is_stage_ref, outline, select

_BASE = ("Stage", "Plan", "Outcome", "Finding", "View")


def __getattr__(name: str) -> Any:  # the base is imported on first use: the schema imports this package
    if name in _BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(name)


def stage_class(ref: str) -> type:
    """The :class:`Stage` subclass of a stage (``StageSpec.impl``)."""
    spec = get(ref)
    if not spec.impl:
        raise LookupError(f"stage {spec.id} has no stage class (its notebook works on the context directly)")
    module, _, name = spec.impl.partition(":")
    return getattr(importlib.import_module(module), name)


def open(stage: str, params_files: Any = (), set_values: Any = (), run_dir: Any = None, plan: bool | None = True,
         inline: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Open a stage from a notebook's parameters: validated params, context, the stage's object.

    ``kwargs`` go to the stage class (e.g. ``lab_cfg`` in tests).
    """
    from cni_runbook.state import open_stage

    ctx = open_stage(stage, params_files, set_values, run_dir, plan, inline=inline)
    return stage_class(ctx.stage.id)(ctx, **kwargs)


def check_params(files: Any, set_values: Any = ()) -> list[tuple[str, Any]]:
    """The plan checks of every stage whose plan is static (no download), as ``cni-runbook params``
    runs them: ``(stage id, Finding)`` for every finding, blocking or not. Plans into a temporary
    run folder that is removed afterwards; touches no host and no cluster."""
    import tempfile

    from cni_runbook.state import open_stage

    found = []
    with tempfile.TemporaryDirectory(prefix="cni-runbook-params-") as tmp:
        for spec in STAGES:
            cls = stage_class(spec.id)
            if not getattr(cls, "static_plan", False):
                continue
            plan = cls(open_stage(spec.id, list(files), list(set_values), tmp, True)).run_plan()
            found += [(spec.id, f) for f in plan.findings]
    return found


__all__ = ["check_params", "NOTEBOOKS_DIR", "STAGES", "STAGE_IDS", "StageSpec", "get", "is_stage_ref", "open", "outline", "select",
           "stage_class", *_BASE]
