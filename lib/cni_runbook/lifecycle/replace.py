"""The replacement plan (CNI A -> CNI B on a live cluster): pure, from values the stage gathered.

Order: remove A's API objects (reverse apply order; the namespaces A created, never the
cluster's own), wait until A's pods are gone, clean every node over SSH (A's
:class:`~cni_runbook.lifecycle.profiles.Leftovers`), install B, wait for B's rollout, restart
every pod that is not hostNetwork so it gets an address from B (node by node, or all at once),
wait for every node Ready and CoreDNS Running.

Refused when B does not enforce NetworkPolicy while policies are in force (how many, in which
namespaces) unless the site accepts it (``lifecycle.accept.policies_not_enforced``), and when
B is not supported on the cluster's Kubernetes version (unless accepted).

:func:`kubespray_vars` renders the group_vars a later Kubespray run must use so that it does
not reinstall A, with the diff against what the params give Kubespray today.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cni.manifests import PHASES, ManifestObject
from . import compat
from .installed import key_text
from .profiles import CniFacts
from .upgrade import Acceptance

KEEP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
RESTART_STRATEGIES = ("node-by-node", "all-at-once")


@dataclass(frozen=True)
class PoliciesInForce:
    """NetworkPolicies (and CNI-native ones) found on the cluster: per namespace counts."""

    network_policies: dict[str, int] = field(default_factory=dict)  # namespace -> count
    native: dict[str, int] = field(default_factory=dict)  # "kind namespace" -> count (Antrea ACNP/ANNP...)

    @classmethod
    def from_objects(cls, policies: Sequence[Mapping[str, Any]], native: Sequence[Mapping[str, Any]] = ()) -> PoliciesInForce:
        counts: dict[str, int] = {}
        for p in policies:
            ns = (p.get("metadata") or {}).get("namespace") or "default"
            counts[ns] = counts.get(ns, 0) + 1
        nat: dict[str, int] = {}
        for p in native:
            where = f"{p.get('kind')} {(p.get('metadata') or {}).get('namespace') or '(cluster)'}"
            nat[where] = nat.get(where, 0) + 1
        return cls(dict(sorted(counts.items())), dict(sorted(nat.items())))

    @property
    def total(self) -> int:
        return sum(self.network_policies.values())

    def describe(self) -> str:
        if not self.total:
            return "no NetworkPolicy"
        where = ", ".join(f"{ns} ({n})" for ns, n in self.network_policies.items())
        return f"{self.total} NetworkPolicy object(s) in {len(self.network_policies)} namespace(s): {where}"


@dataclass
class ReplacementPlan:
    """What a replacement would do, and whether it may (``refusals`` empty)."""

    current_profile: str
    target_profile: str
    current: CniFacts
    target: CniFacts
    remove: list[dict[str, str]]  # A's objects, in deletion order: kind, namespace, name, apiVersion
    install: list[ManifestObject]
    steps: list[dict[str, str]]
    policies: PoliciesInForce
    checks: list[compat.CompatCheck]
    restart: str
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kubespray: dict[str, Any] = field(default_factory=dict)  # before, after, diff

    @property
    def ok(self) -> bool:
        return not self.refusals

    def summary(self) -> str:
        head = (f"replace {self.current.family} by {self.target.family}: remove {len(self.remove)} object(s), "
                f"install {len(self.install)}; {self.policies.describe()}"
                + ("" if self.target.enforces_network_policy else f"; {self.target.family} does not enforce NetworkPolicy"))
        return head + ("; REFUSED: " + "; ".join(self.refusals) if self.refusals else "")

    def leftovers_table(self):
        import pandas as pd

        return pd.DataFrame(self.current.leftovers.as_rows(), columns=["what", "name"])

    def remove_table(self):
        import pandas as pd

        return pd.DataFrame(self.remove, columns=["kind", "namespace", "name", "api_version"])

    def policies_table(self):
        import pandas as pd

        rows = [{"kind": "NetworkPolicy", "namespace": ns, "count": n,
                 "enforced after": "yes" if self.target.enforces_network_policy else "NO"}
                for ns, n in self.policies.network_policies.items()]
        rows += [{"kind": k.split(" ", 1)[0], "namespace": k.split(" ", 1)[1], "count": n,
                  "enforced after": "yes" if self.target.family == self.current.family else "NO (deleted with the CRDs)"}
                 for k, n in self.policies.native.items()]
        return pd.DataFrame(rows, columns=["kind", "namespace", "count", "enforced after"])

    def checks_table(self):
        import pandas as pd

        return pd.DataFrame([c.as_row() for c in self.checks], columns=["check", "status", "detail", "source"])

    def as_record(self) -> dict[str, Any]:
        return {"mode": "replace", "current": self.current.family, "target": self.target.family,
                "remove": self.remove, "install": [str(o.ref) for o in self.install], "steps": self.steps,
                "policies": {"network_policies": self.policies.network_policies, "native": self.policies.native},
                "target_enforces_network_policy": self.target.enforces_network_policy, "restart": self.restart,
                "checks": [c.as_row() for c in self.checks], "refusals": self.refusals, "notes": self.notes,
                "kubespray": {k: v for k, v in self.kubespray.items() if k != "diff"}}


def removal_order(objects: Sequence[Mapping[str, Any]], phases: Mapping[tuple[str, str, str, str], str] | None = None) -> list[dict[str, str]]:
    """A's objects (dicts with apiVersion, kind, metadata) in deletion order: the reverse of the
    apply order (APIServices and workloads first, CRDs and namespaces last), never a cluster namespace."""
    rank = {p: i for i, p in enumerate(PHASES)}
    rows = []
    for i, body in enumerate(objects):
        meta = body.get("metadata") or {}
        kind = body.get("kind", "")
        if kind == "Namespace" and meta.get("name") in KEEP_NAMESPACES:
            continue
        from .installed import key_of

        phase = (phases or {}).get(key_of(body)) or _phase_of(body)
        rows.append((-rank.get(phase, 0), -i, {"kind": kind, "namespace": meta.get("namespace") or "",
                                               "name": meta.get("name", ""), "api_version": body.get("apiVersion", "")}))
    return [r for *_, r in sorted(rows, key=lambda t: (t[0], t[1]))]


def _phase_of(body: Mapping[str, Any]) -> str:
    from ..cni.manifests import BUILTIN_KINDS

    group = body.get("apiVersion", "").rpartition("/")[0]
    found = BUILTIN_KINDS.get((group, body.get("kind", "")))
    return found[0] if found else "custom-resources"


def plan_replacement(
    *,
    current,
    target,
    current_facts: CniFacts,
    target_facts: CniFacts,
    current_objects: Sequence[Mapping[str, Any]],
    target_objects: Sequence[ManifestObject],
    policies: PoliciesInForce,
    kube_version: str | None,
    kube_from: str,
    restart: str = "node-by-node",
    accept: Acceptance | Any = None,
    kubespray: Mapping[str, Any] | None = None,
) -> ReplacementPlan:
    """The plan (module docstring). ``current_objects``: A's objects (live, or A's rendering in a
    plan before the cluster exists); ``target_objects``: B's rendering in apply order."""
    accept = Acceptance.from_params(accept)
    refusals, notes = [], []
    if target is None:
        refusals.append("lifecycle.target: expected the CNI to replace the installed one with, got nothing")
    elif current_facts.family == target_facts.family and target.profile == current.profile:
        refusals.append(f"lifecycle.target is the installed CNI ({target_facts.family}): that is an upgrade "
                        "(lifecycle.mode: upgrade)")
    if restart not in RESTART_STRATEGIES:
        refusals.append(f"lifecycle.pod_restart: expected one of {', '.join(RESTART_STRATEGIES)}, got {restart!r}")
    if policies.total and not target_facts.enforces_network_policy:
        text = (f"{target_facts.family} does not enforce NetworkPolicy and {policies.describe()} are in force: "
                "they would silently stop protecting anything")
        if accept.policies_not_enforced:
            notes.append(text + " (accepted by the site: lifecycle.accept.policies_not_enforced)")
        else:
            refusals.append(text + "; remove them first, or accept it with lifecycle.accept.policies_not_enforced: true")
    if policies.native and current_facts.family != target_facts.family:
        notes.append(f"{sum(policies.native.values())} {current_facts.family}-native policies are deleted with "
                     f"{current_facts.family}'s CRDs: " + ", ".join(f"{k} ({n})" for k, n in policies.native.items()))
    version = getattr(target, "version", None)
    checks = [compat.check_kube(getattr(target, "profile", "generic"), version, kube_version,
                                declared=getattr(target, "compatibility", None), kube_from=kube_from,
                                accept=accept.unsupported_kube_version)]
    refusals += [f"{c.name}: {c.detail} [{c.source}]" for c in checks if c.refused]
    if not current_objects:
        notes.append(f"no object of {current_facts.family} is known: nothing of it is deleted through the API")
    remove = removal_order(current_objects)
    installing = list(target_objects)
    b_workloads = [o for o in installing if o.ref.kind in ("DaemonSet", "Deployment")]
    steps = [
        {"step": "baseline", "target": "cluster", "detail": "connectivity and the truth tables of the policies in force"},
        {"step": "delete", "target": f"{len(remove)} object(s) of {current_facts.family}",
         "detail": "reverse apply order; wait until they and their pods are gone"},
        {"step": "clean nodes", "target": "every node (SSH, Ansible)",
         "detail": ", ".join(sorted({r['what'] for r in current_facts.leftovers.as_rows()})) or "nothing declared"},
        {"step": "install", "target": f"{len(installing)} object(s) of {target_facts.family}",
         "detail": "server-side apply in phase order"},
        *[{"step": "wait rollout", "target": f"{o.ref.kind} {o.ref.namespace}/{o.ref.name}", "detail": "Ready on every node"}
          for o in b_workloads],
        {"step": "restart pods", "target": "every pod that is not hostNetwork",
         "detail": ("one node at a time, waiting for its pods to be Ready again" if restart == "node-by-node"
                    else "all at once")},
        {"step": "wait", "target": "cluster", "detail": "every node Ready, CoreDNS Running"},
        {"step": "after", "target": "cluster", "detail": "same checks and truth tables; leftovers listed on every node"},
    ]
    ks = dict(kubespray or {})
    return ReplacementPlan(current.profile, getattr(target, "profile", "?"), current_facts, target_facts, remove,
                           installing, steps, policies, checks, restart, refusals, notes, ks)


def kubespray_vars(*, network_plugin: str, cluster: Mapping[str, Any], extras: Mapping[str, Any], target_route: str,
                   target_manifest: str | None = None) -> dict[str, Any]:
    """The group_vars of a later Kubespray run before and after the replacement, and their diff.

    Before: what the params give Kubespray today (``kubespray.network_plugin``; with
    ``custom_cni`` a later run re-applies A's manifest). After: ``none`` when B is installed by
    the runbook directly (Kubespray then never touches the CNI), ``custom_cni`` with B's rendered
    manifest when B goes through Kubespray's custom_cni route.
    """
    from ..cni.custom_cni import manifest_vars
    from ..kubespray.vars import group_vars_yaml, render_group_vars

    before = render_group_vars({**cluster, "kube_network_plugin": network_plugin}, extras)
    if target_route == "kubespray_custom_cni":
        after = render_group_vars({**cluster, "kube_network_plugin": "custom_cni"},
                                  {**extras, **manifest_vars([target_manifest or "/path/of/the/rendered/target.yaml"])},
                                  allow_override=["kube_network_plugin"])
    else:
        after = render_group_vars({**cluster, "kube_network_plugin": "none"}, extras)
    a, b = group_vars_yaml(before), group_vars_yaml(after)
    diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), fromfile="group_vars today",
                                        tofile="group_vars after the replacement"))
    return {"before": before, "after": after, "diff": diff or "no change: a later Kubespray run installs no CNI\n"}


__all__ = ["PoliciesInForce", "RESTART_STRATEGIES", "ReplacementPlan", "kubespray_vars", "plan_replacement",
           "removal_order", "key_text"]
