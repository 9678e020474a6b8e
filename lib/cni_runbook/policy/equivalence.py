"""Equivalence of a source policy set and its conversion over one cluster model.

Both sets are evaluated on every pod pair for a set of *representative* ports: for every
protocol a rule mentions (TCP when none), the start of every port range and the port just
past its end, the numbers named ports resolve to on the cluster's pods (and the next one),
plus one port no policy mentions. Rules only tell ports apart by range membership, and every
class of ports with the same membership contains one of those numbers, so equal matrices on
them mean equal reachability on every port of that protocol: equivalence *proven for that
model* (pods, namespaces, labels, IPs, named ports; the client's ephemeral source port range).
ICMP is not compared (the Kubernetes / Antrea engine has no ICMP model; the conversion
reports ICMP rules as lost).

Otherwise every differing cell is listed with the rule that decides it on each side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .antrea import EPHEMERAL_PORTS, AntreaPolicy, TiersLike
from .calico import CalicoEvaluator, CalicoPolicy, split_objects
from .convert import Conversion, convert
from .engine import PolicyEngine
from .model import Cluster, NetworkPolicy

PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
COLUMNS = ["port", "protocol", "from", "to", "source", "converted", "source rule", "converted rule"]


@dataclass
class Equivalence:
    ports: list[tuple[int, str]]
    cells: int
    differences: pd.DataFrame = field(repr=False)

    @property
    def proven(self) -> bool:
        return self.differences.empty

    @property
    def summary(self) -> str:
        ports = ", ".join(f"{proto}/{port}" for port, proto in self.ports)
        if self.proven:
            return f"equivalent on {self.cells} cells ({ports}): proven for this cluster model"
        return f"{len(self.differences)} of {self.cells} cells differ ({ports})"


def representative_ports(
    cluster: Cluster,
    calico: Sequence[CalicoPolicy] = (),
    k8s: Sequence[NetworkPolicy] = (),
    antrea: Sequence[AntreaPolicy] = (),
) -> list[tuple[int, str]]:
    """(port, protocol) pairs that together stand for every port (see the module docstring)."""
    points: dict[str, set[int]] = {}

    def named(name: str, protocol: str) -> None:
        for pod in cluster.pods:
            number = pod.named_port(name, protocol)
            if number is not None:
                points.setdefault(protocol, set()).update({number, number + 1})

    def span(protocol: str, low: int, high: int) -> None:
        points.setdefault(protocol, set()).update({max(low, 1), high + 1})

    for policy in calico:
        for rule in policy.ingress + policy.egress:
            if rule.protocol in PORT_PROTOCOLS:
                points.setdefault(rule.protocol, set())
                for p in rule.destination.ports + rule.destination.not_ports:
                    if p.name:
                        named(p.name, rule.protocol)
                    else:
                        span(rule.protocol, p.low, p.high)
    for policy in (*k8s, *antrea):  # both models give rules with ports (port, protocol, end_port)
        for rule in policy.ingress + policy.egress:
            for spec in rule.ports:
                if isinstance(spec.port, str):
                    named(spec.port, spec.protocol)
                elif spec.port is None:
                    points.setdefault(spec.protocol, set())
                else:
                    span(spec.protocol, spec.port, spec.end_port or spec.port)
    if not points:
        points["TCP"] = set()
    out: list[tuple[int, str]] = []
    for protocol in PORT_PROTOCOLS:
        if protocol not in points:
            continue
        mentioned = {p for p in points[protocol] if 1 <= p <= 65535}
        unmentioned = next(p for p in [8080, *range(1, 65536)] if p not in mentioned)
        out.extend((p, protocol) for p in sorted(mentioned | {unmentioned}))
    return out


def check(
    cluster: Cluster,
    source: Iterable[Mapping[str, Any]],
    conversion: Conversion | None = None,
    ports: Sequence[tuple[int, str]] | None = None,
    antrea_tiers: TiersLike = None,
    ephemeral_ports: tuple[int, int] = EPHEMERAL_PORTS,
) -> Equivalence:
    """Compare the source objects (Calico policies and Tiers, Kubernetes NetworkPolicies)
    with their conversion (computed when not given) over ``cluster``."""
    source = list(source)
    conversion = conversion or convert(source)
    calico_objs, k8s_objs, tier_objs = split_objects(source)
    calico = CalicoEvaluator(cluster, calico_objs, k8s_objs, tier_objs, ephemeral_ports)
    tiers = antrea_tiers if antrea_tiers is not None else conversion.tiers
    engine = PolicyEngine(cluster, conversion.k8s, conversion.antrea, tiers, ephemeral_ports)
    if ports is None:
        ports = representative_ports(cluster, calico.policies, calico.k8s + engine.policies, engine.antrea_policies)
    rows: list[dict[str, Any]] = []
    cells = 0
    for port, protocol in ports:
        want = calico.matrix(port, protocol)
        got = engine.matrix(port, protocol)
        cells += want.size
        for s in cluster.pod_keys:
            for d in cluster.pod_keys:
                a, b = bool(want.at[s, d]), bool(got.at[s, d])
                if a == b:
                    continue
                rows.append({
                    "port": port,
                    "protocol": protocol,
                    "from": s,
                    "to": d,
                    "source": "allowed" if a else "blocked",
                    "converted": "allowed" if b else "blocked",
                    "source rule": "\n".join(calico.decide(s, d, port, protocol)[1]),
                    "converted rule": "\n".join(engine.explain(s, d, port, protocol)[1:]),
                })
    return Equivalence(list(ports), cells, pd.DataFrame(rows, columns=COLUMNS))
