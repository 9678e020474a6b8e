"""The object diff of an upgrade and its apply order (pure: no cluster).

:func:`diff_objects` compares the installed objects with the new rendering:

- ``added``: in the new rendering, not installed;
- ``changed``: installed, and applying the new object would change a field it sets (the new
  body is compared as a subset of the installed one, so fields the API server defaulted on a
  live object are not reported); ``paths`` lists those fields;
- ``unchanged``: installed and identical on every field the new object sets;
- ``removed``: installed (by the previous rendering or the stage-02 record), absent from the
  new rendering: deleted after the new workloads rolled out.

:func:`upgrade_order` is the apply order: CRDs first (a new controller may need new versions of
them), then the rest in the phase order of :mod:`cni_runbook.cni.manifests`, the workloads in
the profile's rollout order (Antrea: the controller before the agents) each followed by its
rollout wait, then the removals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..cni.diff import changed_paths
from ..cni.manifests import PHASES, ManifestObject
from .installed import key_of, key_text

DIFF_COLUMNS = ["order", "phase", "kind", "namespace", "name", "change", "paths"]


def subset_paths(new: Any, live: Any, prefix: str = "") -> list[str]:
    """Dotted paths where ``new`` sets a value that ``live`` lacks or holds differently."""
    if isinstance(new, dict) and isinstance(live, dict):
        out: list[str] = []
        for k, v in new.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in live:
                if v not in (None, {}, [], ""):
                    out.append(name)
            else:
                out += subset_paths(v, live[k], name)
        return out
    if isinstance(new, list) and isinstance(live, list):
        if len(new) != len(live):
            return [prefix]
        out = []
        for i, (a, b) in enumerate(zip(new, live)):
            out += subset_paths(a, b, f"{prefix}[{i}]")
        return out
    if new == live or (isinstance(new, (int, float)) and str(new) == str(live)):
        return []
    return [prefix]


def _object_key(obj: ManifestObject) -> tuple[str, str, str, str]:
    return obj.ref.group, obj.ref.kind, obj.ref.namespace or "", obj.ref.name


def diff_objects(installed: Mapping[tuple[str, str, str, str], Mapping[str, Any]], new: Sequence[ManifestObject], *,
                 live: bool = True):
    """The diff table (module docstring): order, phase, kind, namespace, name, change, paths.

    ``installed`` maps :func:`~cni_runbook.lifecycle.installed.key_of` keys to bodies: live
    objects (``live=True``: subset comparison) or the previous rendering (``live=False``: the
    documents are compared whole, with :func:`cni_runbook.cni.diff.changed_paths`).
    """
    import pandas as pd

    rows = []
    seen = set()
    for obj in new:
        key = _object_key(obj)
        seen.add(key)
        before = installed.get(key)
        if before is None:
            change, paths = "added", []
        else:
            body = dict(obj.body)
            if obj.ref.namespace:
                body["metadata"] = {**body.get("metadata", {}), "namespace": obj.ref.namespace}
            paths = subset_paths(_comparable(body), _comparable(before)) if live else changed_paths(
                _comparable(before), _comparable(body))
            change = "changed" if paths else "unchanged"
        rows.append({"order": obj.order, "phase": obj.phase, "kind": obj.ref.kind, "namespace": obj.ref.namespace or "",
                     "name": obj.ref.name, "change": change, "paths": ", ".join(paths[:8]) + (" ..." if len(paths) > 8 else "")})
    for key, body in installed.items():
        if key not in seen:
            rows.append({"order": 0, "phase": "removed", "kind": key[1], "namespace": key[2], "name": key[3],
                         "change": "removed", "paths": ""})
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def _comparable(body: Mapping[str, Any]) -> dict[str, Any]:
    """Drop what never counts as a change: status and the apiVersion (a CRD served at a new version)."""
    return {k: v for k, v in body.items() if k not in ("status", "apiVersion")}


def counts(diff) -> dict[str, int]:
    return {change: int((diff["change"] == change).sum()) for change in ("added", "changed", "unchanged", "removed")}


def upgrade_order(objects: Sequence[ManifestObject], rollout_order: Sequence[str] = ()) -> list[ManifestObject]:
    """The new objects in upgrade order (module docstring)."""
    phase_rank = {p: i for i, p in enumerate(PHASES)}
    rank = {name: i for i, name in enumerate(rollout_order)}

    def sort_key(o: ManifestObject):
        first = 0 if o.phase == "crds" else 1
        workload = rank.get(o.ref.name, len(rank)) if o.phase == "workloads" else 0
        return first, phase_rank.get(o.phase, len(PHASES)), workload, o.order

    return sorted(objects, key=sort_key)


def steps(objects: Sequence[ManifestObject], diff, *, rollout_order: Sequence[str] = (), helm_release: str | None = None,
          restart: str = "rolling") -> list[dict[str, str]]:
    """The ordered steps of an upgrade, one row each: step, target, detail.

    ``helm_release``: the Helm route (the chart's CRDs applied server-side first, because
    ``helm upgrade`` never touches crds/, then ``helm upgrade``); else server-side apply.
    """
    ordered = upgrade_order(objects, rollout_order)
    crds = [o for o in ordered if o.phase == "crds"]
    rest = [o for o in ordered if o.phase != "crds"]
    out = []
    if crds:
        how = "server-side apply of the chart's crds/ (helm upgrade does not upgrade CRDs)" if helm_release else "server-side apply"
        out.append({"step": "apply CRDs", "target": f"{len(crds)} CRD(s)", "detail": how + ", wait Established"})
    if helm_release:
        out.append({"step": "helm upgrade", "target": helm_release, "detail": "helm upgrade --atomic with the new chart"})
        out += [{"step": "wait rollout", "target": key_text(_object_key(o)), "detail": "updated pods Ready on every node"}
                for o in rest if o.ref.kind in ("DaemonSet", "Deployment")]
    else:
        group: list[ManifestObject] = []
        for o in rest:
            if o.ref.kind in ("DaemonSet", "Deployment"):
                if group:
                    out.append({"step": "apply", "target": f"{len(group)} object(s)",
                                "detail": ", ".join(sorted({g.phase for g in group}))})
                    group = []
                out.append({"step": "apply", "target": key_text(_object_key(o)), "detail": "server-side apply"})
                out.append({"step": "wait rollout", "target": key_text(_object_key(o)),
                            "detail": "updated pods Ready on every node before the next workload"})
            else:
                group.append(o)
        if group:
            out.append({"step": "apply", "target": f"{len(group)} object(s)", "detail": ", ".join(sorted({g.phase for g in group}))})
    removed = diff[diff["change"] == "removed"] if diff is not None and len(diff) else []
    for row in getattr(removed, "itertuples", lambda: [])():
        out.append({"step": "delete", "target": f"{row.kind} {row.namespace + '/' if row.namespace else ''}{row.name}",
                    "detail": "not in the new rendering"})
    return out


def objects_by_key(objects: Sequence[ManifestObject]) -> dict[tuple[str, str, str, str], dict]:
    """A rendering as ``installed`` for :func:`diff_objects` (``live=False``)."""
    out = {}
    for o in objects:
        body = dict(o.body)
        if o.ref.namespace:
            body["metadata"] = {**body.get("metadata", {}), "namespace": o.ref.namespace}
        out[_object_key(o)] = body
    return out


__all__ = ["counts", "diff_objects", "objects_by_key", "steps", "subset_paths", "upgrade_order", "key_of"]
