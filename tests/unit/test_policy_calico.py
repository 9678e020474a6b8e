"""Calico projectcalico.org/v3 semantics (lib/cni_runbook/policy/calico.py), one construct per
test, with expected matrices written by hand from Calico's documented rules (module docstring):
tiers and order, first matching rule, default deny once selected, Pass to the next tier /
profiles, Log, selectors, namespaceSelector, nets/notNets, ports, ranges, protocols, ICMP.

Layout: x/y/z by a/b/c; pods labelled pod=<name>, namespaces ns=<name>; pod IPs 10.244.0.1
(x/a) ... 10.244.0.9 (z/c) in layout order.
"""

from __future__ import annotations

from typing import Any

import pytest
from cni_runbook.policy import default_layout
from cni_runbook.policy import matrix as M
from cni_runbook.policy.calico import CalicoEvaluator, CalicoPolicy, parse_selector, to_dnf
from cni_runbook.policy.model import icmp_port

CLUSTER = default_layout().cluster()


def cnp(name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    kind = "NetworkPolicy" if namespace else "GlobalNetworkPolicy"
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


def check(policies: list[dict[str, Any]], table: str, port: int = 80, protocol: str = "TCP",
          tiers: list[dict[str, Any]] | None = None, k8s: list[dict[str, Any]] | None = None) -> None:
    got = CalicoEvaluator(CLUSTER, policies, k8s or [], tiers).matrix(port, protocol)
    expected = M.from_notation(table)
    result = M.compare(expected, got, ignore_loopback=False)
    assert result.incorrect == 0, f"{result.summary}\nexpected:\n{M.render(expected)}\ngot:\n{M.render(got)}"


HEADER = "    x/a x/b x/c y/a y/b y/c z/a z/b z/c"


def rows(*lines: str) -> str:
    return "\n".join([HEADER, *lines])


ALL_OPEN = ". . . . . . . . ."


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app == 'db' && has(tier)", {"app": "db", "tier": "x"}, True),
        ("app == 'db' && has(tier)", {"app": "db"}, False),
        ("all()", {}, True),
        ("", {"a": "b"}, True),
        ("!has(canary)", {"canary": "1"}, False),
        ("env in {'prod', \"stage\"}", {"env": "stage"}, True),
        ("env not in {'prod'}", {}, True),
        ("env != 'prod'", {}, True),
        ("(a == '1' || b == '2') && !(c == '3')", {"b": "2", "c": "4"}, True),
        ("name starts with 'we'", {"name": "web"}, True),
        ("name ends with 'eb'", {"name": "web"}, True),
        ("name contains 'x'", {"name": "web"}, False),
    ],
)
def test_selector_expressions(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_selector_dnf_pushes_negation_down() -> None:
    dnf = to_dnf(parse_selector("!(a == '1' && has(b)) && c in {'x'}"))
    assert dnf == [[("a", "NotIn", ("1",)), ("c", "In", ("x",))], [("b", "DoesNotExist", ()), ("c", "In", ("x",))]]


@pytest.mark.parametrize("bad", ["a ==", "a = 'b'", "has(a", "a in {'x'", "global()"])
def test_bad_selectors_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="selector"):
        parse_selector(bad)


def test_default_deny_once_selected_and_allow_from_namespace() -> None:
    policy = cnp("allow-y", "x", selector="pod == 'a'",
                 ingress=[{"action": "Allow", "source": {"namespaceSelector": "ns == 'y'"}}])
    check([policy], rows(
        "x/a X . . . . . . . .",
        "x/b X . . . . . . . .",
        "x/c X . . . . . . . .",
        "y/a . . . . . . . . .",
        "y/b . . . . . . . . .",
        "y/c . . . . . . . . .",
        "z/a X . . . . . . . .",
        "z/b X . . . . . . . .",
        "z/c X . . . . . . . .",
    ))


def test_namespaced_selector_is_limited_to_the_policy_namespace_global_is_not() -> None:
    rule = [{"action": "Allow", "source": {"selector": "pod == 'a'"}}]
    local = cnp("from-a", "x", selector="pod == 'b'", ingress=rule)
    glob = cnp("from-a", selector="pod == 'b'", namespaceSelector="ns == 'x'", ingress=rule)
    for policy, from_other_namespaces in ((local, False), (glob, True)):
        got = CalicoEvaluator(CLUSTER, [policy]).matrix(80)
        assert bool(got.at["x/a", "x/b"]) and not got.at["x/c", "x/b"]
        assert bool(got.at["y/a", "x/b"]) is from_other_namespaces
        assert bool(got.at["y/a", "y/b"])  # not selected: the global policy is limited to namespace x


def test_order_first_matching_rule_wins_across_policies() -> None:
    deny = cnp("deny-y", "x", order=10, selector="all()",
               ingress=[{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}}])
    allow = cnp("allow-all", "x", order=20, selector="all()", ingress=[{"action": "Allow"}])
    check([allow, deny], rows(
        "x/a . . . . . . . . .",
        "x/b . . . . . . . . .",
        "x/c . . . . . . . . .",
        "y/a X X X . . . . . .",
        "y/b X X X . . . . . .",
        "y/c X X X . . . . . .",
        "z/a . . . . . . . . .",
        "z/b . . . . . . . . .",
        "z/c . . . . . . . . .",
    ))
    # swap the orders: the Allow comes first and wins
    allow_first = cnp("allow-all", "x", order=5, selector="all()", ingress=[{"action": "Allow"}])
    assert CalicoEvaluator(CLUSTER, [allow_first, deny]).decide("y/a", "x/a", 80)[0]


def test_no_order_is_applied_last_and_equal_order_by_name() -> None:
    deny = cnp("b-deny", "x", selector="all()", ingress=[{"action": "Deny"}])
    allow = cnp("a-allow", "x", selector="all()", ingress=[{"action": "Allow"}])
    assert CalicoEvaluator(CLUSTER, [deny, allow]).decide("y/a", "x/a", 80)[0]  # same (no) order: name a < b
    ordered_deny = cnp("z-deny", "x", order=1, selector="all()", ingress=[{"action": "Deny"}])
    assert not CalicoEvaluator(CLUSTER, [allow, ordered_deny]).decide("y/a", "x/a", 80)[0]


def test_pass_goes_to_the_next_tier_and_profiles_allow_at_the_end() -> None:
    tiers = [{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "sec"},
              "spec": {"order": 100, "defaultAction": "Deny"}}]
    passing = cnp("sec.pass-y", tier="sec", order=1, selector="all()", namespaceSelector="ns == 'x'",
                  ingress=[{"action": "Pass", "source": {"namespaceSelector": "ns == 'y'"}}])
    default_deny = cnp("deny-all", "x", selector="pod == 'a'", ingress=[{"action": "Deny"}])
    # x/a: y passes to the default tier, whose policy denies; z hits the end of tier sec: deny.
    # x/b, x/c: y passes, no default-tier policy selects them, the profile allows.
    check([passing, default_deny], rows(
        "x/a X X X . . . . . .",
        "x/b X X X . . . . . .",
        "x/c X X X . . . . . .",
        "y/a X . . . . . . . .",
        "y/b X . . . . . . . .",
        "y/c X . . . . . . . .",
        "z/a X X X . . . . . .",
        "z/b X X X . . . . . .",
        "z/c X X X . . . . . .",
    ), tiers=tiers)


def test_tier_default_action_pass_and_log_rules() -> None:
    tiers = [{"kind": "Tier", "metadata": {"name": "obs"}, "spec": {"order": 10, "defaultAction": "Pass"}}]
    log = cnp("obs.log", tier="obs", selector="all()", ingress=[{"action": "Log"}])
    assert CalicoEvaluator(CLUSTER, [log], tiers=tiers).decide("y/a", "x/a", 80)[0]  # log, then pass, profile


def test_egress_only_types_default_and_ports_ranges_protocols() -> None:
    policy = cnp("egress", "x", selector="pod == 'a'",
                 egress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["80:81"]}},
                         {"action": "Allow", "protocol": 17, "destination": {"ports": [53]}}])
    parsed = CalicoPolicy.from_dict(policy)
    assert parsed.types == frozenset({"Egress"})  # Calico: egress rules only -> [Egress]
    ev = CalicoEvaluator(CLUSTER, [policy])
    assert ev.decide("x/a", "y/a", 80)[0] and ev.decide("x/a", "y/a", 81)[0]
    assert not ev.decide("x/a", "y/a", 82)[0]
    assert ev.decide("x/a", "y/a", 53, "UDP")[0] and not ev.decide("x/a", "y/a", 80, "UDP")[0]
    assert ev.decide("y/a", "x/a", 82)[0]  # ingress not isolated


def test_not_ports_named_ports_nets_not_nets() -> None:
    policy = cnp("mix", "x", selector="all()", types=["Ingress"], ingress=[
        {"action": "Allow", "protocol": "TCP", "source": {"nets": ["10.244.0.0/29"], "notNets": ["10.244.0.4/32"]},
         "destination": {"notPorts": [81]}},
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["serve-81-tcp"]}},
    ])
    ev = CalicoEvaluator(CLUSTER, [policy])
    assert ev.decide("y/b", "x/a", 80)[0]  # .5 in the nets
    assert not ev.decide("y/a", "x/a", 80)[0]  # .4 in notNets
    assert not ev.decide("z/c", "x/a", 80)[0]  # .9 outside
    assert ev.decide("z/c", "x/a", 81)[0]  # named port rule, any source


def test_icmp_rules_match_only_icmp() -> None:
    policy = cnp("ping", "x", selector="all()", ingress=[{"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}}])
    ev = CalicoEvaluator(CLUSTER, [policy])
    assert ev.decide("y/a", "x/a", icmp_port(8, 0), "ICMP")[0]  # echo request
    assert ev.decide("y/a", "x/a", icmp_port(8, 3), "ICMP")[0]  # any code of type 8
    assert not ev.decide("y/a", "x/a", icmp_port(0, 0), "ICMP")[0]  # echo reply: no rule, default deny
    assert not ev.decide("y/a", "x/a", 80, "TCP")[0]
    other = cnp("ping", "x", selector="all()", ingress=[{"action": "Allow", "protocol": "ICMP", "icmp": {"type": 0}}])
    assert not CalicoEvaluator(CLUSTER, [other]).decide("y/a", "x/a", icmp_port(8, 0), "ICMP")[0]
    coded = cnp("ping", "x", selector="all()", ingress=[{"action": "Allow", "protocol": "ICMP",
                                                          "icmp": {"type": 8, "code": 0}}])
    assert [CalicoEvaluator(CLUSTER, [coded]).decide("y/a", "x/a", icmp_port(8, c), "ICMP")[0] for c in (0, 1)] == [
        True, False]
    anything = cnp("any", "x", selector="all()", ingress=[{"action": "Allow"}])  # no protocol: ICMP too
    assert CalicoEvaluator(CLUSTER, [anything]).decide("y/a", "x/a", icmp_port(8, 0), "ICMP")[0]


def test_kubernetes_policies_sit_in_the_default_tier_at_order_1000() -> None:
    k8s = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-y", "namespace": "x"},
           "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}}
    early = cnp("deny-y", "x", order=999, selector="all()", ingress=[{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}}])
    late = cnp("deny-y", "x", order=1001, selector="all()", ingress=[{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}}])
    assert not CalicoEvaluator(CLUSTER, [early], [k8s]).decide("y/a", "x/a", 80)[0]
    assert CalicoEvaluator(CLUSTER, [late], [k8s]).decide("y/a", "x/a", 80)[0]
    assert not CalicoEvaluator(CLUSTER, [late], [k8s]).decide("z/a", "x/a", 80)[0]  # default deny once selected


def test_source_ports_against_the_ephemeral_range() -> None:
    policy = cnp("src", "x", selector="all()", ingress=[{"action": "Allow", "protocol": "TCP",
                                                         "source": {"ports": ["1024:65535"]}}])
    assert CalicoEvaluator(CLUSTER, [policy]).decide("y/a", "x/a", 80)[0]
    partial = cnp("src", "x", selector="all()", ingress=[{"action": "Allow", "protocol": "TCP",
                                                          "source": {"ports": ["40000:50000"]}}])
    with pytest.raises(ValueError, match="ephemeral"):
        CalicoEvaluator(CLUSTER, [partial]).decide("y/a", "x/a", 80)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (cnp("p", selector="all()", ingress=[{"action": "Drop"}]), "action"),
        (cnp("p", selector="all()", ingress=[{"action": "Allow", "destination": {"ports": [80]}}]), "need protocol"),
        (cnp("p", selector="all()", serviceAccountSelector="role == 'x'"), "serviceAccountSelector"),
        ({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": {}},
         "metadata.namespace"),
        (cnp("p", selector="all()", ingress=[{"action": "Allow", "http": {"methods": ["GET"]}}]), "http"),
        (cnp("p", selector="all()", ingress=[{"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}]), "ICMP"),
        (cnp("p", selector="all()", ingress=[{"action": "Allow", "source": {"bogus": 1}}]), "unknown field"),
    ],
)
def test_invalid_calico_policies_are_rejected(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CalicoPolicy.from_dict(obj)
