"""Stage 04's policy sets: the built-in scenarios and the operator's files, checked against the layout.

A :class:`PolicySet` is what is applied together and verified as one truth table. Operator
files are read and checked here (kind, apiVersion, a namespace of the layout, a valid spec)
before anything is deployed, so plan mode and the static params checks see the same errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .layout import Layout, default_layout, layout_from_dict
from .model import Cluster, NetworkPolicy
from .scenarios import builtin_scenarios

PortProto = tuple[int, str]

KEEP_ANNOTATION = "cni-runbook.io/keep"
DEFAULT_PROTOCOLS = ("TCP", "UDP")


class PolicyFileError(ValueError):
    """An operator policy file cannot be verified (with the file and the object named)."""


# --------------------------------------------------------------------------- policy sets


@dataclass(frozen=True)
class PolicySet:
    """Policies applied together and verified as one truth table."""

    name: str
    description: str
    policies: tuple[dict[str, Any], ...]
    probes: tuple[PortProto, ...]  # (port, protocol) matrices to probe
    source: str = "built-in"  # or the file it came from
    keep: tuple[bool, ...] = ()  # per policy: stays applied after verification

    def kept(self) -> list[dict[str, Any]]:
        return [p for p, k in zip(self.policies, self.keep or [False] * len(self.policies), strict=True) if k]

    def removed(self) -> list[dict[str, Any]]:
        return [p for p, k in zip(self.policies, self.keep or [False] * len(self.policies), strict=True) if not k]

    def yaml(self) -> str:
        return yaml.safe_dump_all(list(self.policies), sort_keys=False)


def layout_for(policy_params: Any) -> Layout:
    """The operator's layout (``policy.layout``) or x, y, z by a, b, c on ports 80/81 TCP+UDP."""
    if policy_params.layout:
        return layout_from_dict(policy_params.layout)
    return default_layout(protocols=DEFAULT_PROTOCOLS)


def layout_probes(layout: Layout) -> tuple[PortProto, ...]:
    return tuple((port, proto) for port in layout.ports for proto in layout.protocols)


def select_scenarios(names: Sequence[str], cluster: Cluster, layout: Layout) -> list[PolicySet]:
    """Built-in scenarios by name (``all`` = every one), in the order asked for."""
    scenarios = {s.name: s for s in builtin_scenarios(cluster, ports=layout.ports[:2] if len(layout.ports) >= 2
                                                      else layout.ports)}
    wanted: list[str] = []
    for raw in names:
        picked = list(scenarios) if raw == "all" else [raw]
        for name in picked:
            if name not in scenarios:
                raise ValueError(f"unknown built-in scenario {raw!r}; known: all, {', '.join(scenarios)}")
            if name not in wanted:
                wanted.append(name)
    return [
        PolicySet(s.name, s.description, tuple(dict(p) for p in s.policies), s.probes, "built-in",
                  (False,) * len(s.policies))
        for s in (scenarios[n] for n in wanted)
    ]


def load_policy_file(path: str | Path, layout: Layout, keep: bool = False) -> PolicySet:
    """An operator's NetworkPolicy manifest (multi-document YAML, or a ``kind: List``).

    Every object must be a ``networking.k8s.io/v1`` NetworkPolicy with a namespace of the test
    layout (elsewhere its effect could not be measured). ``keep`` marks all of them to stay;
    the annotation ``cni-runbook.io/keep: "true"`` marks single policies."""
    path = Path(path)
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyFileError(f"{path}: cannot read the policy file: {exc}") from None
    objects: list[dict[str, Any]] = []
    for doc in documents:
        objects.extend(doc.get("items") or [] if doc.get("kind") == "List" else [doc])
    if not objects:
        raise PolicyFileError(f"{path}: no objects in the file")
    problems, keeps = [], []
    for number, obj in enumerate(objects, 1):
        meta = obj.get("metadata") or {}
        where = f"{path}: object {number} ({obj.get('kind', '?')} {meta.get('name', '?')})"
        if obj.get("kind") != "NetworkPolicy" or obj.get("apiVersion") != "networking.k8s.io/v1":
            problems.append(f"{where}: only networking.k8s.io/v1 NetworkPolicy objects can be verified")
            continue
        namespace = meta.get("namespace")
        if not namespace:
            problems.append(f"{where}: set metadata.namespace (one of the layout's: {', '.join(layout.namespaces)})")
            continue
        if namespace not in layout.namespaces:
            problems.append(f"{where}: namespace {namespace!r} is not in the test layout "
                            f"({', '.join(layout.namespaces)}); add it under policy.layout to measure this policy")
            continue
        try:
            NetworkPolicy.from_dict(obj)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        keeps.append(keep or str((meta.get("annotations") or {}).get(KEEP_ANNOTATION, "")).lower() == "true")
    if problems:
        raise PolicyFileError("\n".join(problems))
    names = ", ".join(f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objects)
    return PolicySet(path.stem, f"operator policies from {path.name}: {names}", tuple(objects),
                     layout_probes(layout), str(path), tuple(keeps))


def policy_sets(policy_params: Any, cluster: Cluster, layout: Layout) -> list[PolicySet]:
    """Built-in scenarios first (they need a clean slate), then the operator's files in order
    (their ``keep`` policies accumulate)."""
    sets = select_scenarios(policy_params.scenarios, cluster, layout)
    sets += [load_policy_file(f, layout, policy_params.keep) for f in policy_params.files]
    names = [s.name for s in sets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"policy set names must be unique (file stems and scenarios): {', '.join(dupes)}")
    return sets
