"""Expected reachability under Kubernetes NetworkPolicies (and, optionally, Antrea-native ones).

Kubernetes rules implemented here (networking.k8s.io/v1 documentation):

* A pod is *isolated* for ingress (egress) iff some NetworkPolicy in its namespace selects it
  and lists ``Ingress`` (``Egress``) in its policyTypes. A non-isolated direction allows all.
* An isolated direction allows exactly the union of what the rules of the selecting policies
  allow (policies are additive, order does not matter). A policy with an empty rule list for
  a direction it isolates therefore denies everything in that direction.
* Pod-to-pod traffic needs the source's egress *and* the destination's ingress to allow it.
* Named ports are resolved against the destination pod: for ingress the selected pod, for
  egress the peer pod. They never match a non-pod IP.
* ipBlocks match pod IPs as listed in the pod status (no NAT on pod-to-pod traffic) and
  non-pod IPs.

Loopback (a pod talking to itself) is evaluated like any other pair; CNIs differ on it in
practice, which is why :func:`cni_runbook.policy.matrix.compare` ignores it by default.
Outside the model: Services and NAT, node / hostNetwork traffic (always allowed to and from
the pod's own node per the docs), and established-connection reply traffic.

Two evaluators share these semantics:

* :class:`PolicyEngine` precomputes, per policy and per rule, the pod sets as bitmasks
  (see :mod:`.masks`), so a whole matrix costs a few integer operations per pair.
* :func:`naive_verdict` walks the policies for a single probe with no precomputation and
  records why it decided as it did; :meth:`PolicyEngine.explain` uses it, the property tests
  check that both agree, and ``benchmarks/policy_engine.py`` uses it as the baseline.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .antrea import EPHEMERAL_PORTS, AntreaEvaluator, AntreaPolicy, TiersLike, as_antrea_policy, ordered
from .masks import PodIndex, signatures, to_array
from .model import (
    Cluster,
    IPAddress,
    NetworkPolicy,
    Pod,
    Rule,
    as_network_policy,
    normalize_probe_protocol,
)

PolicyLike = NetworkPolicy | Mapping[str, Any]
AntreaLike = AntreaPolicy | Mapping[str, Any]


@dataclass(frozen=True)
class Probe:
    """One connection attempt: source and destination are ``"ns/pod"`` keys or IP addresses."""

    src: str
    dst: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Verdict:
    """Expected outcome of a probe. A list of verdicts feeds ``pandas.DataFrame`` directly.

    ``rejected`` is True when an Antrea ``Reject`` rule blocked the traffic (the client gets
    a reset instead of a timeout); it is still blocked.
    """

    src: str
    dst: str
    port: int
    protocol: str
    allowed: bool
    egress_allowed: bool
    ingress_allowed: bool
    rejected: bool = False


@dataclass(frozen=True)
class _Endpoint:
    label: str
    index: int | None  # position in cluster.pods, None for a non-pod IP
    ip: IPAddress | None

    @property
    def remote(self) -> int | IPAddress:
        """The pod index, or the address of a non-pod endpoint."""
        if self.index is not None:
            return self.index
        if self.ip is None:
            raise ValueError(f"endpoint {self.label} has neither a pod nor an address")
        return self.ip

    def resolve(self, cluster: Cluster) -> Pod | IPAddress:
        """The pod itself, or the address of a non-pod endpoint."""
        remote = self.remote
        return cluster.pods[remote] if isinstance(remote, int) else remote


def _resolve(cluster: Cluster, name: str) -> _Endpoint:
    """``ns/pod`` -> that pod; an IP -> the pod owning it, else a non-pod endpoint."""
    if "/" in name:
        return _Endpoint(name, cluster.index[cluster.pod(name).key], None)
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        raise ValueError(f"{name!r} is neither a 'namespace/pod' key nor an IP address") from None
    pod = cluster.pod_by_ip(ip)
    if pod is not None:
        return _Endpoint(pod.key, cluster.index[pod.key], ip)
    return _Endpoint(name, None, ip)


@dataclass(frozen=True)
class _CompiledRule:
    """A Kubernetes policy rule with its peer set precomputed."""

    policy: NetworkPolicy
    rule: Rule
    peer_mask: int  # pods the peers select (all pods when the rule has no peers)

    def matches_ip(self, ip: IPAddress) -> bool:
        return not self.rule.peers or any(p.matches_ip(ip) for p in self.rule.peers)


def _compile_rule(policy: NetworkPolicy, rule: Rule, index: PodIndex) -> _CompiledRule:
    if not rule.peers:
        mask = index.all
    else:
        mask = 0
        for peer in rule.peers:
            if peer.ip_block is not None:
                mask |= index.pods_in_block(peer.ip_block)
            else:
                mask |= index.peer_mask(peer.pod_selector, peer.namespace_selector, policy.namespace)
    return _CompiledRule(policy, rule, mask)


class PolicyEngine:
    """Compiled policies over one cluster; answers probes, matrices and explanations."""

    def __init__(
        self,
        cluster: Cluster,
        policies: Iterable[PolicyLike] = (),
        antrea_policies: Iterable[AntreaLike] = (),
        tiers: TiersLike = None,
        ephemeral_ports: tuple[int, int] = EPHEMERAL_PORTS,
    ) -> None:
        """``tiers``: custom Antrea tiers (Tier objects or name -> priority);
        ``ephemeral_ports``: the clients' source port range (the nodes'
        ``net.ipv4.ip_local_port_range``) against which Antrea ``sourcePort`` ranges are decided."""
        self.cluster = cluster
        self.policies = [as_network_policy(p) for p in policies]
        self.ephemeral_ports = ephemeral_ports
        self.antrea_policies = ordered(
            [as_antrea_policy(p, tiers).for_ephemeral_ports(ephemeral_ports) for p in antrea_policies]
        )
        self.index = PodIndex(cluster)
        n = len(cluster.pods)
        self.ingress_isolated = 0
        self.egress_isolated = 0
        # Per pod and direction, the policies (by position) selecting it: pods with the same
        # signature share one rule list and one answer per port.
        members: dict[str, list[int]] = {"ingress": [], "egress": []}  # policy positions
        selections: dict[str, list[int]] = {"ingress": [], "egress": []}
        compiled: dict[tuple[str, int], list[_CompiledRule]] = {}
        for number, policy in enumerate(self.policies):
            selected = self.index.peer_mask(policy.pod_selector, None, policy.namespace)
            if not selected:
                continue
            for direction, flag, rules in (
                ("ingress", policy.affects_ingress(), policy.ingress),
                ("egress", policy.affects_egress(), policy.egress),
            ):
                if not flag:
                    continue
                compiled[(direction, number)] = [_compile_rule(policy, r, self.index) for r in rules]
                members[direction].append(number)
                selections[direction].append(selected)
            if policy.affects_ingress():
                self.ingress_isolated |= selected
            if policy.affects_egress():
                self.egress_isolated |= selected
        rule_lists: dict[str, list[list[_CompiledRule]]] = {}
        sig_ids: dict[str, list[int]] = {}
        for direction in ("ingress", "egress"):
            ids, sigs = signatures(selections[direction], n)
            lists = [[r for k in sig for r in compiled[(direction, members[direction][k])]] for sig in sigs]
            sig_ids[direction] = ids
            rule_lists[direction] = [lists[k] for k in ids]
        self._ingress_rules: list[list[_CompiledRule]] = rule_lists["ingress"]
        self._egress_rules: list[list[_CompiledRule]] = rule_lists["egress"]
        # group numbers: pods of one group get the same K8s answer (named ports resolve on the
        # destination pod, so its container ports are part of the ingress group)
        groups: dict[tuple[int, int], int] = {}
        self._ingress_group = [groups.setdefault(key, len(groups))
                               for key in zip(sig_ids["ingress"], self.index.ports_id, strict=True)]
        self._egress_group = sig_ids["egress"]
        self.antrea = AntreaEvaluator(cluster, self.antrea_policies, self.index)
        self._mask_cache: dict[tuple[int, str], tuple[list[int], list[int]]] = {}

    # ------------------------------------------------------------------ Kubernetes part

    def _k8s_masks(self, port: int, protocol: str) -> tuple[list[int], list[int]]:
        """Per destination pod, the sources its ingress allows; per source pod, the
        destinations its egress allows (Kubernetes policies only)."""
        key = (port, protocol)
        cached = self._mask_cache.get(key)
        if cached is not None:
            return cached
        every = self.index.all
        pods = self.cluster.pods
        ingress_from: list[int] = []
        seen: dict[int, int] = {}
        for d, rules in enumerate(self._ingress_rules):
            if not rules and not (self.ingress_isolated >> d) & 1:
                ingress_from.append(every)
                continue
            group = self._ingress_group[d]
            allowed = seen.get(group)
            if allowed is None:
                allowed = 0
                for rule in rules:
                    if rule.rule.port_matches(port, protocol, pods[d]):
                        allowed |= rule.peer_mask
                seen[group] = allowed
            ingress_from.append(allowed)
        egress_to: list[int] = []
        seen = {}
        for s, rules in enumerate(self._egress_rules):
            if not rules and not (self.egress_isolated >> s) & 1:
                egress_to.append(every)
                continue
            group = self._egress_group[s]
            allowed = seen.get(group)
            if allowed is None:
                allowed = 0
                for rule in rules:
                    allowed |= rule.peer_mask & self.index.port_destinations(rule.rule.ports, port, protocol)
                seen[group] = allowed
            egress_to.append(allowed)
        self._mask_cache[key] = (ingress_from, egress_to)
        return ingress_from, egress_to

    def _k8s_allows(
        self, direction: str, target: int, remote: int | IPAddress, port: int, protocol: str
    ) -> tuple[bool, bool]:
        """(isolated, allowed) for the Kubernetes policies of pod ``target``."""
        isolated = self.ingress_isolated if direction == "ingress" else self.egress_isolated
        if not (isolated >> target) & 1:
            return False, True
        if isinstance(remote, int):
            ingress_from, egress_to = self._k8s_masks(port, protocol)
            mask = ingress_from[target] if direction == "ingress" else egress_to[target]
            return True, bool((mask >> remote) & 1)
        rules = self._ingress_rules[target] if direction == "ingress" else self._egress_rules[target]
        destination = self.cluster.pods[target] if direction == "ingress" else None
        for rule in rules:
            if rule.rule.port_matches(port, protocol, destination) and rule.matches_ip(remote):
                return True, True
        return True, False

    # ------------------------------------------------------------------ combined

    def _direction(
        self, direction: str, target: int, remote: int | IPAddress, port: int, protocol: str
    ) -> tuple[bool, bool]:
        """(allowed, rejected) for one direction at pod ``target``."""
        if self.antrea:
            match = self.antrea.first_match(direction, target, remote, port, protocol, baseline=False)
            if match is not None and match.action != "Pass":
                return match.action == "Allow", match.action == "Reject"
        isolated, allowed = self._k8s_allows(direction, target, remote, port, protocol)
        if isolated:
            return allowed, False
        if self.antrea:
            match = self.antrea.first_match(direction, target, remote, port, protocol, baseline=True)
            if match is not None:
                return match.action == "Allow", match.action == "Reject"
        return True, False

    def verdict(self, src: str, dst: str, port: int, protocol: str = "TCP") -> Verdict:
        """Expected outcome of one probe."""
        protocol = normalize_probe_protocol(protocol)
        s, d = _resolve(self.cluster, src), _resolve(self.cluster, dst)
        if s.index is None and d.index is None:
            raise ValueError(f"probe {src} -> {dst}: at least one end must be a pod of the cluster")
        egress, eg_rej = (
            (True, False) if s.index is None else self._direction("egress", s.index, d.remote, port, protocol)
        )
        ingress, in_rej = (
            (True, False) if d.index is None else self._direction("ingress", d.index, s.remote, port, protocol)
        )
        allowed = egress and ingress
        return Verdict(
            s.label, d.label, port, protocol, allowed, egress, ingress, rejected=not allowed and (eg_rej or in_rej)
        )

    def evaluate(self, probes: Iterable[Probe | tuple[str, str, int] | tuple[str, str, int, str]]) -> list[Verdict]:
        """Expected outcome of each probe, in order."""
        out = []
        for probe in probes:
            p = probe if isinstance(probe, Probe) else Probe(*probe)
            out.append(self.verdict(p.src, p.dst, p.port, p.protocol))
        return out

    def matrix_array(self, port: int, protocol: str = "TCP") -> np.ndarray:
        """The truth table as an (n, n) numpy boolean array (rows sources, columns
        destinations, in ``cluster.pods`` order)."""
        protocol = normalize_probe_protocol(protocol)
        n = len(self.cluster.pods)
        ingress_ok, egress_ok = self._k8s_masks(port, protocol)
        if self.antrea:
            ingress_ok = [
                self.antrea.allowed_mask("ingress", d, port, protocol, bool((self.ingress_isolated >> d) & 1), m)
                for d, m in enumerate(ingress_ok)
            ]
            egress_ok = [
                self.antrea.allowed_mask("egress", s, port, protocol, bool((self.egress_isolated >> s) & 1), m)
                for s, m in enumerate(egress_ok)
            ]
        if not n:
            return np.zeros((0, 0), dtype=bool)
        e_table, e_order = _unique_rows(egress_ok, n)
        i_table, i_order = _unique_rows(ingress_ok, n)
        # result[s, d] = egress_ok[s] has d  and  ingress_ok[d] has s. Gathering columns of the
        # small transposed ingress table, a block of rows at a time, keeps the operands
        # contiguous and the temporaries in cache.
        out = e_table[e_order]
        by_source = np.ascontiguousarray(i_table.T)
        for start in range(0, n, 256):
            out[start:start + 256] &= np.take(by_source[start:start + 256], i_order, axis=1)
        return out

    def matrix(self, port: int, protocol: str = "TCP") -> pd.DataFrame:
        """Boolean truth table over all pod pairs: rows are sources, columns destinations."""
        keys = self.cluster.pod_keys
        return pd.DataFrame(
            self.matrix_array(port, protocol), index=pd.Index(keys, name="from"), columns=pd.Index(keys, name="to"),
            dtype="boolean",
        )

    def explain(self, src: str, dst: str, port: int, protocol: str = "TCP") -> list[str]:
        """Human-readable reasons for the verdict of one probe (which policy/rule decided)."""
        return naive_verdict(
            self.cluster, self.policies, Probe(src, dst, port, protocol), self.antrea_policies,
            ephemeral_ports=self.ephemeral_ports,
        )[1]


def _unique_rows(masks: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct masks unpacked as rows of a boolean table, and each mask's row."""
    unique: dict[int, int] = {}
    order = np.fromiter((unique.setdefault(m, len(unique)) for m in masks), dtype=np.intp, count=len(masks))
    table = np.zeros((len(unique), n), dtype=bool)
    for mask, row in unique.items():
        table[row] = to_array(mask, n)
    return table, order


# ---------------------------------------------------------------------- naive evaluator


def _describe_rule(policy: NetworkPolicy, rule: Rule, number: int, direction: str) -> str:
    word = "from" if direction == "ingress" else "to"
    peers = "; ".join(p.describe(policy.namespace) for p in rule.peers) if rule.peers else "any peer"
    ports = ", ".join(p.describe() if not p.is_named else f"{p.protocol}/{p.port}" for p in rule.ports) or "any port"
    return f"{policy.key} {direction} rule {number} ({word} {peers}; ports {ports})"


def _k8s_direction_naive(
    cluster: Cluster,
    policies: Sequence[NetworkPolicy],
    direction: str,
    target: Pod,
    remote: Pod | IPAddress,
    remote_label: str,
    port: int,
    protocol: str,
) -> tuple[bool, bool, list[str]]:
    """(isolated, allowed, reasons) for the Kubernetes policies of ``target``."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    selecting = [p for p in policies if p.selects(target) and kind in p.policy_types]
    where = f"{direction} {'to' if direction == 'ingress' else 'from'} {target.key}"
    if not selecting:
        return False, True, [f"{where}: allowed, not isolated (no NetworkPolicy with policyType {kind} selects it)"]
    destination = target if direction == "ingress" else (remote if isinstance(remote, Pod) else None)
    allowing: list[str] = []
    near: list[str] = []
    for policy in selecting:
        rules = policy.ingress if direction == "ingress" else policy.egress
        for number, rule in enumerate(rules, start=1):
            if isinstance(remote, Pod):
                peer_ok = not rule.peers or any(p.matches_pod(remote, policy.namespace, cluster) for p in rule.peers)
            else:
                peer_ok = not rule.peers or any(p.matches_ip(remote) for p in rule.peers)
            if peer_ok and rule.port_matches(port, protocol, destination):
                allowing.append(_describe_rule(policy, rule, number, direction))
            elif peer_ok:
                near.append(
                    f"{_describe_rule(policy, rule, number, direction)} selects {remote_label} but not {protocol}/{port}"
                )
    names = ", ".join(p.key for p in selecting)
    if allowing:
        return True, True, [f"{where}: allowed by {' and by '.join(allowing)}"]
    empty = [p.key for p in selecting if not (p.ingress if direction == "ingress" else p.egress)]
    reasons = [
        f"{where}: denied, isolated by {names} (policyType {kind}) and no {direction} rule allows "
        f"{remote_label} on {protocol}/{port}"
    ]
    if empty:
        reasons.append(
            f"{where}: {', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no {direction} rules (deny all)"
        )
    reasons.extend(f"{where}: {n}" for n in near)
    return True, False, reasons


def _antrea_first_naive(
    cluster: Cluster,
    antrea: Sequence[AntreaPolicy],
    direction: str,
    target: Pod,
    remote: Pod | IPAddress,
    port: int,
    protocol: str,
    baseline: bool,
) -> tuple[AntreaPolicy, Any] | None:
    destination = target if direction == "ingress" else (remote if isinstance(remote, Pod) else None)
    # Rule-level priority, as Antrea documents it: (tier, policy priority, rule index); the
    # rules of policies sharing tier and priority interleave by index.
    candidates = [
        (policy.tier_priority, policy.priority, rule.index, policy.kind, policy.namespace or "", policy.name, n, policy, rule)
        for n, policy in enumerate(antrea)
        if policy.is_baseline == baseline
        for rule in (policy.ingress if direction == "ingress" else policy.egress)
    ]
    for *_, policy, rule in sorted(candidates, key=lambda c: c[:7]):
        if not policy.applies_to(rule, target, cluster):
            continue
        if not rule.port_matches(port, protocol, destination):
            continue
        if not rule.peers or any(p.matches(remote, policy, target, cluster) for p in rule.peers):
            return policy, rule
    return None


def _direction_naive(
    cluster: Cluster,
    policies: Sequence[NetworkPolicy],
    antrea: Sequence[AntreaPolicy],
    direction: str,
    target: Pod,
    remote: Pod | IPAddress,
    remote_label: str,
    port: int,
    protocol: str,
) -> tuple[bool, bool, list[str]]:
    """(allowed, rejected, reasons) for one direction at ``target``."""
    where = f"{direction} {'to' if direction == 'ingress' else 'from'} {target.key}"
    reasons: list[str] = []
    hit = _antrea_first_naive(cluster, antrea, direction, target, remote, port, protocol, baseline=False)
    if hit is not None:
        policy, rule = hit
        if rule.action != "Pass":
            verb = "allowed" if rule.action == "Allow" else ("rejected" if rule.action == "Reject" else "dropped")
            return (
                rule.action == "Allow",
                rule.action == "Reject",
                [f"{where}: {verb} by Antrea {policy.rule_label(rule)}"],
            )
        reasons.append(f"{where}: Antrea {policy.rule_label(rule)} passes the decision to Kubernetes policies")
    isolated, allowed, k8s_reasons = _k8s_direction_naive(
        cluster, policies, direction, target, remote, remote_label, port, protocol
    )
    if isolated or not antrea:
        return allowed, False, reasons + k8s_reasons
    hit = _antrea_first_naive(cluster, antrea, direction, target, remote, port, protocol, baseline=True)
    if hit is not None:
        policy, rule = hit
        verb = "allowed" if rule.action == "Allow" else ("rejected" if rule.action == "Reject" else "dropped")
        return (
            rule.action == "Allow",
            rule.action == "Reject",
            reasons
            + [f"{where}: not isolated by Kubernetes policies; {verb} by Antrea baseline {policy.rule_label(rule)}"],
        )
    return True, False, reasons + k8s_reasons


def naive_verdict(
    cluster: Cluster,
    policies: Iterable[PolicyLike],
    probe: Probe,
    antrea_policies: Iterable[AntreaLike] = (),
    tiers: TiersLike = None,
    ephemeral_ports: tuple[int, int] = EPHEMERAL_PORTS,
) -> tuple[Verdict, list[str]]:
    """Evaluate one probe straight from the documentation, without precomputation.

    Returns the verdict and the reasons (first line: the overall answer).
    """
    k8s = [as_network_policy(p) for p in policies]
    antrea = [as_antrea_policy(p, tiers).for_ephemeral_ports(ephemeral_ports) for p in antrea_policies]
    protocol = normalize_probe_protocol(probe.protocol)
    s, d = _resolve(cluster, probe.src), _resolve(cluster, probe.dst)
    if s.index is None and d.index is None:
        raise ValueError(f"probe {probe.src} -> {probe.dst}: at least one end must be a pod of the cluster")
    src, dst = s.resolve(cluster), d.resolve(cluster)
    reasons: list[str] = []
    if not isinstance(src, Pod):
        egress, eg_rej = True, False
        reasons.append(f"egress from {s.label}: not a pod, no policy applies")
    else:
        egress, eg_rej, more = _direction_naive(cluster, k8s, antrea, "egress", src, dst, d.label, probe.port, protocol)
        reasons.extend(more)
    if not isinstance(dst, Pod):
        ingress, in_rej = True, False
        reasons.append(f"ingress to {d.label}: not a pod, no policy applies")
    else:
        ingress, in_rej, more = _direction_naive(
            cluster, k8s, antrea, "ingress", dst, src, s.label, probe.port, protocol
        )
        reasons.extend(more)
    allowed = egress and ingress
    rejected = not allowed and (eg_rej or in_rej)
    verdict = Verdict(s.label, d.label, probe.port, protocol, allowed, egress, ingress, rejected)
    answer = "allowed" if allowed else ("blocked (rejected)" if rejected else "blocked")
    return verdict, [f"{s.label} -> {d.label} {protocol}/{probe.port}: {answer}"] + reasons


# ---------------------------------------------------------------------- module-level API


def reachability(
    cluster: Cluster,
    policies: Iterable[PolicyLike],
    probes: Iterable[Probe | tuple[str, str, int] | tuple[str, str, int, str]],
    antrea_policies: Iterable[AntreaLike] = (),
    tiers: TiersLike = None,
) -> list[Verdict]:
    """Expected outcome of each probe; ``pandas.DataFrame(result)`` gives one row per probe."""
    return PolicyEngine(cluster, policies, antrea_policies, tiers).evaluate(probes)


def explain(
    cluster: Cluster,
    policies: Iterable[PolicyLike],
    src: str,
    dst: str,
    port: int,
    protocol: str = "TCP",
    antrea_policies: Iterable[AntreaLike] = (),
    tiers: TiersLike = None,
) -> list[str]:
    """Which policy and rule allow or deny ``src -> dst`` on ``protocol/port``."""
    return naive_verdict(cluster, policies, Probe(src, dst, port, protocol), antrea_policies, tiers)[1]


def all_pairs(cluster: Cluster, port: int, protocol: str = "TCP") -> list[Probe]:
    """A probe for every ordered pod pair (loopback included)."""
    keys = cluster.pod_keys
    return [Probe(s, d, port, protocol) for s in keys for d in keys]
