"""Impact of a policy change before it is applied: current vs after reachability over the
cluster's real pods, and the connections that would be cut or opened, grouped by
namespace/app, each with the rule responsible.

"After" is the current policies with the proposed objects applied on top (an object with the
same kind, namespace and name replaces the current one, as ``kubectl apply`` does) and the
``removed`` ones deleted. Kubernetes NetworkPolicies and Antrea-native policies (with their
Tiers) are evaluated by :class:`~.engine.PolicyEngine`.

Ports: the representative ports of both sets (see :mod:`.equivalence`: every range edge and
named port, plus one port no policy mentions, which stands for all the others) and the ports
the pods declare, unless the caller gives the ports.

Live use (:func:`live_impact`) reads namespaces, running non-hostNetwork pods with an IP,
NetworkPolicies and, where Antrea's CRDs exist, ACNP / ANNP / Tiers through the API; it
changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .antrea import STATIC_TIERS
from .engine import PolicyEngine
from .equivalence import representative_ports
from .model import Cluster, Pod

APP_LABELS = ("app.kubernetes.io/name", "app", "k8s-app", "pod")
CHANGE_COLUMNS = ["change", "port", "protocol", "from", "to", "from namespace", "from app", "to namespace",
                  "to app", "rule now", "rule after"]
ANTREA_KINDS = ("ClusterNetworkPolicy", "NetworkPolicy")
GROUPED_COLUMNS = ["change", "from namespace", "from app", "to namespace", "to app", "connections", "ports", "rule"]


def app_of(pod: Pod) -> str:
    """The pod's app: the first of the usual app labels, else its name."""
    for key in APP_LABELS:
        if key in pod.labels:
            return pod.labels[key]
    return pod.name


def _ref(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    group = str(obj.get("apiVersion") or "").split("/")[0]
    return (group, str(obj.get("kind") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _split(objects: Iterable[Mapping[str, Any]]) -> tuple[list[dict], list[dict], list[dict]]:
    k8s, antrea, tiers = [], [], []
    for obj in objects:
        group, kind, ns, name = _ref(obj)
        if group == "networking.k8s.io" and kind == "NetworkPolicy":
            k8s.append(dict(obj))
        elif group == "crd.antrea.io" and kind in ANTREA_KINDS:
            antrea.append(dict(obj))
        elif group == "crd.antrea.io" and kind == "Tier":
            tiers.append(dict(obj))
        else:
            where = f"{ns}/{name}" if ns else name
            raise ValueError(f"{obj.get('apiVersion', '?')} {kind or '?'} {where or '?'}: only networking.k8s.io "
                             "NetworkPolicies and crd.antrea.io policies / Tiers can be evaluated "
                             "(convert Calico policies first: cni-runbook policy convert)")
    return k8s, antrea, tiers


def apply_change(
    current: Iterable[Mapping[str, Any]],
    proposed: Iterable[Mapping[str, Any]] = (),
    removed: Iterable[Mapping[str, Any] | str] = (),
) -> list[dict[str, Any]]:
    """``current`` with ``proposed`` applied (same kind/namespace/name replaces) and
    ``removed`` deleted (objects, or ``Kind/namespace/name`` / ``Kind/name`` strings)."""
    gone = set()
    for item in removed:
        if isinstance(item, str):
            parts = item.split("/")
            if len(parts) not in (2, 3):
                raise ValueError(f"removed policy {item!r}: expected Kind/namespace/name or Kind/name")
            gone.add((parts[0], parts[1] if len(parts) == 3 else "", parts[-1]))
        else:
            _, kind, ns, name = _ref(item)
            gone.add((kind, ns, name))
    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for obj in current:
        ref = _ref(obj)
        if (ref[1], ref[2], ref[3]) not in gone:
            out[ref] = dict(obj)
    for obj in proposed:
        out[_ref(obj)] = dict(obj)
    return list(out.values())


@dataclass
class Impact:
    ports: list[tuple[int, str]]
    pods: int
    changes: pd.DataFrame = field(repr=False)

    @property
    def cut(self) -> pd.DataFrame:
        return self.changes[self.changes["change"] == "cut"]

    @property
    def opened(self) -> pd.DataFrame:
        return self.changes[self.changes["change"] == "opened"]

    @property
    def summary(self) -> str:
        ports = ", ".join(f"{proto}/{port}" for port, proto in self.ports)
        return (f"{len(self.cut)} connections cut, {len(self.opened)} opened "
                f"({self.pods} pods, ports {ports})")

    def grouped(self) -> pd.DataFrame:
        """One row per (change, from namespace/app, to namespace/app): how many connections,
        on which ports, and the rule responsible (the first one when several)."""
        columns = GROUPED_COLUMNS
        if self.changes.empty:
            return pd.DataFrame(columns=columns)
        rows = []
        keys = ["change", "from namespace", "from app", "to namespace", "to app"]
        for group, frame in self.changes.groupby(keys, sort=True):
            ports = sorted({f"{p}/{n}" for p, n in zip(frame["protocol"], frame["port"], strict=True)})
            # cut: the rule that now blocks; opened: the rule that now allows
            rows.append({**dict(zip(keys, group, strict=True)), "connections": len(frame),
                         "ports": ", ".join(ports), "rule": frame["rule after"].iloc[0]})
        return pd.DataFrame(rows, columns=columns)

    def cells(self, change: str, port: int, protocol: str = "TCP") -> set[tuple[str, str]]:
        """(from, to) pairs of one change kind on one port."""
        frame = self.changes
        frame = frame[(frame["change"] == change) & (frame["port"] == port) & (frame["protocol"] == protocol)]
        return set(zip(frame["from"], frame["to"], strict=True))


def _deciding(engine: PolicyEngine, src: str, dst: str, port: int, protocol: str) -> str:
    reasons = engine.explain(src, dst, port, protocol)[1:]
    verdict = engine.verdict(src, dst, port, protocol)
    if not verdict.allowed:
        # the direction that blocks is the responsible one
        side = "egress" if not verdict.egress_allowed else "ingress"
        reasons = [r for r in reasons if r.startswith(side)] or reasons
    return "\n".join(reasons)


def impact(
    cluster: Cluster,
    current: Iterable[Mapping[str, Any]],
    proposed: Iterable[Mapping[str, Any]] = (),
    removed: Iterable[Mapping[str, Any] | str] = (),
    ports: Sequence[tuple[int, str]] | None = None,
    include_loopback: bool = False,
) -> Impact:
    """Connections that ``proposed`` / ``removed`` would cut or open on ``cluster``."""
    current = list(current)
    after_objects = apply_change(current, proposed, removed)
    engines = []
    for objects in (current, after_objects):
        k8s, antrea, tiers = _split(objects)
        tiers = [t for t in tiers if (t.get("metadata") or {}).get("name", "").lower() not in STATIC_TIERS]
        engines.append(PolicyEngine(cluster, k8s, antrea, tiers))
    before, after = engines
    if ports is None:
        wanted = set(representative_ports(cluster, (), before.policies + after.policies,
                                          before.antrea_policies + after.antrea_policies))
        wanted |= {(p.port, p.protocol) for pod in cluster.pods for p in pod.ports}
        ports = sorted(wanted, key=lambda pp: (pp[1], pp[0]))
    by_key = {p.key: p for p in cluster.pods}
    rows = []
    for port, protocol in ports:
        now, then = before.matrix(port, protocol), after.matrix(port, protocol)
        for s in cluster.pod_keys:
            for d in cluster.pod_keys:
                if s == d and not include_loopback:
                    continue
                a, b = bool(now.at[s, d]), bool(then.at[s, d])
                if a == b:
                    continue
                rows.append({
                    "change": "cut" if a else "opened",
                    "port": port, "protocol": protocol, "from": s, "to": d,
                    "from namespace": by_key[s].namespace, "from app": app_of(by_key[s]),
                    "to namespace": by_key[d].namespace, "to app": app_of(by_key[d]),
                    "rule now": _deciding(before, s, d, port, protocol),
                    "rule after": _deciding(after, s, d, port, protocol),
                })
    return Impact(list(ports), len(cluster.pods), pd.DataFrame(rows, columns=CHANGE_COLUMNS))


def plan_frame(result: Impact, limit: int = 20) -> pd.DataFrame:
    """A small display-ready table for a plan: change, from, to, connections, ports, rule
    (first line only)."""
    grouped = result.grouped()
    if grouped.empty:
        return pd.DataFrame([{"change": "none", "from": "", "to": "", "connections": 0, "ports": "",
                              "rule": result.summary}])
    return pd.DataFrame({
        "change": grouped["change"],
        "from": grouped["from namespace"] + "/" + grouped["from app"],
        "to": grouped["to namespace"] + "/" + grouped["to app"],
        "connections": grouped["connections"],
        "ports": grouped["ports"],
        "rule": grouped["rule"].map(lambda r: r.splitlines()[0] if r else ""),
    }).head(limit)


# --------------------------------------------------------------------------- prediction vs observation


def observed_change(before: pd.DataFrame, after: pd.DataFrame) -> tuple[set[tuple[str, str]], set[tuple[str, str]], int]:
    """(cut, opened, unknown) between two observed truth tables (rows from, columns to; loopback
    ignored): cut = reachable before and not after, opened the reverse, unknown = cells either
    table could not tell."""
    cut, opened, unknown = set(), set(), 0
    for s in after.index:
        for d in after.columns:
            if s == d:
                continue
            a, b = before.at[s, d], after.at[s, d]
            if pd.isna(a) or pd.isna(b):
                unknown += 1
            elif bool(a) and not bool(b):
                cut.add((s, d))
            elif bool(b) and not bool(a):
                opened.add((s, d))
    return cut, opened, unknown


@dataclass
class ImpactCheck:
    """A policy set's predicted impact (:func:`impact`, before it was applied) against what the
    verification observed (baseline -> the set's matrices). ``compared`` False: no observed
    starting point (policies kept by an earlier set changed it), nothing to compare."""

    name: str
    predicted: Impact
    rows: list[dict[str, Any]] = field(default_factory=list)
    compared: bool = True
    note: str = ""

    @property
    def agrees(self) -> bool:
        return self.compared and all(r["agree"] for r in self.rows)

    @property
    def status(self) -> str:
        return "skipped" if not self.compared else "passed" if self.agrees else "failed"

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["port", "predicted cut", "observed cut", "predicted opened",
                                                "observed opened", "unknown", "agree"])

    def check(self) -> dict[str, Any]:
        if not self.compared:
            return {"name": f"impact {self.name}", "status": "skipped", "message": self.note}
        cut = sum(r["predicted cut"] for r in self.rows)
        opened = sum(r["predicted opened"] for r in self.rows)
        if self.agrees:
            message = f"predicted {cut} cut, {opened} opened before the apply; the verification observed the same"
        else:
            bad = [r["port"] for r in self.rows if not r["agree"]]
            message = (f"predicted {cut} cut, {opened} opened; observed "
                       f"{sum(r['observed cut'] for r in self.rows)} cut, "
                       f"{sum(r['observed opened'] for r in self.rows)} opened; they differ on {', '.join(bad)}")
        return {"name": f"impact {self.name}", "status": self.status, "message": message}


def compare_with_observation(name: str, predicted: Impact, before: Mapping[str, pd.DataFrame],
                             after: Mapping[str, pd.DataFrame]) -> ImpactCheck:
    """Compare ``predicted`` with the observed change from ``before`` to ``after`` (truth tables
    keyed ``"TCP/80"``), port by port: the same cells cut and opened, and nothing unknown."""
    out = ImpactCheck(name, predicted)
    for port, protocol in predicted.ports:
        label = f"{protocol}/{port}"
        if label not in before or label not in after:
            out.rows.append({"port": label, "predicted cut": len(predicted.cells("cut", port, protocol)),
                             "observed cut": 0, "predicted opened": len(predicted.cells("opened", port, protocol)),
                             "observed opened": 0, "unknown": 0, "agree": False})
            continue
        cut, opened, unknown = observed_change(before[label], after[label])
        want_cut, want_opened = predicted.cells("cut", port, protocol), predicted.cells("opened", port, protocol)
        out.rows.append({"port": label, "predicted cut": len(want_cut), "observed cut": len(cut),
                         "predicted opened": len(want_opened), "observed opened": len(opened), "unknown": unknown,
                         "agree": cut == want_cut and opened == want_opened and unknown == 0})
    return out


# --------------------------------------------------------------------------- live cluster


def live_cluster(kube: Any, namespaces: Sequence[str] | None = None) -> Cluster:
    """Namespaces and running, non-hostNetwork pods with an IP, read through the API."""
    core = kube.core
    ns_objs = [kube.api.sanitize_for_serialization(n) for n in core.list_namespace().items]
    if namespaces:
        missing = sorted(set(namespaces) - {n["metadata"]["name"] for n in ns_objs})
        if missing:
            raise ValueError(f"namespaces not found in the cluster: {', '.join(missing)}")
        ns_objs = [n for n in ns_objs if n["metadata"]["name"] in namespaces]
    names = {n["metadata"]["name"] for n in ns_objs}
    pods = []
    for pod in core.list_pod_for_all_namespaces().items:
        obj = kube.api.sanitize_for_serialization(pod)
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if obj["metadata"].get("namespace") not in names or spec.get("hostNetwork"):
            continue
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        pods.append(obj)
    return Cluster.from_objects(ns_objs, pods)


def live_policies(kube: Any) -> list[dict[str, Any]]:
    """Every NetworkPolicy, and Antrea ACNP / ANNP / Tier where Antrea's CRDs exist."""
    from kubernetes import client

    out = []
    items = kube.api.sanitize_for_serialization(
        client.NetworkingV1Api(kube.api).list_network_policy_for_all_namespaces()
    ).get("items") or []
    for item in items:
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **item})
    from ..kube.client import KubeError

    for kind in ("Tier", "ClusterNetworkPolicy", "NetworkPolicy"):
        try:
            resource = kube.resource("crd.antrea.io/v1beta1", kind)
        except KubeError:  # no Antrea CRDs on this cluster
            continue
        for item in resource.get().to_dict().get("items") or []:
            out.append({"apiVersion": "crd.antrea.io/v1beta1", "kind": kind, **item})
    return out


def live_impact(
    kube: Any,
    proposed: Iterable[Mapping[str, Any]] = (),
    removed: Iterable[Mapping[str, Any] | str] = (),
    namespaces: Sequence[str] | None = None,
    ports: Sequence[tuple[int, str]] | None = None,
) -> Impact:
    """:func:`impact` over the live cluster's real pods and policies (read only)."""
    return impact(live_cluster(kube, namespaces), live_policies(kube), proposed, removed, ports)
