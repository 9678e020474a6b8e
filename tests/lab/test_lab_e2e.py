"""End to end against the real local lab: no-CNI state, lab CNI, traffic, teardown.

Needs root and the lab's Debian packages (``.ci/run`` installs them). The lab is
brought up once for this module and torn down at the end; the last test checks that
nothing is left behind.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from cni_runbook.kube import Kube
from cni_runbook.kube.apply import Applier, rollback
from cni_runbook.kube.exec import exec_in_pod
from cni_runbook.kube.wait import nodes_ready, pods_running, rollout
from cni_runbook.lab import cluster, hosts
from cni_runbook.lab.images import image_ref

pytestmark = pytest.mark.lab
NS = "lab-e2e"


@pytest.fixture(scope="module")
def kube(lab_cluster):
    k = Kube.from_kubeconfig(lab_cluster.admin_kubeconfig)
    yield k
    k.close()


def test_up_again_is_a_no_op(lab_cluster):
    assert cluster.up(lab_cluster) == "lab already up (cluster); nothing to do"


def test_state_matches_kubespray_with_no_network_plugin(lab_cluster, kube):
    nodes = kube.core.list_node().items
    assert sorted(n.metadata.name for n in nodes) == sorted(n.name for n in lab_cluster.nodes)
    for node in nodes:
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "False", node.metadata.name
        assert "cni plugin not initialized" in ready.message
        assert node.spec.pod_cidr, f"{node.metadata.name} has no podCIDR"
    dns = kube.core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
    assert dns and all(p.status.phase == "Pending" for p in dns)
    for node in lab_cluster.nodes:  # kube-proxy answers its health check on every node
        with urllib.request.urlopen(f"http://{node.ip}:10256/healthz", timeout=5) as resp:
            assert resp.status == 200


def test_lab_cni_makes_nodes_ready_and_coredns_run(lab, lab_cluster, kube, tmp_path_factory):
    objects = [o for o in yaml.safe_load_all((cluster.MANIFESTS / "kube-router.yaml").read_text()) if o]
    record = tmp_path_factory.mktemp("apply") / "applied.jsonl"
    Applier(kube, default_namespace="kube-system").apply(objects, record=record)
    rollout(kube, "DaemonSet", "kube-system", "kube-router", timeout=180)
    nodes_ready(kube, expected=len(lab_cluster.nodes), timeout=120)
    rollout(kube, "Deployment", "kube-system", "coredns", timeout=180)
    lab.has_cni = True
    again = Applier(kube, default_namespace="kube-system").apply(objects)
    assert {a.action for a in again} == {"unchanged"}


def _pod(name: str, node: str, args: list[str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "agnhost", "image": image_ref("agnhost"), "args": args,
                            "ports": [{"containerPort": 8080}]}],
        },
    }


@pytest.fixture(scope="module")
def workloads(lab_cluster, kube, tmp_path_factory):
    w1, w2 = (n.name for n in lab_cluster.nodes if not n.control_plane)
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        _pod("server", w2, ["netexec", "--http-port=8080"]),
        _pod("client", w1, ["pause"]),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": NS},
         "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    ]
    record = tmp_path_factory.mktemp("workloads") / "applied.jsonl"
    Applier(kube).apply(objects, record=record)
    pods_running(kube, NS, "app in (server, client)", minimum=2, timeout=120)
    yield {p.metadata.name: p for p in kube.core.list_namespaced_pod(NS).items}
    if cluster.phase(lab_cluster) == "cluster":  # test_down_leaves_nothing_behind may have run
        rollback(kube, record)


def test_pods_on_different_nodes_reach_each_other(workloads, kube):
    server, client = workloads["server"], workloads["client"]
    assert server.spec.node_name != client.spec.node_name
    result = exec_in_pod(kube, NS, "client", ["/agnhost", "connect", f"{server.status.pod_ip}:8080", "--timeout=5s"])
    assert result.returncode == 0, result.stderr


def test_service_reachable_by_dns_name(workloads, kube):
    for name in ("echo", f"echo.{NS}", f"echo.{NS}.svc.cluster.local"):
        result = exec_in_pod(kube, NS, "client", ["/agnhost", "connect", f"{name}:80", "--timeout=5s"])
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_unreachable_port_is_reported_as_failure(workloads, kube):
    """The probe can fail: a closed port on the same server is not reachable."""
    server = workloads["server"]
    result = exec_in_pod(kube, NS, "client", ["/agnhost", "connect", f"{server.status.pod_ip}:9", "--timeout=3s"])
    assert result.returncode not in (0, None)


def test_down_leaves_nothing_behind(lab, lab_cluster):
    # Runs last in this module (pytest keeps file order): the module fixture's own
    # teardown then finds the lab already down.
    cluster.down(lab_cluster)
    lab.has_cni = False
    assert hosts.leftovers(lab_cluster) == []
    assert cluster.phase(lab_cluster) == "down"
    assert json.dumps(cluster.component_status(lab_cluster)) == "[]"
