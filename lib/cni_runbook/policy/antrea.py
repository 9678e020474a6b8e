"""Antrea-native policies: ClusterNetworkPolicy (ACNP) and Antrea NetworkPolicy (ANNP).

Evaluation order, per direction, as documented in Antrea's ``docs/antrea-network-policy.md``::

    Emergency > SecurityOps > NetworkOps > Platform > Application > K8s NetworkPolicy > Baseline

* Tiers are ordered by tier priority (lower first), policies inside a tier by ``spec.priority``
  (lower first, ACNP and ANNP interleaved), rules inside a policy in the order written. Ties in
  ``spec.priority`` are "enforced indeterministically" by Antrea; the engine breaks them by
  kind, namespace and name so its answer is at least stable.
* The first matching rule decides: ``Allow`` allows (Kubernetes policies are not consulted),
  ``Drop`` and ``Reject`` block (Reject answers with a TCP RST / ICMP error instead of a
  timeout, the engine reports it as blocked and flags it), ``Pass`` skips the remaining
  non-baseline Antrea rules and hands the decision to Kubernetes NetworkPolicies.
* Kubernetes NetworkPolicies come next. If one isolates the pod for that direction, its answer
  is final: the baseline tier cannot override K8s isolation.
* Baseline-tier rules apply only to traffic not decided above; ``Pass`` is invalid there.
* Nothing matched: allowed (Antrea policies do not isolate the pods they apply to).

Peers: an ACNP ``podSelector`` without ``namespaceSelector`` selects pods in every namespace;
in an ANNP it selects pods in the policy's namespace. ``namespaces: {match: Self}`` (ACNP only)
selects pods in the namespace of the pod the rule is applied to. ClusterGroups, Groups,
serviceAccount, nodeSelector, FQDN, toServices and L7 rules are outside this model and are
rejected with a ValueError instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .masks import PodIndex
from .model import Cluster, IPAddress, IPBlock, LabelSelector, Pod, PortSpec, ports_from_list

STATIC_TIERS: dict[str, int] = {
    "emergency": 50,
    "securityops": 100,
    "networkops": 150,
    "platform": 200,
    "application": 250,
    "baseline": 253,
}
BASELINE_TIER_PRIORITY = STATIC_TIERS["baseline"]
ACTIONS = ("Allow", "Drop", "Reject", "Pass")
_UNSUPPORTED_PEER_FIELDS = ("group", "serviceAccount", "nodeSelector", "fqdn", "scope", "labelIdentity")
_UNSUPPORTED_RULE_FIELDS = ("toServices", "l7Protocols", "protocols")


@dataclass(frozen=True)
class AntreaPeer:
    """A ``from`` / ``to`` entry of an Antrea-native rule."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    same_namespace: bool = False
    ip_block: IPBlock | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], cluster_scoped: bool) -> AntreaPeer:
        for key in _UNSUPPORTED_PEER_FIELDS:
            if key in data:
                raise ValueError(f"Antrea peer field {key!r} is not modelled by the expectation engine")
        namespaces = data.get("namespaces")
        same_ns = False
        if namespaces is not None:
            if not cluster_scoped:
                raise ValueError("'namespaces' peers are only valid in a ClusterNetworkPolicy")
            if str(namespaces.get("match", "")).lower() != "self":
                raise ValueError(f"unsupported namespaces match {namespaces!r}; only 'Self' is modelled")
            if data.get("namespaceSelector") is not None:
                raise ValueError("'namespaces' cannot be combined with namespaceSelector")
            same_ns = True
        block = data.get("ipBlock")
        if block is not None:
            if "except" in block:
                raise ValueError("Antrea-native ipBlocks have no 'except'; use a higher-priority Drop rule")
            if data.get("podSelector") is not None or data.get("namespaceSelector") is not None or same_ns:
                raise ValueError("an Antrea peer with ipBlock may not set selectors")
        pod_sel, ns_sel = data.get("podSelector"), data.get("namespaceSelector")
        if block is None and pod_sel is None and ns_sel is None and not same_ns:
            raise ValueError("an Antrea peer must set podSelector, namespaceSelector, namespaces or ipBlock")
        return cls(
            pod_selector=None if pod_sel is None else LabelSelector.from_dict(pod_sel),
            namespace_selector=None if ns_sel is None else LabelSelector.from_dict(ns_sel),
            same_namespace=same_ns,
            ip_block=None if block is None else IPBlock.from_dict(block),
        )

    def matches(self, remote: Pod | IPAddress, policy: AntreaPolicy, target: Pod, cluster: Cluster) -> bool:
        """Direct (uncached) evaluation: does this peer select ``remote`` for a rule applied
        to ``target``? Non-pod addresses are matched by ipBlocks only."""
        if not isinstance(remote, Pod):
            return self.ip_block is not None and self.ip_block.contains(remote)
        if self.ip_block is not None:
            return any(self.ip_block.contains(ip) for ip in remote.ips)
        if self.same_namespace:
            if remote.namespace != target.namespace:
                return False
        elif self.namespace_selector is not None:
            if not self.namespace_selector.matches(cluster.namespaces[remote.namespace].labels):
                return False
        elif policy.namespace is not None and remote.namespace != policy.namespace:
            return False
        return self.pod_selector is None or self.pod_selector.matches(remote.labels)

    def describe(self) -> str:
        if self.ip_block is not None:
            return self.ip_block.describe()
        parts = []
        if self.same_namespace:
            parts.append("same namespace")
        if self.namespace_selector is not None:
            parts.append(f"namespaceSelector {self.namespace_selector.describe()}")
        if self.pod_selector is not None:
            parts.append(f"podSelector {self.pod_selector.describe()}")
        return " and ".join(parts)


@dataclass(frozen=True)
class AppliedTo:
    """An ``appliedTo`` entry (pods only; Antrea forbids ipBlock here)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], cluster_scoped: bool) -> AppliedTo:
        for key in ("group", "serviceAccount", "nodeSelector", "service", "ipBlock"):
            if key in data:
                raise ValueError(f"appliedTo field {key!r} is not modelled by the expectation engine")
        pod_sel, ns_sel = data.get("podSelector"), data.get("namespaceSelector")
        if ns_sel is not None and not cluster_scoped:
            raise ValueError("an Antrea NetworkPolicy may not use namespaceSelector in appliedTo")
        if pod_sel is None and ns_sel is None:
            raise ValueError("appliedTo needs podSelector or namespaceSelector")
        return cls(
            pod_selector=None if pod_sel is None else LabelSelector.from_dict(pod_sel),
            namespace_selector=None if ns_sel is None else LabelSelector.from_dict(ns_sel),
        )

    def matches(self, pod: Pod, policy: AntreaPolicy, cluster: Cluster) -> bool:
        """Direct (uncached) evaluation of this appliedTo entry for ``pod``."""
        if self.namespace_selector is not None:
            if not self.namespace_selector.matches(cluster.namespaces[pod.namespace].labels):
                return False
        elif policy.namespace is not None and pod.namespace != policy.namespace:
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod.labels)


@dataclass(frozen=True)
class AntreaRule:
    action: str
    name: str
    peers: tuple[AntreaPeer, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    applied_to: tuple[AppliedTo, ...] = ()

    def port_matches(self, port: int, protocol: str, destination: Pod | None) -> bool:
        return not self.ports or any(p.matches(port, protocol, destination) for p in self.ports)


@dataclass(frozen=True)
class AntreaPolicy:
    """An ACNP (``namespace`` None) or ANNP, with its tier resolved to a tier priority."""

    kind: str
    name: str
    namespace: str | None
    tier: str
    tier_priority: int
    priority: float
    applied_to: tuple[AppliedTo, ...]
    ingress: tuple[AntreaRule, ...] = ()
    egress: tuple[AntreaRule, ...] = ()

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], tiers: Mapping[str, int] | None = None) -> AntreaPolicy:
        """Parse an ACNP / ANNP object dict. ``tiers`` adds custom Tier CRDs (name -> priority)."""
        kind = str(obj.get("kind") or "ClusterNetworkPolicy")
        if kind not in ("ClusterNetworkPolicy", "NetworkPolicy"):
            raise ValueError(f"not an Antrea-native policy kind: {kind!r}")
        cluster_scoped = kind == "ClusterNetworkPolicy"
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        name = str(meta["name"])
        all_tiers = {**STATIC_TIERS, **{k.lower(): v for k, v in (tiers or {}).items()}}
        tier = str(spec.get("tier") or "application").lower()
        if tier not in all_tiers:
            raise ValueError(f"{kind} {name}: unknown tier {tier!r}")
        if spec.get("priority") is None:
            raise ValueError(f"{kind} {name}: spec.priority is mandatory")
        priority = float(spec["priority"])
        policy_applied = tuple(AppliedTo.from_dict(a, cluster_scoped) for a in spec.get("appliedTo") or ())

        def rules(direction: str, peer_key: str) -> tuple[AntreaRule, ...]:
            parsed = []
            for number, raw in enumerate(spec.get(direction) or ()):
                for key in _UNSUPPORTED_RULE_FIELDS:
                    if raw.get(key):
                        raise ValueError(f"{kind} {name}: rule field {key!r} is not modelled")
                action = str(raw.get("action") or "")
                if action not in ACTIONS:
                    raise ValueError(f"{kind} {name}: rule action {action!r} not in {ACTIONS}")
                if action == "Pass" and all_tiers[tier] == BASELINE_TIER_PRIORITY:
                    raise ValueError(f"{kind} {name}: Pass is not allowed in the baseline tier")
                rule_applied = tuple(AppliedTo.from_dict(a, cluster_scoped) for a in raw.get("appliedTo") or ())
                if rule_applied and policy_applied:
                    raise ValueError(f"{kind} {name}: appliedTo set both on the policy and on a rule")
                parsed.append(
                    AntreaRule(
                        action=action,
                        name=str(raw.get("name") or f"{direction}-{action.lower()}-{number}"),
                        peers=tuple(AntreaPeer.from_dict(p, cluster_scoped) for p in raw.get(peer_key) or ()),
                        ports=ports_from_list(raw.get("ports")),
                        applied_to=rule_applied,
                    )
                )
            return tuple(parsed)

        ingress, egress = rules("ingress", "from"), rules("egress", "to")
        if not policy_applied and any(not r.applied_to for r in ingress + egress):
            raise ValueError(f"{kind} {name}: appliedTo must be set on the policy or on every rule")
        return cls(
            kind=kind,
            name=name,
            namespace=None if cluster_scoped else str(meta.get("namespace") or "default"),
            tier=tier,
            tier_priority=all_tiers[tier],
            priority=priority,
            applied_to=policy_applied,
            ingress=ingress,
            egress=egress,
        )

    @property
    def key(self) -> str:
        short = "acnp" if self.namespace is None else "annp"
        return f"{short} {self.name}" if self.namespace is None else f"{short} {self.namespace}/{self.name}"

    @property
    def is_baseline(self) -> bool:
        return self.tier_priority == BASELINE_TIER_PRIORITY

    @property
    def sort_key(self) -> tuple[int, float, str, str, str]:
        return (self.tier_priority, self.priority, self.kind, self.namespace or "", self.name)

    def applies_to(self, rule: AntreaRule, pod: Pod, cluster: Cluster) -> bool:
        """Is ``rule`` (through its own or the policy's appliedTo) enforced for ``pod``?"""
        return any(a.matches(pod, self, cluster) for a in rule.applied_to or self.applied_to)

    def rule_label(self, rule: AntreaRule) -> str:
        return f"{self.key} (tier {self.tier}, priority {self.priority:g}) rule {rule.name!r} {rule.action}"


def as_antrea_policy(policy: AntreaPolicy | Mapping[str, Any], tiers: Mapping[str, int] | None = None) -> AntreaPolicy:
    return policy if isinstance(policy, AntreaPolicy) else AntreaPolicy.from_dict(policy, tiers)


def ordered(policies: Sequence[AntreaPolicy]) -> list[AntreaPolicy]:
    """Policies in enforcement order (tier priority, then policy priority)."""
    return sorted(policies, key=lambda p: p.sort_key)


# --------------------------------------------------------------------------- matching


def applied_to_mask(entries: Sequence[AppliedTo], policy: AntreaPolicy, index: PodIndex) -> int:
    """Pods an appliedTo list selects (ANNP: within the policy's namespace)."""
    mask = 0
    for entry in entries:
        mask |= index.peer_mask(entry.pod_selector, entry.namespace_selector, policy.namespace)
    return mask


def peer_mask(peer: AntreaPeer, policy: AntreaPolicy, target: Pod, index: PodIndex) -> int:
    """Pods a peer selects, as seen from the pod the rule is applied to."""
    if peer.ip_block is not None:
        return index.pods_in_block(peer.ip_block)
    if peer.same_namespace:
        return index.peer_mask(peer.pod_selector, None, target.namespace)
    return index.peer_mask(peer.pod_selector, peer.namespace_selector, policy.namespace)


@dataclass(frozen=True)
class AntreaMatch:
    """The rule that decided a direction."""

    policy: AntreaPolicy
    rule: AntreaRule

    @property
    def action(self) -> str:
        return self.rule.action

    def describe(self) -> str:
        return self.policy.rule_label(self.rule)


class AntreaEvaluator:
    """Precomputed appliedTo and peer sets for a list of Antrea-native policies."""

    def __init__(self, cluster: Cluster, policies: Sequence[AntreaPolicy], index: PodIndex | None = None) -> None:
        self.cluster = cluster
        self.index = index or PodIndex(cluster)
        self.policies = ordered(policies)
        # (policy, rule, appliedTo mask) per direction, in enforcement order
        self._rules: dict[str, list[tuple[AntreaPolicy, AntreaRule, int]]] = {"ingress": [], "egress": []}
        for policy in self.policies:
            base = applied_to_mask(policy.applied_to, policy, self.index)
            for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
                for rule in rules:
                    mask = applied_to_mask(rule.applied_to, policy, self.index) if rule.applied_to else base
                    self._rules[direction].append((policy, rule, mask))
        self._peer_cache: dict[tuple[int, int, str], int] = {}

    def __bool__(self) -> bool:
        return bool(self.policies)

    def _rule_peer_mask(self, policy: AntreaPolicy, rule: AntreaRule, target: Pod) -> int:
        if not rule.peers:
            return self.index.all
        key = (id(policy), id(rule), target.namespace)
        mask = self._peer_cache.get(key)
        if mask is None:
            mask = 0
            for peer in rule.peers:
                mask |= peer_mask(peer, policy, target, self.index)
            self._peer_cache[key] = mask
        return mask

    def allowed_mask(
        self,
        direction: str,
        target: int,
        port: int,
        protocol: str,
        k8s_isolated: bool,
        k8s_allowed: int,
    ) -> int:
        """All remote pods whose traffic with pod ``target`` this direction allows, given the
        Kubernetes answer for ``target`` (whether it is isolated, and which pods K8s allows).

        Walks the rules once, peeling off the still-undecided pods rule by rule, instead of
        looking for the first matching rule pair by pair.
        """
        target_pod = self.cluster.pods[target]
        undecided = self.index.all
        allowed = 0
        passed = 0

        def walk(baseline: bool) -> None:
            nonlocal undecided, allowed, passed
            for policy, rule, applied in self._rules[direction]:
                if not undecided:
                    return
                if policy.is_baseline != baseline or not (applied >> target) & 1:
                    continue
                ports = self.index.port_destinations(rule.ports, port, protocol)
                if direction == "ingress":
                    hit = self._rule_peer_mask(policy, rule, target_pod) & undecided if (ports >> target) & 1 else 0
                else:
                    hit = self._rule_peer_mask(policy, rule, target_pod) & ports & undecided
                if rule.action == "Allow":
                    allowed |= hit
                elif rule.action == "Pass":
                    passed |= hit
                undecided &= ~hit

        walk(baseline=False)
        remaining = undecided | passed
        if k8s_isolated:
            return allowed | (remaining & k8s_allowed)
        undecided = remaining
        walk(baseline=True)
        return allowed | undecided

    def _remote_matches(self, policy: AntreaPolicy, rule: AntreaRule, target: Pod, remote: int | IPAddress) -> bool:
        if not rule.peers:
            return True
        if isinstance(remote, int):
            return bool((self._rule_peer_mask(policy, rule, target) >> remote) & 1)
        return any(p.ip_block is not None and p.ip_block.contains(remote) for p in rule.peers)

    def first_match(
        self,
        direction: str,
        target: int,
        remote: int | IPAddress,
        port: int,
        protocol: str,
        baseline: bool,
    ) -> AntreaMatch | None:
        """First rule (in enforcement order) applied to pod ``target`` that matches traffic
        with ``remote`` (a pod index or a non-pod IP). ``baseline`` selects the baseline tier
        instead of the tiers enforced before Kubernetes policies."""
        target_pod = self.cluster.pods[target]
        if direction == "ingress":
            destination: Pod | None = target_pod
        else:
            destination = self.cluster.pods[remote] if isinstance(remote, int) else None
        for policy, rule, applied in self._rules[direction]:
            if policy.is_baseline != baseline or not (applied >> target) & 1:
                continue
            if rule.port_matches(port, protocol, destination) and self._remote_matches(
                policy, rule, target_pod, remote
            ):
                return AntreaMatch(policy, rule)
        return None
