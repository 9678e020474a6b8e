"""Conversion Calico/Kubernetes -> Kubernetes NetworkPolicy / Antrea, and its equivalence check.

* The sample set tests/unit/data/calico/sample.yaml (20 policies + a Tier, every construct of
  issue 15) converts with the status each policy's ``expect`` annotation names.
* Every policy converted alone: exact => equivalence proven on the layout; the differences of
  the whole set are all cells decided by a non-exact policy.
* Hypothesis: on random clusters and random Calico policy sets, a conversion whose policies
  are all exact gives equal matrices on every representative port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cni_runbook.policy import Cluster, NetworkPolicy, PolicyEngine, default_layout
from cni_runbook.policy.convert import EXACT, convert
from cni_runbook.policy.equivalence import check, representative_ports
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SAMPLE = Path(__file__).parent / "data" / "calico" / "sample.yaml"
CLUSTER = default_layout().cluster()


def sample() -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(SAMPLE.read_text()) if o]


def key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    if obj["apiVersion"].startswith("networking.k8s.io"):
        return f"k8s {meta['namespace']}/{meta['name']}"
    if obj["kind"] == "NetworkPolicy":
        return f"calico cnp {meta['namespace']}/{meta['name']}"
    return f"calico gnp {meta['name']}"


def test_sample_set_has_at_least_15_policies_and_converts_with_the_expected_statuses() -> None:
    objects = sample()
    policies = [o for o in objects if o["kind"] != "Tier"]
    assert len(policies) >= 15
    conversion = convert(objects)
    got = {p.source: p.status for p in conversion.policies}
    want = {key(o): o["metadata"]["annotations"]["expect"] for o in policies}
    assert got == want
    for p in conversion.policies:
        if p.status == "lossy":
            assert p.lost
        if p.status == "unsupported":
            assert p.reason and not p.outputs
    # every converted object is valid for the engine and uses the kinds promised
    engine = PolicyEngine(CLUSTER, conversion.k8s, conversion.antrea, conversion.tiers)
    assert len(engine.policies) >= 8 and len(engine.antrea_policies) >= 6
    assert conversion.status("calico cnp x/allow-from-y").target == "Kubernetes NetworkPolicy"
    assert conversion.status("calico gnp deny-or").target.startswith("Antrea ClusterNetworkPolicy")
    assert conversion.status("calico cnp y/to-b-only").target.startswith("Antrea NetworkPolicy")
    assert [t["metadata"]["name"] for t in conversion.tiers] == ["security"]


def test_k8s_output_keeps_selectors_ports_and_ip_blocks() -> None:
    conversion = convert(sample())
    by_name = {o["metadata"]["name"]: o for o in conversion.k8s}
    assert by_name["same-ns-not-c"]["spec"]["podSelector"] == {
        "matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]},
                             {"key": "canary", "operator": "DoesNotExist"}]}
    assert by_name["port-range"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 80, "endPort": 81}]
    assert by_name["not-ports"]["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 1, "endPort": 80}, {"protocol": "TCP", "port": 82, "endPort": 65535}]
    assert by_name["egress-nets"]["spec"]["egress"][0]["to"][0] == {
        "ipBlock": {"cidr": "10.244.0.0/29", "except": ["10.244.0.4/32"]}}
    assert by_name["egress-nets"]["spec"]["policyTypes"] == ["Egress"]
    for obj in conversion.k8s:
        NetworkPolicy.from_dict(obj)


def test_each_exact_policy_alone_is_proven_equivalent() -> None:
    objects = sample()
    tiers = [o for o in objects if o["kind"] == "Tier"]
    proven = 0
    for obj in objects:
        if obj["kind"] == "Tier":
            continue
        conversion = convert([obj, *tiers])
        result = check(CLUSTER, [obj, *tiers], conversion)
        if conversion.policies[0].status == EXACT:
            assert result.proven, (key(obj), result.differences.to_string())
            proven += 1
        if conversion.policies[0].status == "unsupported" and obj["metadata"]["name"] == "service-account":
            assert not result.proven  # z/c no longer isolated
    assert proven >= 12


def test_whole_set_differences_are_listed_with_the_deciding_rules() -> None:
    objects = sample()
    result = check(CLUSTER, objects)
    assert not result.proven
    diff = result.differences
    assert set(diff.columns) >= {"port", "protocol", "from", "to", "source rule", "converted rule"}
    # late-deny (lossy: ordered after the Kubernetes policy allowing z -> x/a on 80)
    late = diff[(diff["to"] == "x/a") & (diff["port"] == 80) & (diff["protocol"] == "TCP")]
    assert set(late["from"]) == {"z/a", "z/b", "z/c"}
    assert all("k8s-allow-z" in r for r in late["source rule"])
    assert all("late-deny" in r for r in late["converted rule"])
    # removing the non-exact policies leaves an exactly converted, proven set
    conversion = convert(objects)
    bad = {p.source for p in conversion.policies if p.status != EXACT}
    rest = [o for o in objects if o["kind"] == "Tier" or key(o) not in bad]
    again = convert(rest)
    if again.exact:
        assert check(CLUSTER, rest, again).proven


def test_representative_ports_cover_range_edges_named_ports_and_one_unmentioned() -> None:
    from cni_runbook.policy.calico import CalicoPolicy

    policy = CalicoPolicy.from_dict({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                                     "metadata": {"name": "p"}, "spec": {"ingress": [
                                         {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["100:200", "serve-81-tcp"]}}]}})
    ports = representative_ports(CLUSTER, [policy])
    # ICMP always: the echo request 8/0, another code of type 8, a type no rule names (0)
    assert ports == [(81, "TCP"), (82, "TCP"), (100, "TCP"), (201, "TCP"), (8080, "TCP"),
                     (0, "ICMP"), (2048, "ICMP"), (2049, "ICMP")]
    icmp = CalicoPolicy.from_dict({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                                   "metadata": {"name": "i"}, "spec": {"ingress": [
                                       {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 0}},
                                       {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 3, "code": 4}}]}})
    assert [p for p, proto in representative_ports(CLUSTER, [icmp]) if proto == "ICMP"] == [
        0, 256, 768, 772, 2048, 2049]  # 0/0 (type 0, any code), 1/0 (no rule names type 1), 3/0, 3/4, 8/0, 8/1


# --------------------------------------------------------------------------- property

LABEL_VALUES = ("a", "b", "c")
NAMESPACES = ("x", "y", "z")


@st.composite
def clusters(draw: Any) -> Cluster:
    ns_objs = [{"metadata": {"name": n, "labels": {"ns": n, **({"env": "prod"} if draw(st.booleans()) else {})}}}
               for n in NAMESPACES]
    pods = []
    count = draw(st.integers(2, 7))
    for i in range(count):
        labels = {"app": draw(st.sampled_from(LABEL_VALUES))}
        if draw(st.booleans()):
            labels["tier"] = draw(st.sampled_from(LABEL_VALUES))
        pods.append({"metadata": {"name": f"p{i}", "namespace": draw(st.sampled_from(NAMESPACES)), "labels": labels},
                     "spec": {"containers": [{"ports": [{"name": "web", "containerPort": 80}]}]},
                     "status": {"podIP": f"10.0.{i // 4}.{i % 4 + 1}"}})
    return Cluster.from_objects(ns_objs, pods)


SELECTORS = st.sampled_from([
    "all()", "app == 'a'", "app != 'b'", "has(tier)", "!has(tier)", "app in {'a', 'c'}", "app not in {'a'}",
    "app == 'a' && has(tier)", "app == 'b' || tier == 'c'", "!(app == 'a' || has(tier))",
])
NS_SELECTORS = st.sampled_from(["ns == 'x'", "ns in {'y', 'z'}", "has(env)", "all()"])


@st.composite
def entity(draw: Any, remote: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if remote:
        kind = draw(st.sampled_from(["none", "selector", "ns", "both", "nets"]))
        if kind in ("selector", "both"):
            out["selector"] = draw(SELECTORS)
        if kind in ("ns", "both"):
            out["namespaceSelector"] = draw(NS_SELECTORS)
        if kind == "nets":
            out["nets"] = [draw(st.sampled_from(["10.0.0.0/30", "10.0.0.0/24", "10.0.1.0/24"]))]
            if draw(st.booleans()):
                out["notNets"] = ["10.0.0.2/32"]
    return out


@st.composite
def rule(draw: Any, direction: str, actions: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"action": draw(st.sampled_from(actions))}
    remote = draw(entity(remote=True))
    ports = draw(st.sampled_from([None, [80], ["80:81"], ["web"], "not81"]))
    dest: dict[str, Any] = {}
    if ports is not None:
        out["protocol"] = draw(st.sampled_from(["TCP", "UDP"]))
        if ports == "not81":
            dest["notPorts"] = [81]
        else:
            dest["ports"] = ports
    if direction == "ingress":
        out["source"] = remote
        if dest:
            out["destination"] = dest
    else:
        out["destination"] = {**remote, **dest}
    return out


@st.composite
def calico_sets(draw: Any) -> list[dict[str, Any]]:
    tiers = []
    if draw(st.booleans()):
        tiers.append({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "early"},
                      "spec": {"order": 10, "defaultAction": draw(st.sampled_from(["Deny", "Pass"]))}})
    policies = []
    for i in range(draw(st.integers(1, 5))):
        tier = draw(st.sampled_from(["default"] + [t["metadata"]["name"] for t in tiers]))
        glob = draw(st.booleans())
        actions = draw(st.sampled_from([("Allow",), ("Allow", "Deny"), ("Allow", "Deny", "Pass"), ("Deny", "Pass"),
                                        ("Allow", "Log")]))
        spec: dict[str, Any] = {"selector": draw(SELECTORS)}
        if tier != "default":
            spec["tier"] = tier
        if draw(st.booleans()):
            spec["order"] = draw(st.sampled_from([1, 10, 500, 2000]))
        for direction in draw(st.sampled_from([("ingress",), ("egress",), ("ingress", "egress")])):
            spec[direction] = [draw(rule(direction, actions)) for _ in range(draw(st.integers(0, 2)))]
        if draw(st.booleans()):
            spec["types"] = sorted({"ingress": "Ingress", "egress": "Egress"}[d] for d in ("ingress", "egress") if d in spec)
        name = f"{tier}.p{i}" if tier != "default" else f"p{i}"
        meta: dict[str, Any] = {"name": name}
        if glob:
            if draw(st.booleans()):
                spec["namespaceSelector"] = draw(NS_SELECTORS)
        else:
            meta["namespace"] = draw(st.sampled_from(NAMESPACES))
        policies.append({"apiVersion": "projectcalico.org/v3",
                         "kind": "GlobalNetworkPolicy" if glob else "NetworkPolicy", "metadata": meta, "spec": spec})
    if draw(st.booleans()):
        policies.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": "k8s", "namespace": draw(st.sampled_from(NAMESPACES))},
                         "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                                  "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}})
    return tiers + policies


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=clusters(), objects=calico_sets())
def test_exact_conversion_implies_equal_matrices(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    conversion = convert(objects)
    if not conversion.exact:
        return
    result = check(cluster, objects, conversion)
    assert result.proven, result.differences.to_string()


@pytest.mark.parametrize("bad", [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}])
def test_unknown_objects_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="ConfigMap c"):
        convert([bad])


def _cnp(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_allow_policy_followed_by_a_deny_goes_to_antrea_to_keep_its_precedence() -> None:
    allow = _cnp("allow-y", "x", order=10, selector="all()",
                 ingress=[{"action": "Allow", "source": {"namespaceSelector": "ns == 'y'"}}])
    deny = _cnp("deny-y-a", "x", order=20, selector="all()",
                ingress=[{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'", "selector": "pod == 'a'"}}])
    conversion = convert([allow, deny])
    assert conversion.exact
    assert conversion.status("calico cnp x/allow-y").target.startswith("Antrea NetworkPolicy")
    assert check(CLUSTER, [allow, deny], conversion).proven
    # alone, the Allow policy is a plain Kubernetes NetworkPolicy
    assert convert([allow]).status("calico cnp x/allow-y").target == "Kubernetes NetworkPolicy"


def test_pass_in_the_default_tier_allows_like_the_profile() -> None:
    passing = _cnp("pass-y", "x", order=10, selector="all()",
                   ingress=[{"action": "Pass", "source": {"namespaceSelector": "ns == 'y'"}}])
    result = check(CLUSTER, [passing])
    assert result.proven
    assert convert([passing]).antrea[0]["spec"]["ingress"][0]["action"] == "Allow"


# --------------------------------------------------------------------------- one construct at a time


def _gnp(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


CONSTRUCTS = [
    # (id, policy, status, target starts with / reason contains)
    ("notSelector", _cnp("ns", "x", selector="pod == 'a'", ingress=[{"action": "Allow", "source": {"notSelector": "pod == 'b'"}}]),
     "exact", "Kubernetes NetworkPolicy"),
    ("selector-and-notSelector", _cnp("sn", "x", selector="all()", egress=[
        {"action": "Allow", "destination": {"selector": "pod in {'a', 'b'}", "notSelector": "pod == 'a'",
                                            "namespaceSelector": "ns == 'y'"}}]), "exact", "Kubernetes NetworkPolicy"),
    ("notSelector-alone-in-a-GlobalNetworkPolicy", _gnp("g", selector="pod == 'a'", ingress=[
        {"action": "Allow", "protocol": "TCP", "source": {"notSelector": "pod == 'b'"}, "destination": {"ports": [80]}}]),
     "lossy", "non-pod addresses"),
    ("ICMP-type", _cnp("ping", "y", selector="pod == 'a'", ingress=[{"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}}]),
     "exact", "Antrea NetworkPolicy"),
    ("ICMP-type-and-code-deny", _gnp("no-ping", order=5, selector="all()", ingress=[
        {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}, "source": {"namespaceSelector": "ns == 'z'"}}]),
     "exact", "Antrea ClusterNetworkPolicy"),
    ("ICMP-any", _cnp("icmp", "z", selector="all()", egress=[{"action": "Allow", "protocol": "ICMP"}]),
     "exact", "Antrea NetworkPolicy"),
    ("namespace-by-calico-name", _cnp("by-name", "x", selector="all()", ingress=[
        {"action": "Allow", "source": {"namespaceSelector": "projectcalico.org/name == 'y'"}}]), "exact",
     "Kubernetes NetworkPolicy"),
    ("serviceAccounts.names", _cnp("sa", "x", selector="all()", ingress=[{"action": "Allow", "source": {"serviceAccounts": {"names": ["web"]}}}]),
     "unsupported", "serviceAccounts"),
    ("serviceAccounts.selector", _cnp("sas", "x", selector="all()", ingress=[
        {"action": "Allow", "source": {"serviceAccounts": {"selector": "role == 'web'"}}}]), "unsupported", "ServiceAccount labels"),
    ("serviceAccountSelector", _cnp("sasel", "x", selector="all()", serviceAccountSelector="role == 'web'",
                                    ingress=[{"action": "Allow"}]), "unsupported", "ServiceAccount labels"),
    ("notProtocol", _cnp("np", "x", selector="all()", ingress=[{"action": "Allow", "notProtocol": "TCP"}]), "unsupported", "notProtocol"),
    ("notICMP", _cnp("ni", "x", selector="all()", ingress=[{"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}}]),
     "unsupported", "notICMP"),
    ("ipVersion", _cnp("v4", "x", selector="all()", ingress=[{"action": "Allow", "ipVersion": 4}]), "unsupported", "IP family"),
    ("UDPLite", _cnp("ul", "x", selector="all()", ingress=[{"action": "Allow", "protocol": "UDPLite"}]), "unsupported", "UDPLite"),
    ("starts-with", _cnp("sw", "x", selector="pod starts with 'a'", ingress=[{"action": "Allow"}]), "unsupported", "label-selector"),
    ("calico-namespace-label-on-pods", _gnp("cn", selector="projectcalico.org/namespace == 'x'", ingress=[{"action": "Allow"}]),
     "unsupported", "implicit label"),
    ("nets-and-selector", _cnp("nsel", "x", selector="all()", ingress=[
        {"action": "Allow", "source": {"nets": ["10.0.0.0/8"], "selector": "pod == 'a'"}}]), "unsupported", "IP AND labels"),
    ("named-source-port", _cnp("nsp", "x", selector="all()", ingress=[
        {"action": "Allow", "protocol": "TCP", "source": {"ports": ["web"]}}]), "unsupported", "source ports"),
    ("services", _cnp("svc", "x", selector="all()", egress=[{"action": "Allow", "destination": {"services": {"name": "kubernetes"}}}]),
     "unsupported", "Services"),
    ("http", _cnp("http", "x", selector="all()", ingress=[{"action": "Allow", "http": {"methods": ["GET"]}}]), "unsupported", "http"),
    ("doNotTrack", _gnp("dnt", selector="all()", doNotTrack=True, applyOnForward=True, ingress=[{"action": "Allow"}]),
     "unsupported", "doNotTrack"),
    ("global()", _gnp("glob", selector="all()", ingress=[{"action": "Allow", "source": {"selector": "global()"}}]),
     "unsupported", "global()"),
]


@pytest.mark.parametrize("policy,status,detail", [c[1:] for c in CONSTRUCTS], ids=[c[0] for c in CONSTRUCTS])
def test_each_calico_construct_converts_with_its_status(policy: dict[str, Any], status: str, detail: str) -> None:
    conversion = convert([policy])
    [result] = conversion.policies
    assert result.status == status, result
    if status == "unsupported":
        assert detail in result.reason and not result.outputs
        assert not conversion.k8s and not [o for o in conversion.antrea if "default-deny" not in o["metadata"]["name"]]
        return
    if status == "lossy":
        assert any(detail in lost for lost in result.lost)
    else:
        assert result.target.startswith(detail) and not result.lost
    proof = check(CLUSTER, [policy], conversion)
    assert proof.proven, proof.differences.to_string()  # lossy here loses only what pod probes cannot see
    assert any(proto == "ICMP" for _, proto in proof.ports)  # ICMP cells are compared too


def test_icmp_conversion_writes_antrea_protocols_and_k8s_namespace_names() -> None:
    ping = _cnp("ping", "y", selector="pod == 'a'", ingress=[{"action": "Allow", "protocol": "ICMP",
                                                             "icmp": {"type": 8, "code": 0}}])
    [annp] = [o for o in convert([ping]).antrea if o["kind"] == "NetworkPolicy"]
    assert annp["spec"]["ingress"][0]["protocols"] == [{"icmp": {"icmpType": 8, "icmpCode": 0}}]
    assert "ports" not in annp["spec"]["ingress"][0]
    by_name = _cnp("by-name", "x", selector="all()", ingress=[
        {"action": "Allow", "source": {"namespaceSelector": "projectcalico.org/name == 'y'"}}])
    [np_] = convert([by_name]).k8s
    assert np_["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]


def test_a_policy_outside_the_model_leaves_the_equivalence_unproven_and_says_why() -> None:
    sasel = _cnp("sasel", "x", selector="all()", serviceAccountSelector="role == 'web'", ingress=[{"action": "Allow"}])
    plain = _cnp("plain", "y", selector="all()", ingress=[{"action": "Allow", "source": {"namespaceSelector": "ns == 'y'"}}])
    result = check(CLUSTER, [sasel, plain])
    assert result.differences.empty and not result.proven
    assert result.unevaluated and "calico cnp x/sasel" in result.unevaluated[0]
    assert "not proven" in result.summary
