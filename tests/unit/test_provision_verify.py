"""Stage 01's verification on recorded Node/Pod objects (lab-no-cni.json: the lab instance right
after `up`, as Kubespray leaves a cluster with kube_network_plugin none), and its failure messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from cni_runbook.provision import evaluate, nodes_frame, settled, verify_cluster

RECORDED = json.loads((Path(__file__).parent / "data" / "provision" / "lab-no-cni.json").read_text())
NODES = ["lab-cp1", "lab-w1", "lab-w2"]


def recorded():
    return copy.deepcopy(RECORDED["nodes"]), copy.deepcopy(RECORDED["coredns_pods"])


def by_name(checks):
    return {c.name: c for c in checks}


def test_the_recorded_no_cni_cluster_passes_every_check():
    nodes, pods = recorded()
    checks = evaluate(nodes, pods, NODES)
    assert [c.name for c in checks] == ["nodes_registered", "pod_cidrs", "nodes_not_ready_no_cni", "coredns_pending"]
    assert all(c.status == "passed" for c in checks), checks
    c = by_name(checks)
    assert c["nodes_registered"].message == "3/3 inventory nodes registered"
    assert c["pod_cidrs"].message == "lab-cp1 10.233.64.0/24, lab-w1 10.233.65.0/24, lab-w2 10.233.66.0/24"
    assert "cni plugin not initialized" in c["nodes_not_ready_no_cni"].message
    assert c["coredns_pending"].message == "2 CoreDNS pod(s) Pending (Unschedulable)"


def test_a_ready_node_means_a_cni_is_already_there():
    nodes, pods = recorded()
    ready = next(x for x in nodes[1]["status"]["conditions"] if x["type"] == "Ready")
    ready.update(status="True", reason="KubeletReady", message="kubelet is posting ready status")
    [check] = [c for c in evaluate(nodes, pods, NODES) if c.name == "nodes_not_ready_no_cni"]
    assert check.status == "failed"
    assert check.message.startswith("lab-w1 is Ready: a CNI is already working on this cluster")


def test_notready_for_another_reason_is_not_the_expected_state():
    nodes, pods = recorded()
    ready = next(x for x in nodes[0]["status"]["conditions"] if x["type"] == "Ready")
    ready.update(reason="KubeletNotReady", message="PLEG is not healthy: pleg was last seen active 3m0s ago")
    [check] = [c for c in evaluate(nodes, pods, NODES) if c.name == "nodes_not_ready_no_cni"]
    assert check.status == "failed"
    assert check.message == ("lab-cp1 is NotReady for another reason than the missing CNI: KubeletNotReady: "
                             "PLEG is not healthy: pleg was last seen active 3m0s ago")


def test_running_coredns_fails_with_the_reason():
    nodes, pods = recorded()
    pods[0]["status"]["phase"] = "Running"
    pods[0]["spec"]["nodeName"] = "lab-w2"
    [check] = [c for c in evaluate(nodes, pods, NODES) if c.name == "coredns_pending"]
    assert check.status == "failed"
    assert check.message.startswith(f"{pods[0]['metadata']['name']} is Running on lab-w2: CoreDNS only leaves Pending")


def test_no_coredns_at_all_fails():
    nodes, _ = recorded()
    [check] = [c for c in evaluate(nodes, [], NODES) if c.name == "coredns_pending"]
    assert check.status == "failed" and "no CoreDNS pod (k8s-app=kube-dns) in kube-system" in check.message


def test_a_missing_inventory_node_is_named_and_extras_are_noted():
    nodes, pods = recorded()
    checks = by_name(evaluate(nodes[:2], pods, NODES))
    assert checks["nodes_registered"].status == "failed"
    assert checks["nodes_registered"].message == "not registered: lab-w2 (registered: lab-cp1, lab-w1)"
    extra = by_name(evaluate(nodes, pods, NODES[:2]))["nodes_registered"]
    assert extra.status == "passed" and extra.message.endswith("also registered, not in the inventory: lab-w2")


def test_a_node_without_pod_cidr_fails():
    nodes, pods = recorded()
    del nodes[2]["spec"]["podCIDR"]
    check = by_name(evaluate(nodes, pods, NODES))["pod_cidrs"]
    assert check.status == "failed" and check.message.startswith("no podCIDR on lab-w2")


def test_nothing_registered_skips_the_node_checks():
    checks = by_name(evaluate([], [], NODES))
    assert checks["nodes_registered"].status == "failed"
    assert checks["pod_cidrs"].status == checks["nodes_not_ready_no_cni"].status == "skipped"


def test_nodes_table():
    nodes, _ = recorded()
    frame = nodes_frame(nodes)
    assert list(frame.columns) == ["name", "roles", "kubelet", "podCIDR", "internal_ip", "ready", "conditions",
                                   "ready_message"]
    row = frame.iloc[0].to_dict()
    assert row["name"] == "lab-cp1" and row["roles"] == "control-plane" and row["kubelet"] == "v1.35.4"
    assert row["podCIDR"] == "10.233.64.0/24" and row["ready"] == "False"
    assert row["conditions"] == "MemoryPressure=False, DiskPressure=False, PIDPressure=False, Ready=False"
    assert row["ready_message"].endswith("cni plugin not initialized")
    assert frame.iloc[1]["roles"] == "<none>"


def test_settled_says_what_it_waits_for():
    nodes, pods = recorded()
    assert settled(nodes, pods, NODES) == (True, "")
    del nodes[1]["spec"]["podCIDR"]
    assert settled(nodes[:2], [], NODES) == (False, "lab-w2 to register, a podCIDR on lab-w1, CoreDNS pods")


def test_verify_without_a_kubeconfig_fails_on_the_api_check(tmp_path):
    v = verify_cluster(tmp_path / "missing.conf", NODES)
    assert not v.ok
    assert [(c.name, c.status) for c in v.checks][:2] == [("api_reachable", "failed"), ("nodes_registered", "skipped")]
    assert "does not exist" in v.checks[0].message


def test_verify_against_a_closed_port_times_out_with_the_server_named(tmp_path):
    conf = tmp_path / "admin.conf"
    conf.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: not-a-real-token-123}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n")
    v = verify_cluster(conf, NODES, api_timeout=1, poll_s=0.2)
    assert v.checks[0].status == "failed"
    assert v.checks[0].message.startswith("https://127.0.0.1:9 did not answer within 1s")
    assert "not-a-real-token" not in v.summary()


def test_summary_lists_failures():
    from cni_runbook.checks import Check
    from cni_runbook.provision import Verification

    nodes, pods = recorded()
    for n in nodes:
        next(x for x in n["status"]["conditions"] if x["type"] == "Ready")["status"] = "True"
    v = Verification([Check("api_reachable", "passed", "ok"), *evaluate(nodes, pods, NODES)])
    assert not v.ok and [c.name for c in v.failures] == ["nodes_not_ready_no_cni"]
    assert v.summary().startswith("verification failed: nodes_not_ready_no_cni: lab-cp1 is Ready")
