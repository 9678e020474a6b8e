"""Antrea-native policies: ClusterNetworkPolicy (ACNP) and Antrea NetworkPolicy (ANNP).

Evaluation order, per direction, as documented in Antrea's ``docs/antrea-network-policy.md``::

    Emergency > SecurityOps > NetworkOps > Platform > Application > K8s NetworkPolicy > Baseline

* Tiers are ordered by tier priority (lower first), policies inside a tier by ``spec.priority``
  (lower first, ACNP and ANNP interleaved), rules inside a policy in the order written.
* Policies of the same tier *and* the same ``spec.priority`` share rule-level priorities: "their
  rule level priorities are only considered equal if their policy objects share the same Tier
  and have the same policy priority, plus the rules themselves are of the same rule priority
  (rule priority is the sequence number of the rule within the policy's ingress or egress
  section)" ("Notes and constraints"). So rule 1 of every such policy comes before rule 2 of
  any of them, as Antrea's e2e ``testACNPRulePriority`` expects (acnp-deny [drop y, drop z]
  and acnp-allow [allow z, allow y] at priority 5: x->y dropped, x->z allowed). Rules at the
  very same rule-level priority are "nondeterministic" in Antrea; the engine breaks those ties
  by kind, namespace and name so its answer is at least stable.
* ipBlock ``except`` is supported (Antrea >= v2.2): "the CIDRs in the except list will be
  validated to be strictly within the base CIDR range"; a rule does not match addresses in
  ``except`` and evaluation goes on with lower-priority rules.
* ``ports[].sourcePort`` / ``sourceEndPort`` match the client's source port. A probe's source
  port is ephemeral, drawn from the client node's ``net.ipv4.ip_local_port_range`` (Linux
  default 32768-60999), so a source-port range is evaluated against that range: covering it
  whole matches, disjoint never matches, partly overlapping cannot be predicted and is
  refused (a ValueError), never ignored.
* Tiers: the static ones below, plus custom Tier objects (``crd.antrea.io`` ``Tier`` with
  ``spec.priority``) read from files or the cluster with Antrea's admission limits
  (``pkg/controller/networkpolicy/validate.go``, ``tier.go``): priority 0-255, not one of the
  reserved 250-255 (250 application, 253 baseline, 251/252/254/255 reserved), no two Tiers with
  the same priority, at most 20 Tiers including the 6 static ones.
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
serviceAccount, nodeSelector, FQDN, toServices, L7 rules and IGMP are outside this model and
are rejected with a ValueError instead of being silently ignored. ``protocols: [{icmp: {icmpType,
icmpCode}}]`` is modelled: Antrea merges ``ports`` and ``protocols`` into the rule's services,
so either matching is enough; ICMP probes carry type and code (:func:`.model.icmp_port`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .masks import PodIndex, signatures
from .model import (
    ICMP,
    Cluster,
    IPAddress,
    IPBlock,
    LabelSelector,
    Pod,
    PortSpec,
    icmp_port,
    object_namespace,
    ports_from_list,
)

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
RESERVED_TIER_PRIORITIES = frozenset({250, 251, 252, 253, 254, 255})
MAX_TIERS = 20  # maxSupportedTiers, counting the static tiers
EPHEMERAL_PORTS = (32768, 60999)  # Linux default net.ipv4.ip_local_port_range
_UNSUPPORTED_PEER_FIELDS = ("group", "serviceAccount", "nodeSelector", "fqdn", "scope", "labelIdentity")
_UNSUPPORTED_RULE_FIELDS = ("toServices", "l7Protocols")


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
    """One rule. ``index`` is its position in the policy's ingress or egress list (the rule
    priority); ``source_ports`` holds, per ``ports`` entry, its inclusive source-port range or
    None (any source port) until :meth:`for_ephemeral_ports` resolves it."""

    action: str
    name: str
    peers: tuple[AntreaPeer, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    applied_to: tuple[AppliedTo, ...] = ()
    index: int = 0
    source_ports: tuple[tuple[int, int] | None, ...] = ()

    def for_ephemeral_ports(self, ephemeral: tuple[int, int], label: str = "") -> AntreaRule | None:
        """This rule with its source-port ranges decided for clients whose source port is
        drawn from ``ephemeral``: entries that can never match are dropped (None when no entry
        is left: the rule never matches), entries that always match lose their source range.
        A range partly overlapping ``ephemeral`` raises ValueError."""
        if not any(r is not None for r in self.source_ports):
            return self
        low, high = ephemeral
        kept = []
        for spec, rng in zip(self.ports, self.source_ports, strict=True):
            if rng is None or (rng[0] <= low and high <= rng[1]):
                kept.append(spec)
            elif rng[1] < low or rng[0] > high:
                continue
            else:
                raise ValueError(
                    f"{label} rule {self.name!r}: sourcePort range {rng[0]}-{rng[1]} partly overlaps the "
                    f"ephemeral source port range {low}-{high} (the node's net.ipv4.ip_local_port_range); "
                    "the probe's source port cannot be predicted, so the rule cannot be evaluated"
                )
        if not kept:
            return None
        return AntreaRule(self.action, self.name, self.peers, tuple(kept), self.applied_to, self.index, ())

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
    def from_dict(
        cls, obj: Mapping[str, Any], tiers: TiersLike = None, namespace: str | None = None
    ) -> AntreaPolicy:
        """Parse an ACNP / ANNP object dict. ``tiers`` adds custom Tiers (Tier objects or a
        name -> priority mapping); ``namespace`` is the namespace an ANNP without
        ``metadata.namespace`` is applied to (without either it is an error)."""
        kind = str(obj.get("kind") or "ClusterNetworkPolicy")
        if kind not in ("ClusterNetworkPolicy", "NetworkPolicy"):
            raise ValueError(f"not an Antrea-native policy kind: {kind!r}")
        cluster_scoped = kind == "ClusterNetworkPolicy"
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        name = str(meta["name"])
        all_tiers = {**STATIC_TIERS, **resolve_tiers(tiers)}
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
                raw_ports = raw.get("ports") or ()
                icmp = icmp_specs(raw.get("protocols") or (), f"{kind} {name}")
                parsed.append(
                    AntreaRule(
                        action=action,
                        name=str(raw.get("name") or f"{direction}-{action.lower()}-{number}"),
                        peers=tuple(AntreaPeer.from_dict(p, cluster_scoped) for p in raw.get(peer_key) or ()),
                        ports=ports_from_list(raw_ports) + icmp,
                        applied_to=rule_applied,
                        index=number,
                        source_ports=tuple(_source_range(p, f"{kind} {name}") for p in raw_ports) + (None,) * len(icmp),
                    )
                )
            return tuple(parsed)

        ingress, egress = rules("ingress", "from"), rules("egress", "to")
        if not policy_applied and any(not r.applied_to for r in ingress + egress):
            raise ValueError(f"{kind} {name}: appliedTo must be set on the policy or on every rule")
        return cls(
            kind=kind,
            name=name,
            namespace=None if cluster_scoped else object_namespace(obj, namespace, "Antrea NetworkPolicy"),
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


    def for_ephemeral_ports(self, ephemeral: tuple[int, int]) -> AntreaPolicy:
        """This policy with every rule's source ports decided (see
        :meth:`AntreaRule.for_ephemeral_ports`); rules that can never match are left out
        (the others keep their rule index, so the order is unchanged)."""
        if not any(r.source_ports for r in self.ingress + self.egress):
            return self

        def resolve(rules: tuple[AntreaRule, ...]) -> tuple[AntreaRule, ...]:
            out = (r.for_ephemeral_ports(ephemeral, self.key) for r in rules)
            return tuple(r for r in out if r is not None)

        return AntreaPolicy(self.kind, self.name, self.namespace, self.tier, self.tier_priority, self.priority,
                            self.applied_to, resolve(self.ingress), resolve(self.egress))


def icmp_specs(protocols: Sequence[Mapping[str, Any]], label: str) -> tuple[PortSpec, ...]:
    """A rule's ``protocols`` (``icmp: {icmpType, icmpCode}``) as ICMP entries of its services.

    Antrea merges ``ports`` and ``protocols`` into one list of services a rule matches (either
    one matching is enough); an ICMP entry matches ICMP probes (``port`` = type * 256 + code,
    :func:`~cni_runbook.policy.model.icmp_port`) of that type and code, a missing one standing
    for any. ``igmp`` (multicast) is outside the model and refused.
    """
    out = []
    for entry in protocols:
        if entry.get("igmp") is not None or "icmp" not in entry:
            raise ValueError(f"{label}: protocols entry {dict(entry)!r}: only icmp is modelled (igmp is not)")
        icmp = entry.get("icmp") or {}
        kind, code = icmp.get("icmpType"), icmp.get("icmpCode")
        if kind is None:
            if code is not None:
                raise ValueError(f"{label}: icmpCode {code} needs icmpType")
            out.append(PortSpec(ICMP, None))
        elif code is None:
            out.append(PortSpec(ICMP, icmp_port(int(kind)), icmp_port(int(kind), 255)))
        else:
            out.append(PortSpec(ICMP, icmp_port(int(kind), int(code))))
    return tuple(out)


def _source_range(port: Mapping[str, Any], label: str) -> tuple[int, int] | None:
    start, end = port.get("sourcePort"), port.get("sourceEndPort")
    if start is None:
        if end is not None:
            raise ValueError(f"{label}: sourceEndPort can only be set together with sourcePort")
        return None
    start = int(start)
    end = start if end is None else int(end)
    if not 1 <= start <= end <= 65535:
        raise ValueError(f"{label}: source port range {start}-{end} is not within 1-65535 (sourcePort <= sourceEndPort)")
    return (start, end)


TiersLike = Mapping[str, int] | Sequence[Mapping[str, Any]] | None


def tiers_from_objects(objects: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Custom tiers (name -> priority) from ``crd.antrea.io`` Tier objects, checked with
    Antrea's admission rules. Static tiers among them (as listed from a cluster) must carry
    their static priority and are not returned."""
    custom: dict[str, int] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "?")
        api = str(obj.get("apiVersion") or "crd.antrea.io/v1beta1")
        if obj.get("kind") != "Tier" or not api.startswith("crd.antrea.io/"):
            raise ValueError(f"{obj.get('kind', '?')} {name}: not a crd.antrea.io Tier")
        priority = (obj.get("spec") or {}).get("priority")
        if priority is None:
            raise ValueError(f"Tier {name}: spec.priority is mandatory")
        if name.lower() in STATIC_TIERS:
            if int(priority) != STATIC_TIERS[name.lower()]:
                raise ValueError(f"Tier {name}: a static tier has priority {STATIC_TIERS[name.lower()]}, not {priority}")
            continue
        if name.lower() in custom:
            raise ValueError(f"Tier {name}: defined twice")
        custom[name.lower()] = int(priority)
    return check_tiers(custom)


def check_tiers(custom: Mapping[str, int]) -> dict[str, int]:
    """Antrea's limits on custom tiers (name -> priority); returns them lower-cased."""
    out: dict[str, int] = {}
    taken = {v: k for k, v in STATIC_TIERS.items()}
    for raw_name, raw_priority in custom.items():
        name, priority = str(raw_name).lower(), int(raw_priority)
        if name in STATIC_TIERS:
            raise ValueError(f"Tier {name}: the static tiers cannot be redefined")
        if not 0 <= priority <= 255:
            raise ValueError(f"Tier {name}: priority {priority} is not within 0 to 255")
        if priority in RESERVED_TIER_PRIORITIES - set(taken):
            raise ValueError(f"Tier {name}: priority {priority} is reserved")
        if priority in taken:
            raise ValueError(f"Tier {name}: priority {priority} overlaps with existing Tier {taken[priority]}")
        taken[priority] = name
        out[name] = priority
    if len(taken) > MAX_TIERS:
        raise ValueError(f"maximum number of Tiers supported: {MAX_TIERS} (the 6 static ones included); got {len(taken)}")
    return out


def resolve_tiers(tiers: TiersLike) -> dict[str, int]:
    """Custom tiers from Tier objects or a name -> priority mapping, checked."""
    if not tiers:
        return {}
    if isinstance(tiers, Mapping):
        return check_tiers(tiers)
    return tiers_from_objects(list(tiers))


def tiers_from_cluster(kube: Any) -> dict[str, int]:
    """Custom tiers read from the cluster's ``crd.antrea.io/v1beta1`` Tier objects."""
    items = kube.resource("crd.antrea.io/v1beta1", "Tier").get().to_dict().get("items") or []
    return tiers_from_objects(items)


def as_antrea_policy(
    policy: AntreaPolicy | Mapping[str, Any], tiers: TiersLike = None, namespace: str | None = None
) -> AntreaPolicy:
    return policy if isinstance(policy, AntreaPolicy) else AntreaPolicy.from_dict(policy, tiers, namespace)


def ordered(policies: Sequence[AntreaPolicy]) -> list[AntreaPolicy]:
    """Policies in enforcement order (tier priority, then policy priority)."""
    return sorted(policies, key=lambda p: p.sort_key)


def rule_order(policies: Sequence[AntreaPolicy], direction: str) -> list[tuple[AntreaPolicy, AntreaRule]]:
    """Rules of one direction in enforcement order: tier priority, policy priority, rule index
    (across the policies sharing tier and priority), then kind / namespace / name."""
    pairs = [(p, r) for p in policies for r in (p.ingress if direction == "ingress" else p.egress)]
    return sorted(pairs, key=lambda pr: (pr[0].tier_priority, pr[0].priority, pr[1].index) + pr[0].sort_key[2:])


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
        base = {id(p): applied_to_mask(p.applied_to, p, self.index) for p in self.policies}
        n = len(cluster.pods)
        #: per direction and pod, the positions (in self._rules) of the rules applied to it
        self._applied: dict[str, list[tuple[int, ...]]] = {}
        self._group: dict[str, list[int]] = {}
        for direction in ("ingress", "egress"):
            for policy, rule in rule_order(self.policies, direction):
                mask = applied_to_mask(rule.applied_to, policy, self.index) if rule.applied_to else base[id(policy)]
                self._rules[direction].append((policy, rule, mask))
            ids, sigs = signatures([m for _, _, m in self._rules[direction]], n)
            self._applied[direction] = [sigs[k] for k in ids]
            # pods whose walk is the same: same applied rules, namespace (namespaces: Self)
            # and, for ingress, container ports (named ports resolve on the target)
            ports = self.index.ports_id if direction == "ingress" else [0] * n
            groups: dict[tuple[int, int, int], int] = {}
            self._group[direction] = [
                groups.setdefault(key, len(groups))
                for key in zip(ids, self.index.namespace_id, ports, strict=True)
            ]
        self._peer_cache: dict[tuple[int, int, str], int] = {}
        self._walk_cache: dict[tuple[Any, ...], tuple[int, int, int]] = {}

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

        Walks the rules applied to ``target`` once, peeling off the still-undecided pods rule
        by rule, instead of looking for the first matching rule pair by pair. The walk depends
        on the pod only through its applied rules, namespace and container ports, so pods
        alike share one walk.
        """
        allowed, remaining, baseline_total = self._walk(direction, target, port, protocol)
        if k8s_isolated:
            return allowed | (remaining & k8s_allowed)
        return allowed | baseline_total

    def _walk(self, direction: str, target: int, port: int, protocol: str) -> tuple[int, int, int]:
        """(allowed before K8s, undecided or passed after the non-baseline tiers, what the
        baseline walk then leaves allowed)."""
        key = (direction, self._group[direction][target], port, protocol)
        cached = self._walk_cache.get(key)
        if cached is not None:
            return cached
        target_pod = self.cluster.pods[target]
        applied_rules = self._applied[direction][target]
        rules = self._rules[direction]
        undecided = self.index.all
        allowed = 0
        passed = 0

        def walk(baseline: bool) -> None:
            nonlocal undecided, allowed, passed
            for position in applied_rules:
                policy, rule, _applied = rules[position]
                if not undecided:
                    return
                if policy.is_baseline != baseline:
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
        first_allowed = allowed
        remaining = undecided | passed
        undecided = remaining
        walk(baseline=True)
        result = (first_allowed, remaining, allowed | undecided)
        self._walk_cache[key] = result
        return result

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
