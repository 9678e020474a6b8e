"""What rendering changed: a unified diff for display and a table of changed objects."""

from __future__ import annotations

import difflib
from typing import Any

from .manifests import Manifest, ObjectRef, parse_manifest


def unified_diff(upstream: Manifest, rendered: Manifest, *, context: int = 3) -> str:
    """A unified diff (``upstream`` -> ``rendered``) with file names from the manifests' sources.

    An empty string means the rendered manifest is byte for byte the upstream one.
    """
    return "".join(
        difflib.unified_diff(
            upstream.text.splitlines(keepends=True),
            rendered.text.splitlines(keepends=True),
            fromfile=f"upstream: {upstream.source}",
            tofile=f"rendered: {rendered.source}",
            n=context,
        )
    )


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two parsed documents differ (``spec.template.spec.containers[0].image``).

    Multi-line strings (an embedded config) are compared as YAML when both parse to mappings, so
    a changed key inside ``data.antrea-agent.conf`` is reported as ``data.antrea-agent.conf:tunnelType``.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        paths = []
        for key in list(before) + [k for k in after if k not in before]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in after or key not in before:
                paths.append(name)
            else:
                paths += changed_paths(before[key], after[key], name)
        return paths
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        paths = []
        for i, (a, b) in enumerate(zip(before, after)):
            paths += changed_paths(a, b, f"{prefix}[{i}]")
        return paths
    if before == after:
        return []
    if isinstance(before, str) and isinstance(after, str) and "\n" in before:
        from .yamltext import load_yaml

        try:
            a, b = load_yaml(before), load_yaml(after)
        except Exception:  # noqa: BLE001 - not YAML: report the string itself
            return [prefix]
        if isinstance(a, dict) and isinstance(b, dict):
            return [f"{prefix}:{p}" for p in changed_paths(a, b)] or [prefix]
    return [prefix]


def changed_objects(upstream: Manifest, rendered: Manifest):
    """A pandas DataFrame of the objects that differ: kind, namespace, name, change, lines, paths.

    ``change`` is modified | added | removed; ``lines`` the number of changed lines of the
    object's document (all of them for an added or removed object); ``paths`` the changed fields (see :func:`changed_paths`).
    """
    import pandas as pd

    def by_ref(manifest: Manifest) -> dict[ObjectRef, Any]:
        return {o.ref: o for o in parse_manifest(manifest)}

    before, after = by_ref(upstream), by_ref(rendered)
    rows = []
    for ref in list(before) + [r for r in after if r not in before]:
        a, b = before.get(ref), after.get(ref)
        if a is not None and b is not None and a.text == b.text:
            continue
        if a is None or b is None:
            change, lines, paths = ("added", len(b.text.splitlines()), "") if a is None else ("removed", len(a.text.splitlines()), "")
        else:
            matcher = difflib.SequenceMatcher(None, a.text.splitlines(), b.text.splitlines(), autojunk=False)
            lines = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")
            change, paths = "modified", ", ".join(changed_paths(a.body, b.body))
        rows.append({"kind": ref.kind, "namespace": ref.namespace or "", "name": ref.name,
                     "change": change, "lines": lines, "paths": paths})
    return pd.DataFrame(rows, columns=["kind", "namespace", "name", "change", "lines", "paths"])
