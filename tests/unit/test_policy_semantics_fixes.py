"""Engine semantics checked against the real API servers (issue 15, "Correctness against
real semantics").

* Kubernetes: ``policyTypes: []`` is defaulted like an absent field; an ``except`` equal to
  (or wider than) its ``cidr`` is rejected ("must be a strict subset of `cidr`", the API
  server's validation); a policy read without ``metadata.namespace`` is an error unless the
  caller states the namespace it is applied to.
* Antrea (docs/antrea-network-policy.md, "Notes and constraints", and the e2e test
  ``testACNPRulePriority``): rules of policies with the same tier and policy priority are
  ordered by rule index across those policies; Antrea-native ipBlocks support ``except``
  since v2.2; ``sourcePort``/``sourceEndPort`` are evaluated against the ephemeral source
  port range or refused; Tier objects are read with Antrea's limits.
"""

from __future__ import annotations

from typing import Any

import pytest
from cni_runbook.policy import AntreaPolicy, NetworkPolicy, PolicyEngine, Probe, default_layout, naive_verdict
from cni_runbook.policy.antrea import tiers_from_objects

CLUSTER = default_layout().cluster()
NS = "kubernetes.io/metadata.name"


def all_cells(engine: PolicyEngine, port: int = 80) -> list[bool]:
    return [bool(v) for v in engine.matrix(port).to_numpy().ravel()]


def agree_with_naive(policies: list, antrea: list, port: int = 80, **kw: Any) -> None:
    engine = PolicyEngine(CLUSTER, policies, antrea, **kw)
    frame = engine.matrix(port)
    for s in CLUSTER.pod_keys:
        for d in CLUSTER.pod_keys:
            naive = naive_verdict(CLUSTER, policies, Probe(s, d, port), antrea, **kw)[0].allowed
            assert naive == bool(frame.at[s, d]), (s, d)


# --------------------------------------------------------------------------- Kubernetes


def test_empty_policy_types_defaults_like_absent_deny_all_blocks_27_cells() -> None:
    deny = [
        {"metadata": {"name": "deny", "namespace": ns}, "spec": {"podSelector": {}, "policyTypes": []}}
        for ns in ("x", "y", "z")
    ]
    assert NetworkPolicy.from_dict(deny[0]).policy_types == frozenset({"Ingress"})
    blocked = [not c for c in all_cells(PolicyEngine(CLUSTER, deny[:1]))]
    assert sum(blocked) == 27  # every source into the 3 pods of x, loopback included (9 x 3)


def test_empty_policy_types_with_egress_rules_defaults_to_both() -> None:
    obj = {
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": [], "egress": [{"ports": [{"port": 53}]}]},
    }
    assert NetworkPolicy.from_dict(obj).policy_types == frozenset({"Ingress", "Egress"})


@pytest.mark.parametrize("exc", ["10.244.0.0/24", "10.244.0.0/16", "10.245.0.0/24"])
def test_except_not_strictly_inside_cidr_is_rejected(exc: str) -> None:
    obj = {
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/24", "except": [exc]}}]}]},
    }
    with pytest.raises(ValueError, match="strict subset"):
        NetworkPolicy.from_dict(obj)


def test_policy_without_namespace_is_an_error_unless_the_namespace_is_stated() -> None:
    obj = {"metadata": {"name": "nons"}, "spec": {"podSelector": {}}}
    with pytest.raises(ValueError, match="nons.*metadata.namespace"):
        NetworkPolicy.from_dict(obj)
    assert NetworkPolicy.from_dict(obj, namespace="y").namespace == "y"
    annp = {"kind": "NetworkPolicy", "metadata": {"name": "a"}, "spec": {"priority": 1, "appliedTo": [{"podSelector": {}}]}}
    with pytest.raises(ValueError, match="metadata.namespace"):
        AntreaPolicy.from_dict(annp)
    assert AntreaPolicy.from_dict(annp, namespace="z").namespace == "z"


# --------------------------------------------------------------------------- Antrea


def acnp(name: str, priority: float, egress: list[dict[str, Any]], tier: str = "application") -> dict[str, Any]:
    return {
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": tier, "priority": priority, "appliedTo": [{"namespaceSelector": {"matchLabels": {NS: "x"}}}],
                 "egress": egress},
    }


def to_ns(ns: str, action: str) -> dict[str, Any]:
    return {"action": action, "ports": [{"protocol": "TCP", "port": 80}],
            "to": [{"namespaceSelector": {"matchLabels": {NS: ns}}}]}


def test_equal_priority_rules_ordered_by_rule_index_across_policies() -> None:
    """Antrea e2e testACNPRulePriority: acnp-deny [drop y, drop z] and acnp-allow [allow z,
    allow y], both priority 5: x->y dropped (deny's rule 1), x->z allowed (allow's rule 1)."""
    deny = acnp("acnp-deny", 5, [to_ns("y", "Drop"), to_ns("z", "Drop")])
    allow = acnp("acnp-allow", 5, [to_ns("z", "Allow"), to_ns("y", "Allow")])
    for antrea in ([deny, allow], [allow, deny]):
        engine = PolicyEngine(CLUSTER, [], antrea)
        assert not engine.verdict("x/a", "y/a", 80).allowed
        assert engine.verdict("x/a", "z/a", 80).allowed
        assert not naive_verdict(CLUSTER, [], Probe("x/a", "y/a", 80), antrea)[0].allowed
        assert naive_verdict(CLUSTER, [], Probe("x/a", "z/a", 80), antrea)[0].allowed
        agree_with_naive([], antrea)


def test_different_priorities_still_apply_policy_by_policy() -> None:
    deny = acnp("acnp-deny", 5, [to_ns("y", "Drop"), to_ns("z", "Drop")])
    allow = acnp("acnp-allow", 6, [to_ns("z", "Allow"), to_ns("y", "Allow")])
    engine = PolicyEngine(CLUSTER, [], [deny, allow])
    assert not engine.verdict("x/a", "z/a", 80).allowed


def test_antrea_ipblock_except() -> None:
    # pod IPs: x/a .1 x/b .2 x/c .3 y/a .4 ... z/c .9 (layout order)
    rule = {"action": "Drop", "to": [{"ipBlock": {"cidr": "10.244.0.0/29", "except": ["10.244.0.4/32"]}}]}
    policy = acnp("drop-block", 1, [rule])
    engine = PolicyEngine(CLUSTER, [], [policy])
    assert not engine.verdict("x/a", "x/b", 80).allowed
    assert engine.verdict("x/a", "y/a", 80).allowed  # in except: the rule does not match
    assert engine.verdict("x/a", "z/b", 80).allowed  # outside the cidr
    agree_with_naive([], [policy])
    bad = acnp("bad", 1, [{"action": "Drop", "to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/24"]}}]}])
    with pytest.raises(ValueError, match="strict"):
        AntreaPolicy.from_dict(bad)


@pytest.mark.parametrize(
    ("source", "blocked"),
    [({"sourcePort": 1024, "sourceEndPort": 65535}, True), ({"sourcePort": 1, "sourceEndPort": 1023}, False)],
)
def test_source_ports_evaluated_against_the_ephemeral_range(source: dict[str, int], blocked: bool) -> None:
    rule = {"action": "Drop", "ports": [{"protocol": "TCP", "port": 80, **source}]}
    policy = acnp("src", 1, [rule])
    engine = PolicyEngine(CLUSTER, [], [policy])
    assert engine.verdict("x/a", "y/a", 80).allowed is not blocked
    assert naive_verdict(CLUSTER, [], Probe("x/a", "y/a", 80), [policy])[0].allowed is not blocked


def test_source_port_partly_in_the_ephemeral_range_is_refused() -> None:
    rule = {"action": "Drop", "ports": [{"protocol": "TCP", "port": 80, "sourcePort": 40000, "sourceEndPort": 50000}]}
    with pytest.raises(ValueError, match="ephemeral"):
        PolicyEngine(CLUSTER, [], [acnp("src", 1, [rule])])
    # with the node's range stated to lie inside it, it is decidable
    engine = PolicyEngine(CLUSTER, [], [acnp("src", 1, [rule])], ephemeral_ports=(41000, 42000))
    assert not engine.verdict("x/a", "y/a", 80).allowed


def test_source_end_port_without_source_port_is_rejected() -> None:
    rule = {"action": "Drop", "ports": [{"protocol": "TCP", "port": 80, "sourceEndPort": 50000}]}
    with pytest.raises(ValueError, match="sourceEndPort"):
        AntreaPolicy.from_dict(acnp("src", 1, [rule]))


def tier(name: str, priority: int) -> dict[str, Any]:
    return {"apiVersion": "crd.antrea.io/v1beta1", "kind": "Tier", "metadata": {"name": name},
            "spec": {"priority": priority}}


def test_tier_objects_order_policies() -> None:
    tiers = tiers_from_objects([tier("early", 10), tier("late", 240)])
    assert tiers == {"early": 10, "late": 240}
    allow = acnp("allow", 1, [{"action": "Allow"}], tier="early")
    drop = acnp("drop", 1, [{"action": "Drop"}], tier="securityops")
    assert PolicyEngine(CLUSTER, [], [allow, drop], tiers=[tier("early", 10)]).verdict("x/a", "y/a", 80).allowed
    late = acnp("allow", 1, [{"action": "Allow"}], tier="late")
    assert not PolicyEngine(CLUSTER, [], [late, drop], tiers=tiers).verdict("x/a", "y/a", 80).allowed


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ([tier("t", 251)], "reserved"),
        ([tier("t", 250)], "overlaps"),
        ([tier("t", 100)], "overlaps"),  # securityops
        ([tier("a", 10), tier("b", 10)], "overlaps"),
        ([tier("t", 256)], "0 to 255"),
        ([tier(f"t{i}", 1 + i) for i in range(15)], "maximum number of Tiers"),
        ([{"kind": "Tier", "metadata": {"name": "t"}, "spec": {}}], "spec.priority"),
        ([{"kind": "ConfigMap", "metadata": {"name": "t"}}], "not a crd.antrea.io Tier"),
        ([tier("application", 20)], "static"),
    ],
)
def test_tier_limits(objects: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiers_from_objects(objects)
