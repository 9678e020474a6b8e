"""Model parsing and validation, matrix helpers, layouts and built-in scenarios."""

from __future__ import annotations

import ipaddress
from typing import Any

import pandas as pd
import pytest
from cni_runbook.policy import (
    Cluster,
    LabelSelector,
    NetworkPolicy,
    PolicyEngine,
    Probe,
    builtin_scenarios,
    default_layout,
    explain,
    layout_from_dict,
    reachability,
)
from cni_runbook.policy import matrix as M
from cni_runbook.policy.model import IPBlock, Namespace, Peer, Pod, PortSpec

CLUSTER = default_layout().cluster()


# ----------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "1"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, {"app": "db"}, True),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, {}, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {"app": "web"}, False),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": ""}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": ""}, False),
        ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ],
)
def test_label_selector_semantics(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.from_dict(selector).matches(labels) is expected


@pytest.mark.parametrize(
    "expression",
    [
        {"key": "a", "operator": "Equals", "values": ["1"]},
        {"key": "a", "operator": "In", "values": []},
        {"key": "a", "operator": "Exists", "values": ["1"]},
    ],
)
def test_invalid_match_expressions_are_rejected(expression: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LabelSelector.from_dict({"matchExpressions": [expression]})


# ----------------------------------------------------------------------------- objects


def test_namespace_gets_the_metadata_name_label() -> None:
    ns = Namespace.from_object({"metadata": {"name": "shop", "labels": {"team": "web"}}})
    assert ns.labels == {"team": "web", "kubernetes.io/metadata.name": "shop"}


def test_pod_from_object_reads_ips_and_ports() -> None:
    pod = Pod.from_object(
        {
            "metadata": {"name": "p", "namespace": "n", "labels": {"app": "x"}},
            "spec": {
                "containers": [
                    {"ports": [{"name": "http", "containerPort": 8080}]},
                    {"ports": [{"containerPort": 53, "protocol": "UDP"}]},
                ]
            },
            "status": {"podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}]},
        }
    )
    assert pod.key == "n/p"
    assert pod.ips == (ipaddress.ip_address("10.1.0.5"), ipaddress.ip_address("fd00::5"))
    assert pod.named_port("http", "TCP") == 8080
    assert pod.named_port("http", "UDP") is None
    assert pod.ports[1].protocol == "UDP"


def test_cluster_rejects_pods_in_unknown_namespaces_and_duplicates() -> None:
    with pytest.raises(ValueError, match="unknown namespace"):
        Cluster.from_objects([{"metadata": {"name": "a"}}], [{"metadata": {"name": "p", "namespace": "b"}}])
    with pytest.raises(ValueError, match="duplicate"):
        Cluster.from_objects([{"metadata": {"name": "a"}}], [{"metadata": {"name": "p", "namespace": "a"}}] * 2)


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({}, "must set"),
        ({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, "may not also set"),
        ({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}, "strict subset"),
    ],
)
def test_invalid_peers_are_rejected(peer: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Peer.from_dict(peer)


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ({"port": "http", "endPort": 90}, "numeric port"),
        ({"port": 90, "endPort": 80}, "smaller"),
        ({"port": 70000}, "out of range"),
        ({"protocol": "ICMP", "port": 1}, "unsupported protocol"),
    ],
)
def test_invalid_ports_are_rejected(port: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PortSpec.from_dict(port)


def test_port_spec_defaults_and_matching() -> None:
    spec = PortSpec.from_dict({})
    assert (spec.protocol, spec.port) == ("TCP", None)
    assert spec.matches(1234, "TCP", None) and not spec.matches(1234, "UDP", None)
    assert PortSpec.from_dict({"port": "80"}).port == 80
    named = PortSpec.from_dict({"port": "serve-80-tcp"})
    assert named.matches(80, "TCP", CLUSTER.pod("x/a"))
    assert not named.matches(80, "TCP", None)  # named ports never match a non-pod destination


def test_policy_types_defaulting() -> None:
    only_ingress = NetworkPolicy.from_dict({"metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}}})
    assert only_ingress.policy_types == {"Ingress"}
    with_egress = NetworkPolicy.from_dict({"metadata": {"name": "p", "namespace": "x"}, "spec": {"egress": [{}]}})
    assert with_egress.policy_types == {"Ingress", "Egress"}
    empty_egress_list = NetworkPolicy.from_dict({"metadata": {"name": "p", "namespace": "x"}, "spec": {"egress": []}})
    assert empty_egress_list.policy_types == {"Ingress"}
    with pytest.raises(ValueError, match="policyType"):
        NetworkPolicy.from_dict({"metadata": {"name": "p"}, "spec": {"policyTypes": ["Both"]}})


def test_ipblock_except_and_ipv6() -> None:
    block = IPBlock.from_dict({"cidr": "fd00::/64", "except": ["fd00::/120"]})
    assert block.contains(ipaddress.ip_address("fd00::1:0"))
    assert not block.contains(ipaddress.ip_address("fd00::5"))
    assert not block.contains(ipaddress.ip_address("10.0.0.1"))


# ----------------------------------------------------------------------------- engine API


def test_reachability_returns_a_pandas_friendly_list() -> None:
    deny = {"metadata": {"name": "deny", "namespace": "x"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    verdicts = reachability(
        CLUSTER, [deny], [Probe("y/a", "x/a", 80), ("x/a", "y/a", 80, "UDP"), ("x/a", "1.1.1.1", 443)]
    )
    frame = pd.DataFrame(verdicts)
    assert list(frame.columns) == [
        "src",
        "dst",
        "port",
        "protocol",
        "allowed",
        "egress_allowed",
        "ingress_allowed",
        "rejected",
    ]
    assert frame["allowed"].tolist() == [False, True, True]
    assert frame.loc[0, "ingress_allowed"] == False  # noqa: E712 - numpy bool
    assert frame.loc[1, "protocol"] == "UDP"


def test_probe_endpoints_are_resolved() -> None:
    engine = PolicyEngine(CLUSTER, [])
    assert engine.verdict("10.244.0.1", "x/b", 80).src == "x/a"  # a pod IP becomes the pod
    with pytest.raises(KeyError):
        engine.verdict("x/nope", "x/a", 80)
    with pytest.raises(ValueError, match="neither"):
        engine.verdict("nonsense", "x/a", 80)
    with pytest.raises(ValueError, match="at least one end"):
        engine.verdict("1.1.1.1", "2.2.2.2", 80)


def test_explain_names_the_deciding_policy_and_rule() -> None:
    policies = [
        {"metadata": {"name": "deny-all", "namespace": "x"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
        {
            "metadata": {"name": "a-from-b", "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 81}]}],
            },
        },
    ]
    allowed = explain(CLUSTER, policies, "x/b", "x/a", 81)
    assert allowed[0] == "x/b -> x/a TCP/81: allowed"
    assert (
        "ingress to x/a: allowed by x/a-from-b ingress rule 1 (from namespace x and podSelector pod=b; ports TCP/81)"
        in allowed
    )
    assert "egress from x/b: allowed, not isolated (no NetworkPolicy with policyType Egress selects it)" in allowed
    denied = explain(CLUSTER, policies, "x/b", "x/a", 80)
    assert denied[0] == "x/b -> x/a TCP/80: blocked"
    assert any("isolated by x/deny-all, x/a-from-b" in r for r in denied)
    assert any("x/deny-all has no ingress rules (deny all)" in r for r in denied)
    assert any("selects x/b but not TCP/80" in r for r in denied)


# ----------------------------------------------------------------------------- matrices

SMALL = """
     x/a x/b y/a
x/a   .   X   .
x/b   X   .   ?
y/a   .   .   .
"""


def test_notation_round_trip() -> None:
    frame = M.from_notation(SMALL)
    assert list(frame.index) == ["x/a", "x/b", "y/a"] and frame.index.name == "from" and frame.columns.name == "to"
    assert frame.at["x/a", "x/b"] == False  # noqa: E712
    assert frame.at["x/b", "y/a"] is pd.NA
    assert M.from_notation(M.render(frame)).equals(frame)
    assert M.to_notation(frame).at["x/b", "y/a"] == "?"
    with pytest.raises(ValueError, match="cells"):
        M.from_notation("a b\na .\n")
    with pytest.raises(ValueError, match="unknown cell"):
        M.from_notation("a\na Y\n")


def test_compare_counts_and_ignores_loopback() -> None:
    expected = M.from_notation("""
         x/a x/b y/a
    x/a   .   X   .
    x/b   X   .   .
    y/a   .   .   .
    """)
    observed = M.from_notation("""
         x/a x/b y/a
    x/a   X   X   .
    x/b   .   .   ?
    y/a   .   .   .
    """)
    result = M.compare(expected, observed)
    assert (result.correct, result.incorrect, result.unknown, result.ignored) == (4, 1, 1, 3)
    assert result.summary == "correct 4, incorrect 1, unknown 1"
    assert result.mismatches == (("x/b", "x/a"),)
    assert not result.ok
    assert M.render(result.diff).splitlines()[2].split() == ["x/b", "X", "-", "?"]
    strict = M.compare(expected, observed, ignore_loopback=False)
    assert strict.summary == "correct 6, incorrect 2, unknown 1"
    assert M.compare(expected, expected).summary == "correct 6, incorrect 0"


def test_compare_accepts_notation_frames_and_missing_cells() -> None:
    expected = M.from_notation(SMALL.replace("?", "."))
    observed = M.to_notation(expected).drop(columns=["y/a"])
    result = M.compare(expected, observed)
    assert result.summary == "correct 4, incorrect 0, unknown 2"


def test_matrix_from_records_and_explain_mismatches() -> None:
    deny = {"metadata": {"name": "deny", "namespace": "x"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    engine = PolicyEngine(CLUSTER, [deny])
    expected = engine.matrix(80)
    # Pretend the CNI ignored the policy: observed = everything reachable, built from records.
    records = [{"src": s, "dst": d, "allowed": True} for s in CLUSTER.pod_keys for d in CLUSTER.pod_keys]
    observed = M.matrix_from_records(records, keys=CLUSTER.pod_keys)
    result = M.compare(expected, observed)
    # 72 non-loopback cells; the 9 x 3 cells into x, minus the 3 loopback ones, are wrong.
    assert result.summary == "correct 48, incorrect 24"
    table = M.explain_mismatches(result, engine, 80, observed=observed)
    assert len(table) == 24
    row = table[(table["from"] == "y/a") & (table["to"] == "x/b")].iloc[0]
    assert (row["expected"], row["observed"]) == ("X", ".")
    assert "isolated by x/deny" in row["explanation"]
    verdict_matrix = M.matrix_from_records(
        engine.evaluate([Probe(s, d, 80) for s in CLUSTER.pod_keys for d in CLUSTER.pod_keys])
    )
    assert verdict_matrix.equals(expected)


def test_expected_matrix_helper_matches_engine() -> None:
    assert M.expected_matrix(CLUSTER, [], 80).all().all()


# ----------------------------------------------------------------------------- layouts


def test_default_layout_is_the_upstream_truth_table_layout() -> None:
    layout = default_layout()
    assert [p.key for p in layout.pods] == ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
    cluster = layout.cluster()
    assert cluster.namespaces["y"].labels == {"ns": "y", "kubernetes.io/metadata.name": "y"}
    assert cluster.pod("z/c").labels == {"pod": "c"}
    assert cluster.pod("x/a").named_port("serve-81-sctp", "SCTP") == 81
    assert str(cluster.pod("x/b").ips[0]) == "10.244.0.2"
    pods = layout.pod_objects(with_ips=False)
    assert "status" not in pods[0] and pods[0]["spec"]["containers"][0]["ports"][0]["name"] == "serve-80-tcp"


def test_operator_layout_from_dict() -> None:
    layout = layout_from_dict(
        {
            "ports": [8080],
            "namespaces": {
                "shop": {
                    "labels": {"team": "web"},
                    "pods": {"front": {"labels": {"app": "front"}}, "db": {"ports": [{"name": "pg", "port": 5432}]}},
                },
                "ops": {"pods": ["probe"]},
            },
        }
    )
    cluster = layout.cluster()
    assert cluster.pod_keys == ["shop/front", "shop/db", "ops/probe"]
    assert cluster.pod("shop/front").named_port("serve-8080-tcp", "TCP") == 8080
    assert cluster.pod("shop/db").named_port("pg", "TCP") == 5432
    assert cluster.pod("shop/db").labels == {"pod": "db"}
    assert cluster.namespaces["shop"].labels["team"] == "web"
    with pytest.raises(ValueError, match="no pods"):
        layout_from_dict({"namespaces": {"empty": {}}})
    with pytest.raises(ValueError, match="at least one namespace"):
        layout_from_dict({})


# ----------------------------------------------------------------------------- scenarios


def test_builtin_scenarios_are_the_six_from_the_issue() -> None:
    scenarios = builtin_scenarios(CLUSTER)
    assert [s.name for s in scenarios] == [
        "default-deny-ingress",
        "default-deny-egress-allow-dns",
        "namespace-isolation",
        "allow-from-labelled-namespace",
        "ip-block",
        "named-port",
    ]
    for scenario in scenarios:
        assert scenario.probes == ((80, "TCP"), (81, "TCP"))
        for policy in scenario.policies:
            NetworkPolicy.from_dict(policy)
            assert policy["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "cni-runbook"}


def _scenario(name: str, **kwargs: Any) -> PolicyEngine:
    (scenario,) = [s for s in builtin_scenarios(CLUSTER, **kwargs) if s.name == name]
    return PolicyEngine(CLUSTER, scenario.policies)


def test_builtin_scenarios_expected_cells() -> None:
    # Spot checks written from the scenario descriptions.
    assert not _scenario("default-deny-ingress").verdict("y/a", "x/b", 80).allowed
    assert _scenario("default-deny-ingress").verdict("x/a", "y/b", 80).allowed
    dns = _scenario("default-deny-egress-allow-dns")
    assert dns.verdict("x/a", "10.96.0.10", 53, "UDP").allowed and dns.verdict("x/a", "z/a", 53, "TCP").allowed
    assert not dns.verdict("x/a", "x/b", 80).allowed and dns.verdict("y/a", "x/b", 80).allowed
    iso = _scenario("namespace-isolation")
    assert iso.verdict("z/a", "z/c", 81).allowed and not iso.verdict("z/a", "y/c", 81).allowed
    labelled = _scenario("allow-from-labelled-namespace")
    assert labelled.verdict("y/c", "x/a", 80).allowed and not labelled.verdict("z/c", "x/a", 80).allowed
    block = _scenario("ip-block")
    assert not block.verdict("x/a", "y/b", 80).allowed and block.verdict("x/a", "z/b", 80).allowed
    assert block.verdict("x/a", "8.8.8.8", 443).allowed
    named = _scenario("named-port")
    assert not named.verdict("z/a", "x/a", 80).allowed and named.verdict("z/a", "x/a", 81).allowed


def test_builtin_scenarios_with_custom_target_and_operator_labels() -> None:
    layout = layout_from_dict(
        {
            "namespaces": {
                "web": {"labels": {"team": "w"}, "pods": ["a"]},
                "ops": {"labels": {"team": "o"}, "pods": ["b"]},
            }
        }
    )
    cluster = layout.cluster()
    scenarios = {s.name: s for s in builtin_scenarios(cluster, target="ops", peer="web")}
    selector = scenarios["allow-from-labelled-namespace"].policies[0]["spec"]["ingress"][0]["from"][0][
        "namespaceSelector"
    ]
    assert selector == {"matchLabels": {"team": "w"}}
    assert scenarios["ip-block"].policies[0]["spec"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.1/32"]}}
    ]


def test_builtin_scenarios_need_ips_and_named_ports() -> None:
    no_ips = Cluster.from_objects(default_layout().namespace_objects(), default_layout().pod_objects(with_ips=False))
    with pytest.raises(ValueError, match="no IPs"):
        builtin_scenarios(no_ips)
    with pytest.raises(ValueError, match="named-port"):
        builtin_scenarios(CLUSTER, ports=(80, 8080))
