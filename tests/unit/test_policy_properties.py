"""Property tests of the expectation engine (hypothesis).

Random small clusters and random policies that use every modelled feature; the properties
are consequences of the Kubernetes documentation (policies are additive allow-lists, order
does not matter, only selected pods are affected) plus agreement between the bitmask engine
and the direct per-pair evaluator.
"""

from __future__ import annotations

import copy
from typing import Any

from cni_runbook.policy import Cluster, PolicyEngine, Probe, naive_verdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ("app", "tier")
VALUES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2)


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    n_ns = draw(st.integers(1, 3))
    namespaces = [{"metadata": {"name": f"n{i}", "labels": draw(labels)}} for i in range(n_ns)]
    pods = []
    for i in range(draw(st.integers(1, 7))):
        pods.append(
            {
                "metadata": {
                    "name": f"p{i}",
                    "namespace": f"n{draw(st.integers(0, n_ns - 1))}",
                    "labels": draw(labels),
                },
                "spec": {
                    "containers": [
                        {
                            "ports": [
                                {"name": f"serve-{p}-{proto.lower()}", "containerPort": p, "protocol": proto}
                                for p in PORTS
                                for proto in PROTOCOLS
                            ]
                        }
                    ]
                },
                "status": {"podIP": f"10.0.0.{i + 1}"},
            }
        )
    return Cluster.from_objects(namespaces, pods)


@st.composite
def selectors(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["matchLabels"] = draw(labels)
    if draw(st.booleans()):
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        expr: dict[str, Any] = {"key": draw(st.sampled_from(KEYS)), "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=2, unique=True))
        out["matchExpressions"] = [expr]
    return out


@st.composite
def peers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(("pod", "ns", "both", "ip")))
    if kind == "ip":
        prefix = draw(st.sampled_from((29, 30, 31, 32)))
        block: dict[str, Any] = {"cidr": f"10.0.0.0/{prefix}"}
        if prefix < 32 and draw(st.booleans()):
            block["except"] = [f"10.0.0.{draw(st.integers(0, 2 ** (32 - prefix) - 1))}/32"]
        return {"ipBlock": block}
    out: dict[str, Any] = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selectors())
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(selectors())
    return out


@st.composite
def port_specs(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["protocol"] = draw(st.sampled_from(PROTOCOLS))
    kind = draw(st.sampled_from(("none", "number", "name", "range")))
    if kind == "number":
        out["port"] = draw(st.sampled_from(PORTS))
    elif kind == "name":
        out["port"] = f"serve-{draw(st.sampled_from(PORTS))}-{draw(st.sampled_from(PROTOCOLS)).lower()}"
    elif kind == "range":
        out["port"], out["endPort"] = 79, draw(st.sampled_from((80, 81, 82)))
    return out


@st.composite
def rules(draw: st.DrawFn, peer_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule[peer_key] = draw(st.lists(peers(), max_size=2))
    if draw(st.booleans()):
        rule["ports"] = draw(st.lists(port_specs(), max_size=2))
    return rule


@st.composite
def policies(draw: st.DrawFn, n_ns: int = 3) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(selectors())}
    if draw(st.booleans()):
        spec["ingress"] = draw(st.lists(rules("from"), max_size=2))
    if draw(st.booleans()):
        spec["egress"] = draw(st.lists(rules("to"), max_size=2))
    if draw(st.booleans()):
        spec["policyTypes"] = draw(st.sampled_from((["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    name = f"pol{draw(st.integers(0, 10**6))}"
    return {"metadata": {"name": name, "namespace": f"n{draw(st.integers(0, n_ns - 1))}"}, "spec": spec}


probe_ports = st.tuples(st.sampled_from(PORTS), st.sampled_from(PROTOCOLS))


def matrix(cluster: Cluster, pols: list[dict[str, Any]], port: int, protocol: str) -> dict[tuple[str, str], bool]:
    frame = PolicyEngine(cluster, pols).matrix(port, protocol)
    return {(s, d): bool(frame.at[s, d]) for s in frame.index for d in frame.columns}


@SETTINGS
@given(clusters(), probe_ports)
def test_empty_policy_set_allows_everything(cluster: Cluster, pp: tuple[int, str]) -> None:
    assert all(matrix(cluster, [], *pp).values())


@SETTINGS
@given(clusters(), st.lists(policies(), max_size=4), probe_ports, st.data())
def test_adding_an_allow_rule_never_removes_reachability(
    cluster: Cluster, pols: list[dict[str, Any]], pp: tuple[int, str], data: st.DataObject
) -> None:
    before = matrix(cluster, pols, *pp)
    if not pols:
        return
    changed = copy.deepcopy(pols)
    target = changed[data.draw(st.integers(0, len(changed) - 1))]["spec"]
    # An ingress rule is always safe to add. An egress rule is safe only when the policy
    # already covers Egress: with defaulted policyTypes, the first egress rule would make the
    # policy isolate egress (see test_first_egress_rule_with_defaulted_policy_types_isolates).
    covers_egress = "Egress" in target.get("policyTypes", ["Egress"] if target.get("egress") else [])
    direction = data.draw(st.sampled_from(("ingress", "egress") if covers_egress else ("ingress",)))
    target.setdefault(direction, []).append(data.draw(rules("from" if direction == "ingress" else "to")))
    after = matrix(cluster, changed, *pp)
    assert all(after[cell] for cell, ok in before.items() if ok)


def test_first_egress_rule_with_defaulted_policy_types_isolates() -> None:
    """The documented exception to monotonicity: without policyTypes, adding the first egress
    rule adds Egress to the policy types, so traffic outside that rule becomes blocked."""
    cluster = Cluster.from_objects(
        [{"metadata": {"name": "n0"}}],
        [{"metadata": {"name": n, "namespace": "n0", "labels": {"app": n}}} for n in ("a", "b")],
    )
    pol = {
        "metadata": {"name": "p", "namespace": "n0"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{}]},
    }
    assert matrix(cluster, [pol], 80, "TCP")[("n0/a", "n0/b")]
    pol["spec"]["egress"] = [{"to": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]
    assert not matrix(cluster, [pol], 80, "TCP")[("n0/a", "n0/b")]


@SETTINGS
@given(clusters(), st.lists(policies(), max_size=4), policies(), probe_ports)
def test_a_policy_selecting_no_pod_changes_nothing(
    cluster: Cluster, pols: list[dict[str, Any]], extra: dict[str, Any], pp: tuple[int, str]
) -> None:
    extra = copy.deepcopy(extra)
    extra["spec"]["podSelector"] = {"matchLabels": {"nobody": "here"}}
    assert matrix(cluster, pols + [extra], *pp) == matrix(cluster, pols, *pp)


@SETTINGS
@given(clusters(), st.lists(policies(), max_size=5), probe_ports, st.randoms(use_true_random=False))
def test_results_do_not_depend_on_policy_order(
    cluster: Cluster, pols: list[dict[str, Any]], pp: tuple[int, str], rnd: Any
) -> None:
    shuffled = list(pols)
    rnd.shuffle(shuffled)
    assert matrix(cluster, shuffled, *pp) == matrix(cluster, pols, *pp)


@SETTINGS
@given(clusters(), st.lists(policies(), max_size=5), probe_ports)
def test_engine_agrees_with_naive_per_pair_evaluation(
    cluster: Cluster, pols: list[dict[str, Any]], pp: tuple[int, str]
) -> None:
    fast = matrix(cluster, pols, *pp)
    for (src, dst), allowed in fast.items():
        assert naive_verdict(cluster, pols, Probe(src, dst, *pp))[0].allowed == allowed, (src, dst)


@SETTINGS
@given(
    clusters(),
    st.lists(policies(), max_size=5),
    probe_ports,
    st.sampled_from(("10.0.0.2", "10.0.0.250", "192.168.1.1")),
)
def test_engine_agrees_with_naive_for_non_pod_addresses(
    cluster: Cluster, pols: list[dict[str, Any]], pp: tuple[int, str], ip: str
) -> None:
    engine = PolicyEngine(cluster, pols)
    for key in cluster.pod_keys:
        for src, dst in ((key, ip), (ip, key)):
            assert (
                engine.verdict(src, dst, *pp).allowed == naive_verdict(cluster, pols, Probe(src, dst, *pp))[0].allowed
            )


# ----------------------------------------------------------------------------- Antrea


@st.composite
def antrea_policies(draw: st.DrawFn) -> dict[str, Any]:
    cluster_scoped = draw(st.booleans())
    tier = draw(st.sampled_from(("securityops", "application", "baseline")))
    actions = ("Allow", "Drop", "Reject") if tier == "baseline" else ("Allow", "Drop", "Reject", "Pass")

    def peer() -> dict[str, Any]:
        kind = draw(st.sampled_from(("pod", "ns", "self", "ip") if cluster_scoped else ("pod", "ns", "ip")))
        if kind == "ip":
            return {"ipBlock": {"cidr": f"10.0.0.0/{draw(st.sampled_from((30, 31, 32)))}"}}
        if kind == "self":
            return {"namespaces": {"match": "Self"}}
        return {"podSelector": draw(selectors())} if kind == "pod" else {"namespaceSelector": draw(selectors())}

    def rule(peer_key: str) -> dict[str, Any]:
        out: dict[str, Any] = {"action": draw(st.sampled_from(actions))}
        if draw(st.booleans()):
            out[peer_key] = [peer() for _ in range(draw(st.integers(1, 2)))]
        if draw(st.booleans()):
            out["ports"] = [draw(port_specs())]
        return out

    applied = {"podSelector": draw(selectors())}
    if cluster_scoped and draw(st.booleans()):
        applied["namespaceSelector"] = draw(selectors())
    spec = {
        "tier": tier,
        "priority": draw(st.integers(1, 5)),
        "appliedTo": [applied],
        "ingress": [rule("from") for _ in range(draw(st.integers(0, 2)))],
        "egress": [rule("to") for _ in range(draw(st.integers(0, 2)))],
    }
    meta: dict[str, Any] = {"name": f"anp{draw(st.integers(0, 10**6))}"}
    if not cluster_scoped:
        meta["namespace"] = f"n{draw(st.integers(0, 2))}"
    return {"kind": "ClusterNetworkPolicy" if cluster_scoped else "NetworkPolicy", "metadata": meta, "spec": spec}


@SETTINGS
@given(clusters(), st.lists(policies(), max_size=3), st.lists(antrea_policies(), max_size=3), probe_ports)
def test_antrea_engine_agrees_with_naive_per_pair_evaluation(
    cluster: Cluster, pols: list[dict[str, Any]], anps: list[dict[str, Any]], pp: tuple[int, str]
) -> None:
    engine = PolicyEngine(cluster, pols, anps)
    frame = engine.matrix(*pp)
    for src in frame.index:
        for dst in frame.columns:
            naive = naive_verdict(cluster, pols, Probe(src, dst, *pp), anps)[0]
            assert naive.allowed == bool(frame.at[src, dst]), (src, dst)
            assert engine.verdict(src, dst, *pp) == naive, (src, dst)


@SETTINGS
@given(clusters(), st.lists(policies(), max_size=4), probe_ports)
def test_no_antrea_policies_means_kubernetes_only(
    cluster: Cluster, pols: list[dict[str, Any]], pp: tuple[int, str]
) -> None:
    assert PolicyEngine(cluster, pols, []).matrix(*pp).equals(PolicyEngine(cluster, pols).matrix(*pp))
