"""What a stage notebook works with: the run-scoped state file and the StageContext.

A stage notebook calls :func:`open_stage` once with its parameters and gets a
:class:`StageContext`: the validated params, plan mode, its own artifacts folder, the run state
(values handed to later stages, e.g. the kubeconfig path) and :meth:`StageContext.result` to
record the outcome. See docs/stage-contract.md.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import audit, stages
from .checks import STATUSES, Check, Status, coerce_all
from .params import LAB_FILE, LoadedParams, Params, load_params
from .redact import Redactor
from .target import STATE_KEY as TARGET_KEY
from .target import Target

STATE_FILE = "state.json"
RESULT_FILE = "result.json"
RECORD_FILE = "run.json"


class StageFailed(Exception):
    """Raised by StageContext.result(status="failed") so the notebook, and the run, stop there."""


class RunState:
    """A JSON key/value file in the run folder through which stages hand values to later ones."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / STATE_FILE

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._load().get(key)
        return default if entry is None else entry["value"]

    def set(self, key: str, value: Any, stage: str) -> None:
        """Record ``value`` (JSON-serialisable) under ``key``, noting the stage that set it."""
        data = self._load()
        data[key] = {"value": value, "stage": stage, "at": audit.now()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)

    def as_dict(self) -> dict[str, Any]:
        return {k: v["value"] for k, v in self._load().items()}


def kubeconfigs(run_dir: Path, params: Params) -> list[str]:
    """Kubeconfig files whose credentials must be scrubbed: the params', the run state's, the target's."""
    found = [params.provisioner.kubeconfig] if params.provisioner.kubeconfig else []
    state = RunState(run_dir)
    if value := state.get("kubeconfig"):
        found.append(value)
    target = Target.from_dict(state.get(TARGET_KEY))
    if target is not None and target.kubeconfig and target.kubeconfig not in found:
        found.append(target.kubeconfig)
    return found


def attempt_dir(run_dir: Path, stage_id: str, attempt: int) -> Path:
    """The artifacts folder of one attempt: ``artifacts/<id>`` (1), ``artifacts/<id>.attemptN``."""
    return Path(run_dir) / "artifacts" / (stage_id if attempt == 1 else f"{stage_id}.attempt{attempt}")


def artifact_dirs(run_dir: Path, stage_id: str) -> list[Path]:
    """Existing artifact folders of a stage, oldest attempt first (numbers may have gaps)."""
    base = Path(run_dir) / "artifacts"
    found = [(1, base / stage_id)] if (base / stage_id).is_dir() else []
    for path in base.glob(f"{stage_id}.attempt*"):
        suffix = path.name[len(stage_id) + len(".attempt"):]
        if suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return [p for _, p in sorted(found)]


def next_attempt(run_dir: Path, stage_id: str) -> int:
    """The number of the next attempt of a stage in a run folder: the one place it is computed.

    One more than the highest attempt either recorded in ``run.json`` (an attempt that died before
    it opened its stage has a record but no folder) or present as an artifacts folder (a notebook
    run by hand has a folder but no record). The runner calls it before executing the notebook and
    :func:`open_stage` inside it, and both see the same folder, so they agree.
    """
    run_dir = Path(run_dir)
    highest = 0
    record = run_dir / RECORD_FILE
    if record.is_file():
        try:
            entries = json.loads(record.read_text()).get("stages") or []
        except (OSError, ValueError):
            entries = []
        highest = max([int(e.get("attempt") or 0) for e in entries if e.get("stage") == stage_id] or [0])
    for path in artifact_dirs(run_dir, stage_id):
        n = 1 if path.name == stage_id else int(path.name.rsplit(".attempt", 1)[1])
        highest = max(highest, n)
    return highest + 1


@dataclass
class StageContext:
    """Everything a stage notebook needs; created by :func:`open_stage`."""

    stage: stages.StageSpec
    loaded: LoadedParams
    plan: bool
    run_dir: Path
    artifacts: Path
    redactor: Redactor
    state: RunState = field(init=False)
    lock: Any = field(default=None, init=False, repr=False)  # the cluster's run lock, once taken (kube/lock.py)

    def __post_init__(self) -> None:
        self.state = RunState(self.run_dir)

    @property
    def params(self) -> Params:
        return self.loaded.params

    def stage_params(self) -> dict[str, Any]:
        """The params sections this stage reads, as plain data."""
        dumped = self.params.model_dump(mode="json")
        return {name: dumped[name] for name in self.stage.sections}

    def put(self, key: str, value: Any) -> None:
        """Hand a value to later stages through the run state."""
        self.state.set(key, value, self.stage.id)
        if key == "kubeconfig":
            self.redactor.add_kubeconfig(value)

    def get(self, key: str, default: Any = None) -> Any:
        """A value an earlier stage handed over."""
        return self.state.get(key, default)

    def put_target(self, target: Target) -> None:
        """Hand the cluster to later stages (stage 01): the Target, and its kubeconfig path as before."""
        self.state.set(TARGET_KEY, target.as_dict(), self.stage.id)
        if target.kubeconfig:
            self.put("kubeconfig", target.kubeconfig)
            if target.context:
                self.put("kube_context", target.context)

    def target(self) -> Target | None:
        """The Target an earlier stage handed over, or None."""
        return Target.from_dict(self.state.get(TARGET_KEY))

    def write_artifact(self, name: str, content: Any) -> Path:
        """Write an artifact once (scrubbed of secrets); the format follows the suffix.

        ``.yaml``/``.yml`` and ``.json`` take data, ``.csv`` a pandas DataFrame, anything else text.
        """
        path = self.artifacts / name
        if path.exists():
            raise FileExistsError(f"{path} already exists: artifacts are written once")
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(self.redactor.data(content), sort_keys=False, allow_unicode=True)
        elif suffix == ".json":
            text = json.dumps(self.redactor.data(content), indent=2, default=str) + "\n"
        elif suffix == ".csv":
            buf = io.StringIO()
            content.to_csv(buf, index=False)
            text = self.redactor.text(buf.getvalue())
        else:
            text = self.redactor.text(str(content))
        path.write_text(text)
        return path

    def record_plan(self, actions: list[dict[str, Any]]) -> Path:
        """Write what the stage would do (one mapping per action) to plan.yaml."""
        return self.write_artifact("plan.yaml", {"stage": self.stage.id, "plan": self.plan, "actions": actions})

    def result(self, status: Status | str, summary: str, checks: list[Check | dict[str, Any]] | None = None,
               data: dict[str, Any] | None = None, raise_failed: bool = True) -> dict[str, Any]:
        """Record the stage outcome (result.json + junit.xml). ``status="failed"`` raises StageFailed
        (unless ``raise_failed=False``: then call :meth:`raise_if_failed` after showing it).

        ``checks`` are :class:`~cni_runbook.checks.Check` s (or ``{name, status, message?, time_s?,
        target?}`` mappings) with the statuses of :data:`STATUSES`.
        """
        status = Status.of(status)
        rows = [c.as_dict() for c in coerce_all(checks)]
        record = {"stage": self.stage.id, "status": status.value, "summary": summary, "plan": self.plan,
                  "at": audit.now(), "checks": rows, "data": data or {}}
        self.write_artifact(RESULT_FILE, record)
        self.write_artifact("junit.xml", audit.junit_xml(self.stage.id, rows or [
            {"name": self.stage.id, "status": status.value, "message": summary}]))
        if raise_failed:
            self.raise_if_failed(record)
        return record

    def raise_if_failed(self, record: dict[str, Any]) -> None:
        if record["status"] == Status.FAILED:
            raise StageFailed(f"{self.stage.id}: {record['summary']}")


def _default_run_dir(site: str) -> Path:
    env = os.environ.get("CNI_RUNBOOK_RUN_DIR")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return audit.create_run_dir(site)


def open_stage(stage: str, params_files: list[str] | tuple[str, ...] = (), set_values: list[str] | tuple[str, ...] = (),
               run_dir: str | os.PathLike[str] | None = None, plan: bool | None = True,
               inline: dict[str, Any] | None = None) -> StageContext:
    """Validate the params and open the stage's context. Called once, right after the parameters cell.

    * ``params_files`` - site files layered over params/defaults.yaml; when neither files nor
      ``inline`` sections are given, params/lab.yaml (the embedded lab) is used;
    * ``set_values`` - ``key.path=value`` overrides applied last;
    * ``inline`` - top-level sections given as notebook parameters (``papermill -f site.yaml``);
    * ``run_dir`` - the run folder (else $CNI_RUNBOOK_RUN_DIR, else a new folder in outputs/);
    * ``plan`` - True: render and show, touch nothing; None: take params ``run.plan``.
    """
    spec = stages.get(stage)
    inline = {k: v for k, v in (inline or {}).items() if v is not None}
    files = list(params_files) or ([] if inline else [str(LAB_FILE)])
    loaded = load_params(files, set_values, inline)
    params = loaded.params
    run_path = Path(run_dir) if run_dir else _default_run_dir(params.site)
    run_path.mkdir(parents=True, exist_ok=True)
    artifacts = attempt_dir(run_path, spec.id, next_attempt(run_path, spec.id))
    artifacts.mkdir(parents=True)
    ctx = StageContext(stage=spec, loaded=loaded, plan=params.run.plan if plan is None else bool(plan),
                       run_dir=run_path, artifacts=artifacts,
                       redactor=Redactor.for_params(params, kubeconfigs(run_path, params)))
    ctx.write_artifact("params.yaml", ctx.stage_params())
    if not spec.impl:  # a stage not yet on the stage base takes the run lock as it opens
        from .kube.lock import lock_stage

        lock_stage(ctx)
    return ctx
