"""Truth-table cases modelled on the upstream netpol e2e suite
(kubernetes/kubernetes test/e2e/network/netpol/network_policy.go).

Every expected matrix below was written by hand from the Kubernetes NetworkPolicy
documentation, not produced by the engine. Layout: namespaces x, y, z (label ``ns=<name>``
plus ``kubernetes.io/metadata.name``), pods a, b, c (label ``pod=<name>``), each serving
80 and 81 on TCP, UDP and SCTP through container ports named ``serve-<port>-<proto>``.
Synthetic pod IPs: x/a 10.244.0.1, x/b .2, x/c .3, y/a .4, y/b .5, y/c .6, z/a .7, z/b .8,
z/c .9. Rows are sources, columns destinations; "." allowed, "X" blocked. Loopback cells
are written out too (the engine applies the rules to them like to any other pair).
"""

from __future__ import annotations

from typing import Any

import pytest
from cni_runbook.policy import PolicyEngine, Probe, default_layout, naive_verdict
from cni_runbook.policy import matrix as M

CLUSTER = default_layout().cluster()
NS = "kubernetes.io/metadata.name"
ALL_OPEN = """
    x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a  .   .   .   .   .   .   .   .   .
x/b  .   .   .   .   .   .   .   .   .
x/c  .   .   .   .   .   .   .   .   .
y/a  .   .   .   .   .   .   .   .   .
y/b  .   .   .   .   .   .   .   .   .
y/c  .   .   .   .   .   .   .   .   .
z/a  .   .   .   .   .   .   .   .   .
z/b  .   .   .   .   .   .   .   .   .
z/c  .   .   .   .   .   .   .   .   .
"""


def netpol(name: str, namespace: str = "x", **spec: Any) -> dict[str, Any]:
    spec = {
        ("podSelector" if k == "pod_selector" else "policyTypes" if k == "policy_types" else k): v
        for k, v in spec.items()
    }
    spec.setdefault("podSelector", {})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pod(name: str) -> dict[str, Any]:
    return {"matchLabels": {"pod": name}}


def check(policies: list[dict[str, Any]], table: str, port: int = 80, protocol: str = "TCP") -> None:
    """Engine matrix == hand-written table (all 81 cells); the naive evaluator agrees."""
    expected = M.from_notation(table)
    engine = PolicyEngine(CLUSTER, policies)
    got = engine.matrix(port, protocol)
    result = M.compare(expected, got, ignore_loopback=False)
    assert result.incorrect == 0, (
        f"{result.summary} on {protocol}/{port}\nexpected:\n{M.render(expected)}\ngot:\n{M.render(got)}\n"
        + "\n".join("\n".join(engine.explain(s, d, port, protocol)) for s, d in result.mismatches)
    )
    assert result.correct == 81
    for src in CLUSTER.pod_keys:
        for dst in CLUSTER.pod_keys:
            verdict, _ = naive_verdict(CLUSTER, policies, Probe(src, dst, port, protocol))
            assert verdict.allowed == bool(expected.at[src, dst]), (src, dst)


def test_should_support_a_default_deny_ingress_policy() -> None:
    check(
        [netpol("deny-ingress", policy_types=["Ingress"])],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   .   .   .   .   .   .
        x/b  X   X   X   .   .   .   .   .   .
        x/c  X   X   X   .   .   .   .   .   .
        y/a  X   X   X   .   .   .   .   .   .
        y/b  X   X   X   .   .   .   .   .   .
        y/c  X   X   X   .   .   .   .   .   .
        z/a  X   X   X   .   .   .   .   .   .
        z/b  X   X   X   .   .   .   .   .   .
        z/c  X   X   X   .   .   .   .   .   .
        """,
    )


def test_should_support_a_default_deny_all_policy() -> None:
    check(
        [netpol("deny-all", policy_types=["Ingress", "Egress"])],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   X   X   X   X   X   X
        x/b  X   X   X   X   X   X   X   X   X
        x/c  X   X   X   X   X   X   X   X   X
        y/a  X   X   X   .   .   .   .   .   .
        y/b  X   X   X   .   .   .   .   .   .
        y/c  X   X   X   .   .   .   .   .   .
        z/a  X   X   X   .   .   .   .   .   .
        z/b  X   X   X   .   .   .   .   .   .
        z/c  X   X   X   .   .   .   .   .   .
        """,
    )


X_A_FROM_X_B_ONLY = """
    x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a  X   .   .   .   .   .   .   .   .
x/b  .   .   .   .   .   .   .   .   .
x/c  X   .   .   .   .   .   .   .   .
y/a  X   .   .   .   .   .   .   .   .
y/b  X   .   .   .   .   .   .   .   .
y/c  X   .   .   .   .   .   .   .   .
z/a  X   .   .   .   .   .   .   .   .
z/b  X   .   .   .   .   .   .   .   .
z/c  X   .   .   .   .   .   .   .   .
"""


def test_should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_podselector() -> None:
    check(
        [netpol("x-a-allows-x-b", pod_selector=pod("a"), ingress=[{"from": [{"podSelector": pod("b")}]}])],
        X_A_FROM_X_B_ONLY,
    )


def test_should_enforce_policy_based_on_podselector_with_matchexpressions() -> None:
    selector = {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}
    check(
        [netpol("x-a-allows-x-b", pod_selector=pod("a"), ingress=[{"from": [{"podSelector": selector}]}])],
        X_A_FROM_X_B_ONLY,
    )


def test_should_enforce_policy_to_allow_ingress_traffic_for_a_target() -> None:
    check(
        [
            netpol("deny-all", policy_types=["Ingress"]),
            netpol(
                "allow-all-to-a",
                pod_selector=pod("a"),
                ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}],
            ),
        ],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  .   X   X   .   .   .   .   .   .
        x/b  .   X   X   .   .   .   .   .   .
        x/c  .   X   X   .   .   .   .   .   .
        y/a  .   X   X   .   .   .   .   .   .
        y/b  .   X   X   .   .   .   .   .   .
        y/c  .   X   X   .   .   .   .   .   .
        z/a  .   X   X   .   .   .   .   .   .
        z/b  .   X   X   .   .   .   .   .   .
        z/c  .   X   X   .   .   .   .   .   .
        """,
    )


def test_should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces() -> None:
    check(
        [
            netpol(
                "allow-from-another-ns",
                pod_selector=pod("a"),
                ingress=[{"from": [{"namespaceSelector": {"matchLabels": {}}}]}],
            )
        ],
        ALL_OPEN,
    )


X_A_FROM_Y_ONLY = """
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


def test_should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespaceselector() -> None:
    check(
        [
            netpol(
                "allow-y",
                pod_selector=pod("a"),
                ingress=[{"from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}]}],
            )
        ],
        X_A_FROM_Y_ONLY,
    )


def test_should_enforce_policy_based_on_namespaceselector_with_matchexpressions() -> None:
    selector = {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y"]}]}
    check(
        [netpol("allow-y", pod_selector=pod("a"), ingress=[{"from": [{"namespaceSelector": selector}]}])],
        X_A_FROM_Y_ONLY,
    )


def test_should_enforce_policy_based_on_podselector_or_namespaceselector() -> None:
    not_x = {"matchExpressions": [{"key": NS, "operator": "NotIn", "values": ["x"]}]}
    check(
        [
            netpol(
                "or",
                pod_selector=pod("a"),
                ingress=[{"from": [{"namespaceSelector": not_x}, {"podSelector": pod("b")}]}],
            )
        ],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   .   .   .   .   .   .   .   .
        x/b  .   .   .   .   .   .   .   .   .
        x/c  X   .   .   .   .   .   .   .   .
        y/a  .   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  .   .   .   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  .   .   .   .   .   .   .   .   .
        """,
    )


def test_should_enforce_policy_based_on_podselector_and_namespaceselector() -> None:
    not_x = {"matchExpressions": [{"key": NS, "operator": "NotIn", "values": ["x"]}]}
    check(
        [
            netpol(
                "and",
                pod_selector=pod("a"),
                ingress=[{"from": [{"namespaceSelector": not_x, "podSelector": pod("b")}]}],
            )
        ],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   .   .   .   .   .   .   .   .
        x/b  X   .   .   .   .   .   .   .   .
        x/c  X   .   .   .   .   .   .   .   .
        y/a  X   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  X   .   .   .   .   .   .   .   .
        z/a  X   .   .   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  X   .   .   .   .   .   .   .   .
        """,
    )


def test_should_enforce_policy_based_on_multiple_podselectors_and_namespaceselectors() -> None:
    not_x = {"matchExpressions": [{"key": NS, "operator": "NotIn", "values": ["x"]}]}
    b_or_c = {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}
    check(
        [
            netpol(
                "multi",
                pod_selector=pod("a"),
                ingress=[{"from": [{"namespaceSelector": not_x, "podSelector": b_or_c}]}],
            )
        ],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   .   .   .   .   .   .   .   .
        x/b  X   .   .   .   .   .   .   .   .
        x/c  X   .   .   .   .   .   .   .   .
        y/a  X   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  X   .   .   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  .   .   .   .   .   .   .   .   .
        """,
    )


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


def test_should_enforce_policy_based_on_ports() -> None:
    policies = [
        netpol(
            "allow-y-on-81",
            pod_selector=pod("a"),
            ingress=[
                {
                    "from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}],
                    "ports": [{"port": 81, "protocol": "TCP"}],
                }
            ],
        )
    ]
    check(policies, X_A_CLOSED, port=80)
    check(policies, X_A_FROM_Y_ONLY, port=81)


def test_multiple_stacked_policies_are_additive() -> None:
    from_y = [{"namespaceSelector": {"matchLabels": {NS: "y"}}}]
    policies = [
        netpol("allow-y-on-81", pod_selector=pod("a"), ingress=[{"from": from_y, "ports": [{"port": 81}]}]),
        netpol("allow-y-on-80", pod_selector=pod("a"), ingress=[{"from": from_y, "ports": [{"port": 80}]}]),
    ]
    check(policies, X_A_FROM_Y_ONLY, port=80)
    check(policies, X_A_FROM_Y_ONLY, port=81)


X_CLOSED_TO_ALL = """
    x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a  X   X   X   .   .   .   .   .   .
x/b  X   X   X   .   .   .   .   .   .
x/c  X   X   X   .   .   .   .   .   .
y/a  X   X   X   .   .   .   .   .   .
y/b  X   X   X   .   .   .   .   .   .
y/c  X   X   X   .   .   .   .   .   .
z/a  X   X   X   .   .   .   .   .   .
z/b  X   X   X   .   .   .   .   .   .
z/c  X   X   X   .   .   .   .   .   .
"""


def test_should_allow_ingress_access_on_one_named_port() -> None:
    policies = [netpol("allow-serve-81", ingress=[{"ports": [{"port": "serve-81-tcp"}]}])]
    check(policies, X_CLOSED_TO_ALL, port=80)
    check(policies, ALL_OPEN, port=81)


def test_should_allow_ingress_access_from_namespace_on_one_named_port() -> None:
    policies = [
        netpol(
            "allow-y-serve-80",
            ingress=[
                {
                    "from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}],
                    "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}],
                }
            ],
        )
    ]
    check(
        policies,
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
        port=80,
    )
    check(policies, X_CLOSED_TO_ALL, port=81)


def test_named_port_with_wrong_protocol_does_not_match() -> None:
    # "serve-80-tcp" is a TCP container port; a UDP policy port of that name resolves to nothing.
    policies = [netpol("udp-name", ingress=[{"ports": [{"port": "serve-80-tcp", "protocol": "UDP"}]}])]
    check(policies, X_CLOSED_TO_ALL, port=80, protocol="TCP")
    check(policies, X_CLOSED_TO_ALL, port=80, protocol="UDP")


X_SENDS_NOTHING = """
    x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a  X   X   X   X   X   X   X   X   X
x/b  X   X   X   X   X   X   X   X   X
x/c  X   X   X   X   X   X   X   X   X
y/a  .   .   .   .   .   .   .   .   .
y/b  .   .   .   .   .   .   .   .   .
y/c  .   .   .   .   .   .   .   .   .
z/a  .   .   .   .   .   .   .   .   .
z/b  .   .   .   .   .   .   .   .   .
z/c  .   .   .   .   .   .   .   .   .
"""


def test_should_allow_egress_access_on_one_named_port() -> None:
    # Named egress ports resolve against the destination pod's container ports.
    policies = [netpol("egress-serve-80", policy_types=["Egress"], egress=[{"ports": [{"port": "serve-80-tcp"}]}])]
    check(policies, ALL_OPEN, port=80)
    check(policies, X_SENDS_NOTHING, port=81)


def test_should_deny_ingress_from_pods_on_other_namespaces() -> None:
    check(
        [netpol("deny-other-ns", ingress=[{"from": [{"podSelector": {}}]}])],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  .   .   .   .   .   .   .   .   .
        x/b  .   .   .   .   .   .   .   .   .
        x/c  .   .   .   .   .   .   .   .   .
        y/a  X   X   X   .   .   .   .   .   .
        y/b  X   X   X   .   .   .   .   .   .
        y/c  X   X   X   .   .   .   .   .   .
        z/a  X   X   X   .   .   .   .   .   .
        z/b  X   X   X   .   .   .   .   .   .
        z/c  X   X   X   .   .   .   .   .   .
        """,
    )


def test_should_deny_egress_from_pods_based_on_podselector() -> None:
    check(
        [netpol("deny-egress-a", pod_selector=pod("a"), policy_types=["Egress"])],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   X   X   X   X   X   X
        x/b  .   .   .   .   .   .   .   .   .
        x/c  .   .   .   .   .   .   .   .   .
        y/a  .   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  .   .   .   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  .   .   .   .   .   .   .   .   .
        """,
    )


def test_should_deny_egress_from_all_pods_in_a_namespace() -> None:
    check([netpol("deny-egress", policy_types=["Egress"])], X_SENDS_NOTHING)


def test_should_work_with_ingress_egress_specified_together() -> None:
    check(
        [
            netpol(
                "both",
                pod_selector=pod("a"),
                policy_types=["Ingress", "Egress"],
                ingress=[{"from": [{"podSelector": pod("b")}]}],
                egress=[{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
            )
        ],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   .   .   .   X   X   X
        x/b  .   .   .   .   .   .   .   .   .
        x/c  X   .   .   .   .   .   .   .   .
        y/a  X   .   .   .   .   .   .   .   .
        y/b  X   .   .   .   .   .   .   .   .
        y/c  X   .   .   .   .   .   .   .   .
        z/a  X   .   .   .   .   .   .   .   .
        z/b  X   .   .   .   .   .   .   .   .
        z/c  X   .   .   .   .   .   .   .   .
        """,
    )


def test_should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_allows_it() -> None:
    check(
        [
            netpol(
                "x-a-only-to-y-a",
                pod_selector=pod("a"),
                policy_types=["Egress"],
                egress=[{"to": [{"namespaceSelector": {"matchLabels": {NS: "y"}}, "podSelector": pod("a")}]}],
            ),
            netpol(
                "z-b-only-from-x-a",
                namespace="z",
                pod_selector=pod("b"),
                ingress=[{"from": [{"namespaceSelector": {"matchLabels": {NS: "x"}}, "podSelector": pod("a")}]}],
            ),
        ],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   .   X   X   X   X   X
        x/b  .   .   .   .   .   .   .   X   .
        x/c  .   .   .   .   .   .   .   X   .
        y/a  .   .   .   .   .   .   .   X   .
        y/b  .   .   .   .   .   .   .   X   .
        y/c  .   .   .   .   .   .   .   X   .
        z/a  .   .   .   .   .   .   .   X   .
        z/b  .   .   .   .   .   .   .   X   .
        z/c  .   .   .   .   .   .   .   X   .
        """,
    )


def test_should_enforce_egress_policy_to_a_namespace_on_a_port() -> None:
    policies = [
        netpol(
            "egress-y-80",
            policy_types=["Egress"],
            egress=[{"to": [{"namespaceSelector": {"matchLabels": {NS: "y"}}}], "ports": [{"port": 80}]}],
        )
    ]
    check(
        policies,
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   .   .   .   X   X   X
        x/b  X   X   X   .   .   .   X   X   X
        x/c  X   X   X   .   .   .   X   X   X
        y/a  .   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  .   .   .   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  .   .   .   .   .   .   .   .   .
        """,
        port=80,
    )
    check(policies, X_SENDS_NOTHING, port=81)


def test_deny_egress_to_namespace_z_except_dns() -> None:
    not_z = {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["z"]}]}
    policies = [
        netpol(
            "no-z-but-dns",
            policy_types=["Egress"],
            egress=[
                {"to": [{"namespaceSelector": not_z}]},
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            ],
        )
    ]
    check(
        policies,
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  .   .   .   .   .   .   X   X   X
        x/b  .   .   .   .   .   .   X   X   X
        x/c  .   .   .   .   .   .   X   X   X
        y/a  .   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  .   .   .   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  .   .   .   .   .   .   .   .   .
        """,
    )
    check(policies, ALL_OPEN, port=53, protocol="UDP")
    engine = PolicyEngine(CLUSTER, policies)
    assert engine.verdict("x/a", "8.8.8.8", 53, "UDP").allowed
    assert not engine.verdict("x/a", "8.8.8.8", 443).allowed


def test_should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol() -> None:
    policies = [netpol("udp-any-port", pod_selector=pod("a"), ingress=[{"ports": [{"protocol": "UDP"}]}])]
    check(policies, X_A_CLOSED, port=80, protocol="TCP")
    check(policies, ALL_OPEN, port=80, protocol="UDP")
    check(policies, ALL_OPEN, port=81, protocol="UDP")


def test_should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp() -> None:
    policies = [netpol("udp-81", pod_selector=pod("a"), ingress=[{"ports": [{"protocol": "UDP", "port": 81}]}])]
    check(policies, X_A_CLOSED, port=81, protocol="TCP")
    check(policies, ALL_OPEN, port=81, protocol="UDP")
    check(policies, X_A_CLOSED, port=80, protocol="UDP")


def test_should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp() -> None:
    policies = [netpol("sctp-80", pod_selector=pod("a"), ingress=[{"ports": [{"protocol": "SCTP", "port": 80}]}])]
    check(policies, X_A_CLOSED, port=80, protocol="TCP")
    check(policies, ALL_OPEN, port=80, protocol="SCTP")


def test_should_support_endport_ranges() -> None:
    policies = [netpol("range", ingress=[{"ports": [{"port": 81, "endPort": 90}]}])]
    check(policies, X_CLOSED_TO_ALL, port=80)
    check(policies, ALL_OPEN, port=81)
    check(policies, ALL_OPEN, port=90)
    check(policies, X_CLOSED_TO_ALL, port=91)


def test_should_allow_egress_access_to_server_in_cidr_block() -> None:
    check(
        [
            netpol(
                "to-y-b",
                pod_selector=pod("a"),
                policy_types=["Egress"],
                egress=[{"to": [{"ipBlock": {"cidr": "10.244.0.5/32"}}]}],
            )
        ],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   X   .   X   X   X   X
        x/b  .   .   .   .   .   .   .   .   .
        x/c  .   .   .   .   .   .   .   .   .
        y/a  .   .   .   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  .   .   .   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  .   .   .   .   .   .   .   .   .
        """,
    )


X_A_NOT_TO_Y_B = """
    x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a  .   .   .   .   X   .   .   .   .
x/b  .   .   .   .   .   .   .   .   .
x/c  .   .   .   .   .   .   .   .   .
y/a  .   .   .   .   .   .   .   .   .
y/b  .   .   .   .   .   .   .   .   .
y/c  .   .   .   .   .   .   .   .   .
z/a  .   .   .   .   .   .   .   .   .
z/b  .   .   .   .   .   .   .   .   .
z/c  .   .   .   .   .   .   .   .   .
"""


def test_should_enforce_except_clause_while_egress_access_to_server_in_cidr_block() -> None:
    block = {"cidr": "10.244.0.0/24", "except": ["10.244.0.5/32"]}
    check(
        [netpol("except-y-b", pod_selector=pod("a"), policy_types=["Egress"], egress=[{"to": [{"ipBlock": block}]}])],
        X_A_NOT_TO_Y_B,
    )


def test_should_ensure_an_ip_overlapping_both_ipblock_cidr_and_except_is_allowed() -> None:
    block = {"cidr": "10.244.0.0/24", "except": ["10.244.0.5/32"]}
    policies = [
        netpol("except-y-b", pod_selector=pod("a"), policy_types=["Egress"], egress=[{"to": [{"ipBlock": block}]}]),
        netpol(
            "only-y-b",
            pod_selector=pod("a"),
            policy_types=["Egress"],
            egress=[{"to": [{"ipBlock": {"cidr": "10.244.0.5/32"}}]}],
        ),
    ]
    check(policies[:1], X_A_NOT_TO_Y_B)
    check(policies, ALL_OPEN)


def test_ingress_from_ipblock_with_except() -> None:
    # 10.244.0.0/29 covers .0-.7 (x/a..z/a); except y/a (.4). z/b (.8) and z/c (.9) are outside.
    block = {"cidr": "10.244.0.0/29", "except": ["10.244.0.4/32"]}
    check(
        [netpol("from-block", ingress=[{"from": [{"ipBlock": block}]}])],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  .   .   .   .   .   .   .   .   .
        x/b  .   .   .   .   .   .   .   .   .
        x/c  .   .   .   .   .   .   .   .   .
        y/a  X   X   X   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  .   .   .   .   .   .   .   .   .
        z/b  X   X   X   .   .   .   .   .   .
        z/c  X   X   X   .   .   .   .   .   .
        """,
    )
    engine = PolicyEngine(CLUSTER, [netpol("from-block", ingress=[{"from": [{"ipBlock": block}]}])])
    assert engine.verdict("10.244.0.6", "x/a", 80).allowed  # y/c by IP
    assert engine.verdict("10.244.0.200", "x/a", 80).allowed is False  # outside /29
    assert engine.verdict("10.244.0.1", "x/b", 80).allowed  # x/a by IP


def test_a_policy_selecting_no_pods_changes_nothing() -> None:
    check([netpol("nobody", pod_selector=pod("nope"), policy_types=["Ingress", "Egress"])], ALL_OPEN)


def test_should_support_allow_all_policy() -> None:
    check([netpol("allow-all", ingress=[{}])], ALL_OPEN)


def test_empty_from_list_means_all_sources() -> None:
    policies = [netpol("empty-from", ingress=[{"from": [], "ports": [{"port": 80}]}])]
    check(policies, ALL_OPEN, port=80)
    check(policies, X_CLOSED_TO_ALL, port=81)


def test_policy_types_default_adds_egress_when_egress_rules_exist() -> None:
    # No policyTypes: Ingress (no rules -> deny) and Egress (rule: pods in x only).
    check(
        [netpol("implicit-types", pod_selector=pod("a"), egress=[{"to": [{"podSelector": {}}]}])],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   .   .   X   X   X   X   X   X
        x/b  X   .   .   .   .   .   .   .   .
        x/c  X   .   .   .   .   .   .   .   .
        y/a  X   .   .   .   .   .   .   .   .
        y/b  X   .   .   .   .   .   .   .   .
        y/c  X   .   .   .   .   .   .   .   .
        z/a  X   .   .   .   .   .   .   .   .
        z/b  X   .   .   .   .   .   .   .   .
        z/c  X   .   .   .   .   .   .   .   .
        """,
    )


def test_ingress_rules_are_ignored_when_policy_types_is_egress_only() -> None:
    check(
        [
            netpol(
                "egress-only",
                pod_selector=pod("a"),
                policy_types=["Egress"],
                egress=[{}],
                ingress=[{"from": [{"podSelector": pod("b")}]}],
            )
        ],
        ALL_OPEN,
    )


def test_matchexpressions_notin_exists_and_doesnotexist() -> None:
    nobody = {"matchExpressions": [{"key": "pod", "operator": "DoesNotExist"}]}
    check([netpol("nobody-allowed", ingress=[{"from": [{"podSelector": nobody}]}])], X_CLOSED_TO_ALL)
    not_a = {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]}
    any_ns = {"matchExpressions": [{"key": "ns", "operator": "Exists"}]}
    check(
        [netpol("not-a", ingress=[{"from": [{"podSelector": not_a, "namespaceSelector": any_ns}]}])],
        """
            x/a x/b x/c y/a y/b y/c z/a z/b z/c
        x/a  X   X   X   .   .   .   .   .   .
        x/b  .   .   .   .   .   .   .   .   .
        x/c  .   .   .   .   .   .   .   .   .
        y/a  X   X   X   .   .   .   .   .   .
        y/b  .   .   .   .   .   .   .   .   .
        y/c  .   .   .   .   .   .   .   .   .
        z/a  X   X   X   .   .   .   .   .   .
        z/b  .   .   .   .   .   .   .   .   .
        z/c  .   .   .   .   .   .   .   .   .
        """,
    )


@pytest.mark.parametrize("order", [0, 1])
def test_multiple_ingress_policies_with_allow_all_taking_precedence(order: int) -> None:
    policies = [
        netpol(
            "only-from-y-b",
            pod_selector=pod("a"),
            ingress=[{"from": [{"namespaceSelector": {"matchLabels": {NS: "y"}}, "podSelector": pod("b")}]}],
        ),
        netpol("allow-all-to-a", pod_selector=pod("a"), ingress=[{}]),
    ]
    check(policies[::-1] if order else policies, ALL_OPEN)
