"""Equivalence of a source policy set and its conversion over one cluster model.

Both sets are evaluated on every pod pair for a set of *representative* ports: for every
protocol a rule mentions (TCP when none), the start of every port range and the port just
past its end, the numbers named ports resolve to on the cluster's pods (and the next one),
plus one port no policy mentions. Rules only tell ports apart by range membership, and every
class of ports with the same membership contains one of those numbers, so equal matrices on
them mean equal reachability on every port of that protocol: equivalence *proven for that
model* (pods, namespaces, labels, IPs, named ports; the client's ephemeral source port range).
ICMP is compared too, always: probes carry type and code (``type * 256 + code``,
:func:`.model.icmp_port`), and the representatives are, per type a rule mentions, each
mentioned code and one other, one type no rule mentions, and the echo request (8/0).
ICMPv6 is not (the model is IPv4; the conversion reports ICMPv6 rules as lost).

Otherwise every differing cell is listed with the rule that decides it on each side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .antrea import EPHEMERAL_PORTS, AntreaPolicy, TiersLike
from .calico import CalicoEvaluator, CalicoPolicy, NotModelled, split_objects
from .convert import Conversion, convert, policy_key
from .engine import PolicyEngine
from .model import ICMP, Cluster, NetworkPolicy, icmp_port

PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
COLUMNS = ["port", "protocol", "from", "to", "source", "converted", "source rule", "converted rule"]


@dataclass
class Equivalence:
    ports: list[tuple[int, str]]
    cells: int
    differences: pd.DataFrame = field(repr=False)
    #: source policies the Calico model cannot evaluate (key: why); their presence means not proven
    unevaluated: list[str] = field(default_factory=list)

    @property
    def proven(self) -> bool:
        return self.differences.empty and not self.unevaluated

    @property
    def summary(self) -> str:
        ports = ", ".join(f"{proto}/{port}" for port, proto in self.ports)
        left_out = (f"; not proven: {len(self.unevaluated)} source polic{'y' if len(self.unevaluated) == 1 else 'ies'} "
                    f"outside the model left out ({'; '.join(self.unevaluated)})") if self.unevaluated else ""
        if self.differences.empty:
            verdict = "proven for this cluster model" if not self.unevaluated else "equal without them"
            return f"equivalent on {self.cells} cells ({ports}): {verdict}{left_out}"
        return f"{len(self.differences)} of {self.cells} cells differ ({ports}){left_out}"


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
    return out + [(p, ICMP) for p in icmp_representatives(calico, (*k8s, *antrea))]


def icmp_representatives(calico: Sequence[CalicoPolicy] = (), others: Sequence[Any] = ()) -> list[int]:
    """ICMP probe "ports" (type * 256 + code) standing for every ICMP message: ICMP is matched
    by type and by type + code only, so per mentioned type each mentioned code and one other
    code, one type no rule mentions, and the echo request a ping sends (8/0) always."""
    codes: dict[int, set[int]] = {}
    for policy in calico:
        for rule in policy.ingress + policy.egress:
            for fields in (rule.icmp, rule.not_icmp):
                if fields is not None and fields[0] is not None:
                    codes.setdefault(int(fields[0]), set()).update({int(fields[1])} if fields[1] is not None else set())
    for policy in others:
        for rule in policy.ingress + policy.egress:
            for spec in rule.ports:
                if spec.protocol == ICMP and spec.port is not None:
                    kind = int(spec.port) // 256
                    codes.setdefault(kind, set()).update({int(spec.port) % 256} if spec.end_port is None else set())
    codes.setdefault(8, set()).add(0)
    out = set()
    for kind, mentioned in codes.items():
        out |= {icmp_port(kind, c) for c in mentioned}
        out.add(icmp_port(kind, next(c for c in range(256) if c not in mentioned)))
    out.add(icmp_port(next(k for k in range(256) if k not in codes), 0))
    return sorted(out)


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
    evaluable, unevaluated = [], []
    for obj in calico_objs:
        try:
            evaluable.append(CalicoPolicy.from_dict(obj))
        except NotModelled as exc:  # outside the model: reported, never silently equal
            unevaluated.append(f"{policy_key(obj)}: {exc}")
    calico = CalicoEvaluator(cluster, evaluable, k8s_objs, tier_objs, ephemeral_ports)
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
    return Equivalence(list(ports), cells, pd.DataFrame(rows, columns=COLUMNS), unevaluated)
