"""Convert Calico (and Kubernetes) policies to Kubernetes NetworkPolicies and Antrea-native
policies, with a per-policy status: ``exact``, ``lossy`` (what is lost) or ``unsupported``
(why). :mod:`.equivalence` then proves, over a cluster model, which connections change.

Mapping (the semantics on both sides: :mod:`.calico`, :mod:`.model`, :mod:`.antrea`):

* Calico tiers ordered before the ``default`` tier become Antrea custom Tiers (priorities
  spread over 1-249, avoiding the static and reserved ones), in the same order; the ``default``
  tier becomes Antrea's ``application`` tier plus Kubernetes NetworkPolicies plus one
  ``baseline`` ClusterNetworkPolicy for its default deny. Tiers ordered after ``default`` have
  no Antrea counterpart (only ``baseline``, which cannot override Kubernetes isolation): their
  policies are unsupported.
* In a tier, policies keep Calico's order (``order``, then name) as distinct Antrea priorities
  1, 2, ... (distinct on purpose: equal priorities would interleave rules by index).
* A tier's default ``Deny`` ("default deny once selected") becomes a last Drop-all policy in
  that tier, applied to the pods its policies select (per direction). For the default tier it
  sits in Antrea's baseline tier: reached only when no Kubernetes NetworkPolicy isolates the
  pod, and a Kubernetes NetworkPolicy that isolates it denies what it does not allow - the
  same answer.
* ``Allow`` -> ``Allow``, ``Deny`` -> ``Drop``. ``Pass`` in the default tier (the last tier)
  -> ``Allow``: Calico passes to the profiles, which allow on Kubernetes. ``Pass`` in an
  earlier tier -> ``Pass``; Antrea's Pass jumps to the Kubernetes NetworkPolicies rather than
  to the next tier, so it is exact only when no later tier holds Antrea policies (else lossy).
  ``Log`` rules are dropped (lossy: logging only, no connection changes).
* A Calico NetworkPolicy becomes a Kubernetes NetworkPolicy when its meaning is preserved:
  in the default tier, only Allow (and Log) rules, every construct expressible (selectors as
  label selectors, nets/notNets as ipBlocks, numeric / ranged / named ports, notPorts as port
  ranges), and no policy with Deny rules after it in the tier (Antrea would put that Drop
  before every Kubernetes policy). Otherwise an Antrea NetworkPolicy; a GlobalNetworkPolicy
  becomes an Antrea ClusterNetworkPolicy.
* Selectors go through a disjunctive normal form: ``||`` becomes several appliedTo entries /
  peers (or several Kubernetes policies, ``-2``, ``-3``... for a policy selector).
* Kubernetes NetworkPolicies in the input are kept as they are (exact): Calico enforces them
  in its default tier at order 1000; a Calico policy with Deny rules ordered after them is
  lossy (in Antrea its Drop comes first).

* ``notSelector`` is folded into the selector (``sel && !notSel``), scoped as Calico scopes
  it (:mod:`.calico`); alone in a GlobalNetworkPolicy it also matches non-pod addresses, which a
  converted peer cannot (lossy). A namespaceSelector on ``projectcalico.org/name`` becomes
  ``kubernetes.io/metadata.name`` (exact: the API server sets it on every namespace).
* ICMP rules (``icmp: {type, code}`` or any ICMP) become Antrea ``protocols: [{icmp: ...}]``
  (exact, and compared by the equivalence proof); a Kubernetes NetworkPolicy cannot match ICMP,
  so such a policy goes to Antrea. ICMPv6 rules are dropped (lossy: the model probes IPv4 only).

Unsupported (status ``unsupported`` with the reason, the other policies still convert):
``serviceAccounts`` (Kubernetes has no service account peer; Antrea's is outside the
expectation engine), ``serviceAccountSelector`` and ``serviceAccounts.selector`` (ServiceAccount
labels are not in the cluster model), ``services``, ``http``, ``preDNAT`` / ``doNotTrack`` /
``applyOnForward``, ``global()``, nets combined with selectors in one entity, ``notProtocol``,
``notICMP``, ``ipVersion``, UDPLite and other protocol numbers, selectors with contains /
starts with / ends with or other implicit ``projectcalico.org/`` labels, named source ports,
tiers after the default tier, more than 14 custom tiers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .antrea import STATIC_TIERS
from .calico import (
    DEFAULT_TIER,
    KNP_ORDER,
    CalicoPolicy,
    CalicoPort,
    CalicoRule,
    CalicoTier,
    EntityRule,
    Inexpressible,
    NotModelled,
    Sel,
    label_selectors,
    split_objects,
    tiers_from_objects,
)
from .model import NetworkPolicy

EXACT, LOSSY, UNSUPPORTED = "exact", "lossy", "unsupported"
MANAGED = {"app.kubernetes.io/managed-by": "cni-runbook"}
SOURCE_ANNOTATION = "cni-runbook.io/converted-from"
_RESERVED_FOR_TIERS = set(STATIC_TIERS.values()) | {220} | set(range(250, 256))
MAX_CUSTOM_TIERS = 14  # Antrea: at most 20 Tiers, 6 of them static


@dataclass(frozen=True)
class PolicyConversion:
    """What became of one source policy."""

    source: str
    status: str
    target: str = ""
    outputs: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    reason: str = ""


@dataclass
class Conversion:
    policies: list[PolicyConversion]
    k8s: list[dict[str, Any]] = field(default_factory=list)
    antrea: list[dict[str, Any]] = field(default_factory=list)
    tiers: list[dict[str, Any]] = field(default_factory=list)

    def objects(self) -> list[dict[str, Any]]:
        """Everything to apply, Tiers first."""
        return self.tiers + self.antrea + self.k8s

    def status(self, source: str) -> PolicyConversion:
        for p in self.policies:
            if p.source == source:
                return p
        raise KeyError(source)

    @property
    def exact(self) -> bool:
        return all(p.status == EXACT for p in self.policies)

    def summary(self) -> pd.DataFrame:
        """One row per source policy: status, target kind, outputs, what is lost or why not."""
        return pd.DataFrame(
            [
                {
                    "policy": p.source,
                    "status": p.status,
                    "converted to": p.target,
                    "outputs": ", ".join(p.outputs),
                    "lost / reason": "; ".join(p.lost) if p.lost else p.reason,
                }
                for p in self.policies
            ],
            columns=["policy", "status", "converted to", "outputs", "lost / reason"],
        )


# --------------------------------------------------------------------------- pieces


def _and(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The conjunction of two label selector dicts."""
    exprs: list[dict[str, Any]] = []
    for sel in (a, b):
        for k, v in (sel.get("matchLabels") or {}).items():
            exprs.append({"key": k, "operator": "In", "values": [v]})
        exprs.extend(sel.get("matchExpressions") or [])
    return {"matchExpressions": exprs} if exprs else {}


def _ip_blocks(nets: Sequence[Any], not_nets: Sequence[Any]) -> list[dict[str, Any]]:
    bases = list(nets) or [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    blocks = []
    for net in bases:
        if any(n.version == net.version and net.subnet_of(n) for n in not_nets):
            continue  # wholly excluded
        excepts = sorted(
            {str(n) for n in not_nets if n.version == net.version and n.subnet_of(net) and n.prefixlen > net.prefixlen}
        )
        block: dict[str, Any] = {"cidr": str(net)}
        if excepts:
            block["except"] = excepts
        blocks.append({"ipBlock": block})
    return blocks


def _ranges(ports: Sequence[CalicoPort], not_ports: Sequence[CalicoPort], what: str) -> list[tuple[int, int] | str]:
    """Port entries (inclusive ranges or names) matching ``ports`` minus ``not_ports``."""
    if any(p.name for p in not_ports):
        raise Inexpressible(f"named {what} notPorts")
    named = [p.name for p in ports if p.name]
    if named and not_ports:
        raise Inexpressible(f"named {what} ports combined with notPorts")
    spans = [(max(p.low, 1), p.high) for p in ports if p.name is None] if ports else ([(1, 65535)] if not_ports else [])
    for cut in not_ports:
        out = []
        for low, high in spans:
            if cut.high < low or cut.low > high:
                out.append((low, high))
                continue
            if low < cut.low:
                out.append((low, cut.low - 1))
            if cut.high < high:
                out.append((cut.high + 1, high))
        spans = out
    return sorted(set(spans)) + [n for n in named if n]


def _port_entries(rule: CalicoRule, with_source: bool) -> list[dict[str, Any]] | None:
    """``ports`` for the converted rule (None = all ports and protocols); [] = matches nothing."""
    dst = rule.destination
    src = rule.source
    if rule.protocol is None:
        return None
    dst_ranges = _ranges(dst.ports, dst.not_ports, "destination") if (dst.ports or dst.not_ports) else [None]
    src_ranges: list[Any] = [None]
    if src.ports or src.not_ports:
        if not with_source:
            raise Inexpressible("source ports (Kubernetes NetworkPolicy has no source port match)")
        src_ranges = _ranges(src.ports, src.not_ports, "source")
        if any(isinstance(r, str) for r in src_ranges):
            raise Inexpressible("named source ports")
    entries = []
    for d in dst_ranges:
        for s in src_ranges:
            entry: dict[str, Any] = {"protocol": rule.protocol}
            if isinstance(d, str):
                entry["port"] = d
            elif d is not None:
                entry["port"] = d[0]
                if d[1] != d[0]:
                    entry["endPort"] = d[1]
            if s is not None:
                entry["sourcePort"] = s[0]
                if s[1] != s[0]:
                    entry["sourceEndPort"] = s[1]
            entries.append(entry)
    return entries


def _icmp_protocols(rule: CalicoRule) -> list[dict[str, Any]]:
    """Antrea ``protocols`` of a Calico ICMP rule (``icmp: {type, code}``; none: every ICMP message)."""
    fields: dict[str, int] = {}
    if rule.icmp is not None:
        kind, code = rule.icmp
        if kind is not None:
            fields["icmpType"] = int(kind)
        if code is not None:
            fields["icmpCode"] = int(code)
    return [{"icmp": fields}]


def _check_rule(rule: CalicoRule) -> None:
    if rule.not_protocol is not None:
        raise Inexpressible(f"rule {rule.index + 1}: notProtocol {rule.not_protocol} (Kubernetes and Antrea rules "
                            "list the protocols they match; they cannot exclude one)")
    if rule.not_icmp is not None:
        raise Inexpressible(f"rule {rule.index + 1}: notICMP (Antrea's icmp match names a type/code, it cannot "
                            "exclude one)")
    if rule.ip_version is not None:
        raise Inexpressible(f"rule {rule.index + 1}: ipVersion {rule.ip_version} (Kubernetes and Antrea rules have "
                            "no IP family match)")
    if rule.protocol not in (None, "TCP", "UDP", "SCTP", "ICMP", "ICMPv6"):
        raise Inexpressible(f"rule {rule.index + 1}: protocol {rule.protocol} (Kubernetes NetworkPolicy knows "
                            "TCP, UDP, SCTP; Antrea adds ICMP and IGMP)")


def _entity_selector(entity: EntityRule) -> Sel | None:
    """The entity's endpoint selector with its ``notSelector`` folded in (``sel && !notSel``)."""
    if entity.not_selector is None:
        return entity.selector
    negated = Sel("not", args=(entity.not_selector,), text=f"!({entity.not_selector.text})")
    if entity.selector is None:
        return negated
    return Sel("and", args=(entity.selector, negated), text=f"({entity.selector.text}) && {negated.text}")


def _peers(entity: EntityRule, namespaced: bool, lost: list[str] | None = None,
           where: str = "") -> list[dict[str, Any]] | None:
    """Peers for the remote side (None = any peer; [] = none)."""
    if entity.service_accounts:
        raise Inexpressible("serviceAccounts: Kubernetes NetworkPolicy has no service account peer, and Antrea's "
                            "serviceAccount peer is outside the expectation engine, so no conversion could be proven")
    selector = _entity_selector(entity)
    has_sel = selector is not None or entity.namespace_selector is not None
    if has_sel and (entity.nets or entity.not_nets):
        raise Inexpressible("nets/notNets combined with selectors in one entity (IP AND labels): a Kubernetes or "
                            "Antrea peer is either an ipBlock or selectors")
    if entity.nets or entity.not_nets:
        return _ip_blocks(entity.nets, entity.not_nets)
    if not has_sel:
        return None
    if (entity.not_selector is not None and entity.selector is None and entity.namespace_selector is None
            and not namespaced and lost is not None):
        lost.append(f"{where}: notSelector alone in a GlobalNetworkPolicy also matches non-pod addresses (host "
                    "endpoints, outside the cluster); the converted peer selects pods only")
    pods = label_selectors(selector) if selector is not None else [None]
    spaces = label_selectors(entity.namespace_selector, namespaces=True) if entity.namespace_selector is not None else [None]
    peers = []
    for ns in spaces:
        for pod in pods:
            peer: dict[str, Any] = {}
            if pod is not None:
                peer["podSelector"] = pod
            if ns is not None:
                peer["namespaceSelector"] = ns
            peers.append(peer)
    return peers


def _local(entity: EntityRule, direction: str) -> list[dict[str, Any]] | None:
    """Pod selectors of the local side of a rule (None = no restriction)."""
    if entity.nets or entity.not_nets or entity.service_accounts:
        raise Inexpressible(f"{direction} rule matching the selected pod itself by IP or service account")
    if entity.namespace_selector is not None:
        raise Inexpressible(f"{direction} rule with a namespaceSelector on the selected pod's side")
    selector = _entity_selector(entity)
    if selector is None:
        return None
    return label_selectors(selector)


def _meta(name: str, namespace: str | None, source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(MANAGED), "annotations": {SOURCE_ANNOTATION: source}}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _dns_name(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-." else "-" for c in text.lower()).strip("-.")
    return out[:253] or "policy"


# --------------------------------------------------------------------------- Kubernetes form


def k8s_form(policy: CalicoPolicy) -> tuple[list[dict[str, Any]], list[str]]:
    """Kubernetes NetworkPolicies with the same meaning (alone in the default tier), and what
    is lost. Raises :class:`Inexpressible`."""
    if policy.namespace is None:
        raise Inexpressible("GlobalNetworkPolicy is cluster-scoped")
    lost: list[str] = []
    spec_rules: dict[str, list[dict[str, Any]]] = {"ingress": [], "egress": []}
    for direction in ("ingress", "egress"):
        if not policy.applies(direction):
            continue
        for rule in policy.rules(direction):
            _check_rule(rule)
            if rule.action == "Log":
                lost.append(f"{direction} rule {rule.index + 1} (Log): logging only, no connection changes")
                continue
            if rule.action != "Allow":
                raise Inexpressible(f"{direction} rule {rule.index + 1}: action {rule.action}")
            if rule.protocol == "ICMP":
                raise Inexpressible(f"{direction} rule {rule.index + 1}: ICMP (a Kubernetes NetworkPolicy cannot "
                                    "match ICMP; Antrea's protocols can)")
            if rule.protocol == "ICMPv6":
                lost.append(f"{direction} rule {rule.index + 1} (ICMPv6): not converted (the model probes IPv4 "
                            "ICMP only); ICMPv6 connections change")
                continue
            remote, local = (rule.source, rule.destination) if direction == "ingress" else (rule.destination, rule.source)
            if _local(local, direction) is not None:
                raise Inexpressible(f"{direction} rule {rule.index + 1}: selector on the selected pod's side")
            peers = _peers(remote, True, lost, f"{direction} rule {rule.index + 1}")
            ports = _port_entries(rule, with_source=False)
            if peers == [] or ports == []:
                continue  # matches nothing
            out: dict[str, Any] = {}
            if peers is not None:
                out["from" if direction == "ingress" else "to"] = peers
            if ports is not None:
                out["ports"] = ports
            spec_rules[direction].append(out)
    objects = []
    selectors = label_selectors(policy.selector)
    for n, selector in enumerate(selectors, 1):
        name = _dns_name(policy.name if len(selectors) == 1 or n == 1 else f"{policy.name}-{n}")
        spec: dict[str, Any] = {"podSelector": selector, "policyTypes": sorted(policy.types)}
        if "Ingress" in policy.types:
            spec["ingress"] = spec_rules["ingress"]
        if "Egress" in policy.types:
            spec["egress"] = spec_rules["egress"]
        objects.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": _meta(name, policy.namespace, policy.key), "spec": spec})
    return objects, lost


# --------------------------------------------------------------------------- Antrea form


def applied_to(policy: CalicoPolicy) -> list[dict[str, Any]]:
    pods = label_selectors(policy.selector)
    if policy.namespace is not None:
        return [{"podSelector": p} for p in pods]
    spaces = (label_selectors(policy.namespace_selector, namespaces=True) if policy.namespace_selector is not None
              else [None])
    return [{"podSelector": p, **({"namespaceSelector": n} if n is not None else {})} for n in spaces for p in pods]


def antrea_form(
    policy: CalicoPolicy, tier: str, priority: float, pass_to_allow: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    """An ANNP (Calico NetworkPolicy) or ACNP (GlobalNetworkPolicy) in ``tier`` at
    ``priority``, and what is lost. None when the policy selects nothing."""
    lost: list[str] = []
    policy_applied = applied_to(policy)
    rules: dict[str, list[dict[str, Any]]] = {"ingress": [], "egress": []}
    rule_level = False
    for direction in ("ingress", "egress"):
        if not policy.applies(direction):
            continue
        for rule in policy.rules(direction):
            _check_rule(rule)
            if rule.action == "Log":
                lost.append(f"{direction} rule {rule.index + 1} (Log): logging only, no connection changes")
                continue
            if rule.protocol == "ICMPv6":
                lost.append(f"{direction} rule {rule.index + 1} (ICMPv6 {rule.action}): not converted (the model "
                            "probes IPv4 ICMP only); ICMPv6 connections change")
                continue
            remote, local = (rule.source, rule.destination) if direction == "ingress" else (rule.destination, rule.source)
            local_sel = _local(local, direction)
            peers = _peers(remote, policy.namespace is not None, lost, f"{direction} rule {rule.index + 1}")
            icmp = _icmp_protocols(rule) if rule.protocol == "ICMP" else None
            ports = None if icmp is not None else _port_entries(rule, with_source=True)
            if peers == [] or ports == [] or local_sel == []:
                continue
            action = {"Allow": "Allow", "Deny": "Drop", "Pass": "Allow" if pass_to_allow else "Pass"}[rule.action]
            out: dict[str, Any] = {"name": f"{direction}-{rule.index + 1}", "action": action}
            if peers is not None:
                out["from" if direction == "ingress" else "to"] = peers
            if ports is not None:
                out["ports"] = ports
            if icmp is not None:
                out["protocols"] = icmp
            if local_sel is not None:
                rule_level = True
                entries = []
                for entry in policy_applied:
                    for sel in local_sel:
                        merged = dict(entry)
                        merged["podSelector"] = _and(entry.get("podSelector") or {}, sel)
                        entries.append(merged)
                out["appliedTo"] = entries
            rules[direction].append(out)
    if not policy_applied:
        return None, lost
    spec: dict[str, Any] = {"tier": tier, "priority": priority}
    if rule_level:
        for direction in ("ingress", "egress"):
            for r in rules[direction]:
                r.setdefault("appliedTo", policy_applied)
    else:
        spec["appliedTo"] = policy_applied
    spec["ingress"] = rules["ingress"]
    spec["egress"] = rules["egress"]
    kind = "NetworkPolicy" if policy.namespace is not None else "ClusterNetworkPolicy"
    return (
        {"apiVersion": "crd.antrea.io/v1beta1", "kind": kind,
         "metadata": _meta(_dns_name(policy.name), policy.namespace, policy.key), "spec": spec},
        lost,
    )


def _deny_all(name: str, tier: str, priority: float, selected: Mapping[str, list[dict[str, Any]]],
              source: str) -> dict[str, Any] | None:
    spec: dict[str, Any] = {"tier": tier, "priority": priority, "ingress": [], "egress": []}
    for direction in ("ingress", "egress"):
        entries = []
        for e in selected[direction]:
            if e not in entries:
                entries.append(e)
        if entries:
            spec[direction].append({"name": f"{direction}-default-deny", "action": "Drop", "appliedTo": entries})
    if not spec["ingress"] and not spec["egress"]:
        return None
    return {"apiVersion": "crd.antrea.io/v1beta1", "kind": "ClusterNetworkPolicy",
            "metadata": _meta(name, None, source), "spec": spec}


def _cluster_entries(policy: CalicoPolicy) -> list[dict[str, Any]]:
    """The policy's selected pods as ClusterNetworkPolicy appliedTo entries."""
    entries = applied_to(policy)
    if policy.namespace is None:
        return entries
    ns = {"matchLabels": {"kubernetes.io/metadata.name": policy.namespace}}
    return [{**e, "namespaceSelector": ns} for e in entries]


# --------------------------------------------------------------------------- driver


def policy_key(obj: Mapping[str, Any]) -> str:
    """``calico cnp <ns>/<name>`` or ``calico gnp <name>`` (as :attr:`CalicoPolicy.key`) from the object."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "GlobalNetworkPolicy":
        return f"calico gnp {meta.get('name', '?')}"
    return f"calico cnp {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _tier_priorities(count: int) -> list[int]:
    free = [p for p in range(1, 250) if p not in _RESERVED_FOR_TIERS]
    step = len(free) // (count + 1)
    return [free[(i + 1) * step] for i in range(count)]


def convert(
    objects: Iterable[Mapping[str, Any]],
    tiers: Iterable[Mapping[str, Any]] | Mapping[str, CalicoTier] | None = None,
) -> Conversion:
    """Convert Calico NetworkPolicies / GlobalNetworkPolicies (and Kubernetes NetworkPolicies,
    kept as they are) to Kubernetes NetworkPolicies and Antrea-native policies. Calico Tier
    objects may come with ``objects`` or as ``tiers``."""
    calico_objs, k8s_objs, tier_objs = split_objects(objects)
    if isinstance(tiers, Mapping):
        all_tiers = {**tiers_from_objects(tier_objs), **tiers}
    else:
        all_tiers = tiers_from_objects(list(tier_objs) + list(tiers or ()))
    results: dict[str, PolicyConversion] = {}
    order: list[str] = []
    parsed: list[CalicoPolicy] = []
    for obj in calico_objs:
        try:
            policy = CalicoPolicy.from_dict(obj)
        except NotModelled as exc:  # a valid construct outside the model: this policy only is unsupported
            key = policy_key(obj)
            order.append(key)
            results[key] = PolicyConversion(key, UNSUPPORTED, reason=str(exc))
            continue
        if policy.tier not in all_tiers:
            raise ValueError(f"{policy.key}: tier {policy.tier!r} does not exist (give its Tier object)")
        parsed.append(policy)
        order.append(policy.key)
    out = Conversion(policies=[])

    # Kubernetes NetworkPolicies: kept.
    k8s_members = []
    for obj in k8s_objs:
        np_ = NetworkPolicy.from_dict(obj)
        key = f"k8s {np_.key}"
        order.append(key)
        out.k8s.append(dict(obj))
        results[key] = PolicyConversion(key, EXACT, "Kubernetes NetworkPolicy", (np_.key,))
        k8s_members.append(((KNP_ORDER, f"knp.default.{np_.name}"), key))

    tiers_sorted = sorted(all_tiers.values(), key=lambda t: (t.order, t.name))
    default_at = [t.name for t in tiers_sorted].index(DEFAULT_TIER)
    before, after = tiers_sorted[:default_at], tiers_sorted[default_at + 1:]
    members = {t.name: sorted((p for p in parsed if p.tier == t.name), key=lambda p: p.sort_key) for t in tiers_sorted}

    for tier in after:
        for p in members[tier.name]:
            results[p.key] = PolicyConversion(
                p.key, UNSUPPORTED, reason=f"tier {tier.name} is ordered after the default tier; Antrea has no tier "
                "between Kubernetes NetworkPolicies and its baseline tier")

    # Default tier: walk from the last policy back, so each knows whether Deny rules follow it.
    default_members: list[tuple[tuple[float, str], Any]] = [(p.sort_key, p) for p in members[DEFAULT_TIER]]
    default_members += k8s_members
    default_members.sort(key=lambda m: m[0])
    antrea_default: list[CalicoPolicy] = []
    deny_after = False
    decided: dict[str, tuple[str, list[dict[str, Any]], list[str]]] = {}
    for _, member in reversed(default_members):
        if isinstance(member, str):
            continue
        policy: CalicoPolicy = member
        if not deny_after:
            try:
                objs, lost = k8s_form(policy)
                decided[policy.key] = ("k8s", objs, lost)
                continue
            except Inexpressible:
                pass
        decided[policy.key] = ("antrea", [], [])
        if any(r.action == "Deny" for d in ("ingress", "egress") if policy.applies(d) for r in policy.rules(d)):
            deny_after = True
    priority = 0
    for key_, member in default_members:
        if isinstance(member, str):
            continue
        policy = member
        route, objs, lost = decided[policy.key]
        if route == "k8s":
            out.k8s.extend(objs)
            results[policy.key] = PolicyConversion(
                policy.key, LOSSY if lost else EXACT, "Kubernetes NetworkPolicy",
                tuple(f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objs), tuple(lost))
            continue
        priority += 1
        try:
            obj, lost = antrea_form(policy, "application", float(priority), pass_to_allow=not after)
        except Inexpressible as exc:
            results[policy.key] = PolicyConversion(policy.key, UNSUPPORTED, reason=str(exc))
            continue
        if policy.tier == DEFAULT_TIER and any(
            r.action == "Pass" for d in ("ingress", "egress") for r in policy.rules(d)
        ) and after:
            lost.append("Pass in the default tier: Calico goes on with the later tiers "
                        f"({', '.join(t.name for t in after)}), Antrea's Allow does not")
        if any(r.action == "Deny" for d in ("ingress", "egress") for r in policy.rules(d)):
            earlier = [k for (sk, k) in k8s_members if sk < key_]
            if earlier:
                lost.append("ordered after Kubernetes NetworkPolicies " + ", ".join(earlier) +
                            " (Calico order 1000); in Antrea its Drop rules come before them")
        if obj is None:
            results[policy.key] = PolicyConversion(policy.key, EXACT, "(nothing: selects no pod)", (), tuple(lost))
            continue
        antrea_default.append(policy)
        out.antrea.append(obj)
        results[policy.key] = _antrea_result(policy, obj, lost)
    selected: dict[str, list[dict[str, Any]]] = {"ingress": [], "egress": []}
    for policy in antrea_default:
        for d in ("ingress", "egress"):
            if policy.applies(d):
                selected[d].extend(_cluster_entries(policy))
    deny = _deny_all("calico-default-tier-deny", "baseline", 1.0, selected, f"calico tier {DEFAULT_TIER}")
    if deny is not None:
        out.antrea.append(deny)

    # Tiers before the default tier: Antrea custom tiers, in order.
    if len(before) > MAX_CUSTOM_TIERS:
        for tier in before[MAX_CUSTOM_TIERS:]:
            for p in members[tier.name]:
                results[p.key] = PolicyConversion(p.key, UNSUPPORTED,
                                                  reason=f"more than {MAX_CUSTOM_TIERS} custom tiers")
        before = before[:MAX_CUSTOM_TIERS]
    priorities = _tier_priorities(len(before))
    antrea_later = {t.name: [] for t in before}
    tier_objs_out = []
    custom_results: list[tuple[CalicoTier, CalicoPolicy, dict[str, Any] | None, list[str]]] = []
    for tier, tier_priority in zip(before, priorities, strict=True):
        name = _dns_name(tier.name if tier.name not in STATIC_TIERS else f"calico-{tier.name}")
        tier_objs_out.append({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Tier",
                              "metadata": {"name": name, "labels": dict(MANAGED)},
                              "spec": {"priority": tier_priority, "description": f"from Calico tier {tier.name}"}})
        selected = {"ingress": [], "egress": []}
        rank = 0
        for policy in members[tier.name]:
            rank += 1
            try:
                obj, lost = antrea_form(policy, name, float(rank), pass_to_allow=False)
            except Inexpressible as exc:
                results[policy.key] = PolicyConversion(policy.key, UNSUPPORTED, reason=str(exc))
                continue
            if obj is not None:
                antrea_later[tier.name].append(policy.key)
                out.antrea.append(obj)
                for d in ("ingress", "egress"):
                    if policy.applies(d):
                        selected[d].extend(_cluster_entries(policy))
            custom_results.append((tier, policy, obj, lost))
        if tier.default_action == "Deny":
            deny = _deny_all(f"{name}-tier-default-deny", name, float(rank + 1), selected, f"calico tier {tier.name}")
            if deny is not None:
                out.antrea.append(deny)
    out.tiers = tier_objs_out
    for tier, policy, obj, lost in custom_results:
        if any(r.action == "Pass" for d in ("ingress", "egress") if policy.applies(d) for r in policy.rules(d)):
            index = [t.name for t in before].index(tier.name)
            skipped = [k for t in before[index + 1:] for k in antrea_later[t.name]] + [p.key for p in antrea_default]
            if skipped:
                lost.append("Pass: Antrea's Pass goes straight to the Kubernetes NetworkPolicies, Calico's to the next "
                            "tier; for passed traffic these policies no longer apply: " + ", ".join(skipped))
        if obj is None:
            results[policy.key] = PolicyConversion(policy.key, EXACT, "(nothing: selects no pod)", (), tuple(lost))
        else:
            results[policy.key] = _antrea_result(policy, obj, lost)
    out.policies = [results[k] for k in order]
    return out


def _antrea_result(policy: CalicoPolicy, obj: Mapping[str, Any], lost: list[str]) -> PolicyConversion:
    kind = "Antrea NetworkPolicy" if obj["kind"] == "NetworkPolicy" else "Antrea ClusterNetworkPolicy"
    meta = obj["metadata"]
    name = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return PolicyConversion(policy.key, LOSSY if lost else EXACT, f"{kind} (tier {obj['spec']['tier']}, "
                            f"priority {obj['spec']['priority']:g})", (name,), tuple(lost))
