"""Antrea-native policies (tiers, priorities, Allow / Drop / Reject / Pass, baseline).

Expected matrices are written by hand from Antrea's docs/antrea-network-policy.md:
``Emergency > SecurityOps > NetworkOps > Platform > Application > K8s NetworkPolicy >
Baseline``; first matching rule wins; Pass hands over to K8s policies; baseline rules cannot
override K8s isolation. Layout: x/y/z with pods a/b/c (see test_policy_netpol_cases.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from cni_runbook.policy import AntreaPolicy, PolicyEngine, Probe, default_layout, naive_verdict
from cni_runbook.policy import matrix as M

CLUSTER = default_layout().cluster()
NS = "kubernetes.io/metadata.name"
X_A = {"podSelector": {"matchLabels": {"pod": "a"}}, "namespaceSelector": {"matchLabels": {NS: "x"}}}
IN_X = {"namespaceSelector": {"matchLabels": {NS: "x"}}}


def acnp(name: str, tier: str, priority: float, applied_to: list[dict[str, Any]], **rules: Any) -> dict[str, Any]:
    return {
        "apiVersion": "crd.antrea.io/v1beta1",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": tier, "priority": priority, "appliedTo": applied_to, **rules},
    }


def netpol(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def check(policies: list[dict[str, Any]], antrea: list[dict[str, Any]], table: str, port: int = 80) -> None:
    expected = M.from_notation(table)
    engine = PolicyEngine(CLUSTER, policies, antrea)
    got = engine.matrix(port)
    result = M.compare(expected, got, ignore_loopback=False)
    assert result.incorrect == 0, (
        f"{result.summary}\nexpected:\n{M.render(expected)}\ngot:\n{M.render(got)}\n"
        + "\n".join("\n".join(engine.explain(s, d, port)) for s, d in result.mismatches)
    )
    for src in CLUSTER.pod_keys:
        for dst in CLUSTER.pod_keys:
            assert naive_verdict(CLUSTER, policies, Probe(src, dst, port), antrea)[0].allowed == bool(
                expected.at[src, dst]
            )


def test_drop_in_securityops_beats_allow_in_application_which_beats_k8s_deny() -> None:
    antrea = [
        acnp(
            "sec-drop-y",
            "securityops",
            5,
            [X_A],
            ingress=[{"action": "Drop", "from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}]}],
        ),
        acnp("app-allow-all", "application", 1, [X_A], ingress=[{"action": "Allow"}]),
    ]
    k8s = [netpol("deny-all", "x", podSelector={}, policyTypes=["Ingress"])]
    check(
        k8s,
        antrea,
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  .   X   X   .   .   .   .   .   .
        x/b  .   X   X   .   .   .   .   .   .
        x/c  .   X   X   .   .   .   .   .   .
        y/a  X   X   X   .   .   .   .   .   .
        y/b  X   X   X   .   .   .   .   .   .
        y/c  X   X   X   .   .   .   .   .   .
        z/a  .   X   X   .   .   .   .   .   .
        z/b  .   X   X   .   .   .   .   .   .
        z/c  .   X   X   .   .   .   .   .   .
        """,
    )
    reasons = PolicyEngine(CLUSTER, k8s, antrea).explain("y/b", "x/a", 80)
    assert reasons[0] == "y/b -> x/a TCP/80: blocked"
    assert any("dropped by Antrea acnp sec-drop-y (tier securityops, priority 5)" in r for r in reasons)


PASS = acnp(
    "sec-pass-y",
    "securityops",
    1,
    [IN_X],
    ingress=[{"action": "Pass", "from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}]}],
)
DROP_ALL_TO_X = acnp("app-drop-all", "application", 1, [IN_X], ingress=[{"action": "Drop"}])


def test_pass_delegates_to_kubernetes_policies() -> None:
    allow_y_to_a = netpol(
        "a-from-y",
        "x",
        podSelector={"matchLabels": {"pod": "a"}},
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}]}],
    )
    # y -> x/a: Pass, K8s isolates x/a and allows y. y -> x/b, x/c: Pass, not isolated -> allowed.
    # Everything else to x hits the application-tier Drop.
    check(
        [allow_y_to_a],
        [PASS, DROP_ALL_TO_X],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   .   .   .   .   .   .
        x/b  X   X   X   .   .   .   .   .   .
        x/c  X   X   X   .   .   .   .   .   .
        y/a  .   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  X   X   X   .   .   .   .   .   .
        z/b  X   X   X   .   .   .   .   .   .
        z/c  X   X   X   .   .   .   .   .   .
        """,
    )
    allow_z_to_a = netpol(
        "a-from-z",
        "x",
        podSelector={"matchLabels": {"pod": "a"}},
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {NS: "z"}}}]}],
    )
    # Now K8s isolates x/a but does not allow y: the passed traffic is denied by K8s.
    check(
        [allow_z_to_a],
        [PASS, DROP_ALL_TO_X],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   .   .   .   .   .   .
        x/b  X   X   X   .   .   .   .   .   .
        x/c  X   X   X   .   .   .   .   .   .
        y/a  X   .   .   .   .   .   .   .   .
        y/b  X   .   .   .   .   .   .   .   .
        y/c  X   .   .   .   .   .   .   .   .
        z/a  X   X   X   .   .   .   .   .   .
        z/b  X   X   X   .   .   .   .   .   .
        z/c  X   X   X   .   .   .   .   .   .
        """,
    )
    reasons = PolicyEngine(CLUSTER, [allow_z_to_a], [PASS, DROP_ALL_TO_X]).explain("y/a", "x/a", 80)
    assert any("passes the decision to Kubernetes policies" in r for r in reasons)
    assert any("isolated by x/a-from-z" in r for r in reasons)


def test_baseline_tier_applies_only_when_no_k8s_policy_isolates() -> None:
    baseline = acnp(
        "default-ns-isolation",
        "baseline",
        10,
        [{"namespaceSelector": {}}],
        ingress=[
            {"action": "Allow", "from": [{"namespaces": {"match": "Self"}}]},
            {"action": "Drop", "from": [{"namespaceSelector": {}}]},
        ],
    )
    y_a_from_x = netpol(
        "a-from-x",
        "y",
        podSelector={"matchLabels": {"pod": "a"}},
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {NS: "x"}}}]}],
    )
    check(
        [y_a_from_x],
        [baseline],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  .   .   .   .   X   X   X   X   X
        x/b  .   .   .   .   X   X   X   X   X
        x/c  .   .   .   .   X   X   X   X   X
        y/a  X   X   X   X   .   .   X   X   X
        y/b  X   X   X   X   .   .   X   X   X
        y/c  X   X   X   X   .   .   X   X   X
        z/a  X   X   X   X   X   X   .   .   .
        z/b  X   X   X   X   X   X   .   .   .
        z/c  X   X   X   X   X   X   .   .   .
        """,
    )


ALLOW_Y_TO_X_A = [{"action": "Allow", "from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}]}]
X_A_ONLY_FROM_Y = """
    x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a  X   .   .   .   .   .   .   .   .
x/b  X   .   .   .   .   .   .   .   .
x/c  X   .   .   .   .   .   .   .   .
y/a  .   .   .   .   .   .   .   .   .
y/b  .   .   .   .   .   .   .   .   .
y/c  .   .   .   .   .   .   .   .   .
z/a  X   .   .   .   .   .   .   .   .
z/b  X   .   .   .   .   .   .   .   .
z/c  X   .   .   .   .   .   .   .   .
"""
X_A_CLOSED = """
    x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a  X   .   .   .   .   .   .   .   .
x/b  X   .   .   .   .   .   .   .   .
x/c  X   .   .   .   .   .   .   .   .
y/a  X   .   .   .   .   .   .   .   .
y/b  X   .   .   .   .   .   .   .   .
y/c  X   .   .   .   .   .   .   .   .
z/a  X   .   .   .   .   .   .   .   .
z/b  X   .   .   .   .   .   .   .   .
z/c  X   .   .   .   .   .   .   .   .
"""


def test_priorities_within_a_tier() -> None:
    drop = acnp("drop-all", "application", 2, [X_A], ingress=[{"action": "Drop"}])
    check([], [drop, acnp("allow-y", "application", 1, [X_A], ingress=ALLOW_Y_TO_X_A)], X_A_ONLY_FROM_Y)
    check([], [drop, acnp("allow-y", "application", 3, [X_A], ingress=ALLOW_Y_TO_X_A)], X_A_CLOSED)


def test_rules_within_a_policy_apply_in_written_order() -> None:
    ordered_rules = acnp("ordered", "application", 1, [X_A], ingress=ALLOW_Y_TO_X_A + [{"action": "Drop"}])
    check([], [ordered_rules], X_A_ONLY_FROM_Y)
    reversed_rules = acnp("reversed", "application", 1, [X_A], ingress=[{"action": "Drop"}] + ALLOW_Y_TO_X_A)
    check([], [reversed_rules], X_A_CLOSED)


def test_reject_is_reported_as_blocked() -> None:
    reject = acnp(
        "reject-z-to-x",
        "securityops",
        1,
        [{"namespaceSelector": {"matchLabels": {NS: "z"}}}],
        egress=[{"action": "Reject", "to": [{"namespaceSelector": {"matchLabels": {NS: "x"}}}]}],
    )
    engine = PolicyEngine(CLUSTER, [], [reject])
    verdict = engine.verdict("z/a", "x/b", 80)
    assert (verdict.allowed, verdict.egress_allowed, verdict.ingress_allowed, verdict.rejected) == (
        False,
        False,
        True,
        True,
    )
    assert engine.verdict("z/a", "y/b", 80).rejected is False
    assert not engine.matrix(80).loc["z/c", "x/a"]
    assert any("rejected by Antrea acnp reject-z-to-x" in r for r in engine.explain("z/a", "x/b", 80))
    assert engine.explain("z/a", "x/b", 80)[0].endswith("blocked (rejected)")


def test_annp_pod_selector_is_namespace_scoped_while_acnp_is_cluster_wide() -> None:
    drop_b = [{"action": "Drop", "from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]
    annp = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "drop-b", "namespace": "x"},
        "spec": {"priority": 1, "appliedTo": [{"podSelector": {"matchLabels": {"pod": "a"}}}], "ingress": drop_b},
    }
    engine = PolicyEngine(CLUSTER, [], [annp])
    assert [s for s in CLUSTER.pod_keys if not engine.verdict(s, "x/a", 80).allowed] == ["x/b"]
    cluster_wide = PolicyEngine(CLUSTER, [], [acnp("drop-b", "application", 1, [X_A], ingress=drop_b)])
    assert [s for s in CLUSTER.pod_keys if not cluster_wide.verdict(s, "x/a", 80).allowed] == ["x/b", "y/b", "z/b"]


def test_egress_drop_to_external_cidr() -> None:
    drop = acnp(
        "no-dns-google",
        "platform",
        1,
        [IN_X],
        egress=[
            {"action": "Drop", "to": [{"ipBlock": {"cidr": "8.8.8.0/24"}}], "ports": [{"protocol": "UDP", "port": 53}]}
        ],
    )
    engine = PolicyEngine(CLUSTER, [], [drop])
    assert not engine.verdict("x/a", "8.8.8.8", 53, "UDP").allowed
    assert engine.verdict("x/a", "8.8.8.8", 53, "TCP").allowed
    assert engine.verdict("y/a", "8.8.8.8", 53, "UDP").allowed


def test_custom_tier_priority_orders_against_static_tiers() -> None:
    allow = acnp("early-allow", "mytier", 1, [X_A], ingress=[{"action": "Allow"}])
    drop = acnp("sec-drop", "securityops", 1, [X_A], ingress=[{"action": "Drop"}])
    assert PolicyEngine(CLUSTER, [], [allow, drop], tiers={"mytier": 10}).verdict("y/a", "x/a", 80).allowed
    assert not PolicyEngine(CLUSTER, [], [allow, drop], tiers={"mytier": 120}).verdict("y/a", "x/a", 80).allowed


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (acnp("p", "baseline", 1, [X_A], ingress=[{"action": "Pass"}]), "Pass is not allowed in the baseline tier"),
        (acnp("p", "nosuchtier", 1, [X_A], ingress=[{"action": "Drop"}]), "unknown tier"),
        (
            {"kind": "ClusterNetworkPolicy", "metadata": {"name": "p"}, "spec": {"appliedTo": [X_A]}},
            "priority is mandatory",
        ),
        (acnp("p", "application", 1, [X_A], ingress=[{"action": "Deny"}]), "rule action"),
        (acnp("p", "application", 1, [X_A], ingress=[{"action": "Drop", "from": [{"group": "g"}]}]), "not modelled"),
        (
            acnp(
                "p",
                "application",
                1,
                [X_A],
                egress=[{"action": "Drop", "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.1.0.0/16"]}}]}],
            ),
            "strict subset",
        ),
        (
            {
                "kind": "NetworkPolicy",
                "metadata": {"name": "p", "namespace": "x"},
                "spec": {"priority": 1, "appliedTo": [IN_X]},
            },
            "namespaceSelector in appliedTo",
        ),
        (
            {
                "kind": "ClusterNetworkPolicy",
                "metadata": {"name": "p"},
                "spec": {"priority": 1, "ingress": [{"action": "Drop"}]},
            },
            "appliedTo must be set",
        ),
    ],
)
def test_invalid_antrea_policies_are_rejected(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AntreaPolicy.from_dict(obj)
