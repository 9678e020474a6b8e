"""CNI pod QoS audit and the Antrea Egress shaping plan (pure functions on pod/params dicts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cni_runbook.cni.antrea import AGENT_CONF, find_antrea_config
from cni_runbook.cni.manifests import Manifest
from cni_runbook.params.schema import Params
from cni_runbook.qos import antrea as QA
from cni_runbook.qos.audit import audit_check, audit_pod, audit_pods, owner_kind

LAB_MANIFEST = Path(__file__).parents[2] / "lib/cni_runbook/lab/manifests/kube-router.yaml"
ANTREA_FIXTURE = Path("/work/shared/fixtures/antrea/antrea-v2.7.0-dev-manifest.yml")


def pod(name: str, owner: str, spec: dict, qos: str = "Burstable") -> dict:
    return {"metadata": {"name": name, "ownerReferences": [{"kind": owner, "name": "o", "controller": True}]},
            "spec": {"nodeName": "n1", **spec}, "status": {"qosClass": qos}}


def requests(cpu: str = "100m", memory: str = "64Mi", limits: dict | None = None) -> dict:
    return {"requests": {"cpu": cpu, "memory": memory}, **({"limits": limits} if limits else {})}


GOOD_AGENT = pod("agent-1", "DaemonSet", {
    "priorityClassName": "system-node-critical", "tolerations": [{"operator": "Exists"}],
    "containers": [{"name": "agent", "resources": requests()}]})


def test_a_well_configured_agent_has_no_recommendation() -> None:
    row = audit_pod(GOOD_AGENT)
    assert row["status"] == "passed" and row["recommendations"] == ""
    assert row["tolerations"] == "all taints" and row["requests"] == "agent: cpu=100m, memory=64Mi"


def test_best_effort_agent_without_priority_or_tolerations_gets_every_recommendation() -> None:
    row = audit_pod(pod("agent-2", "DaemonSet", {"containers": [{"name": "agent"}]}, qos="BestEffort"))
    assert row["status"] == "warning"
    advice = row["recommendations"]
    assert "set priorityClassName: system-node-critical (now none)" in advice
    assert "QoS class BestEffort" in advice
    assert "not tolerated: node.kubernetes.io/not-ready:NoSchedule" in advice


def test_controller_may_be_cluster_or_node_critical() -> None:
    spec = {"containers": [{"name": "c", "resources": requests()}]}
    for prio in ("system-cluster-critical", "system-node-critical"):
        assert audit_pod(pod("ctl", "ReplicaSet", {**spec, "priorityClassName": prio}))["status"] == "passed"
    row = audit_pod(pod("ctl", "ReplicaSet", spec))
    assert owner_kind(pod("ctl", "ReplicaSet", spec)) == "Deployment"
    assert "system-cluster-critical" in row["recommendations"] and "tolerate" not in row["recommendations"]


def test_specific_tolerations_are_enough_and_cpu_limits_are_flagged() -> None:
    tolerations = [{"key": k, "operator": "Exists", "effect": e} for k, e in (
        ("node.kubernetes.io/not-ready", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/network-unavailable", "NoSchedule"))]
    tolerations.append({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"})  # any effect
    row = audit_pod(pod("agent", "DaemonSet", {
        "priorityClassName": "system-node-critical", "tolerations": tolerations,
        "containers": [{"name": "a", "resources": requests(limits={"cpu": "1", "memory": "1Gi"})},
                       {"name": "b", "resources": {"requests": {"cpu": "10m"}}}]}))
    assert "tolerate" not in row["recommendations"]
    assert "CPU limit on a can throttle" in row["recommendations"]
    assert "containers without cpu+memory requests: b" in row["recommendations"]
    assert row["limits"] == "a: cpu=1, memory=1Gi"


def test_lab_cni_manifest_audits_clean_on_priority_and_tolerations() -> None:
    """The lab's kube-router DaemonSet as a pod (what the API server would return)."""
    ds = next(o for o in yaml.safe_load_all(LAB_MANIFEST.read_text()) if o and o["kind"] == "DaemonSet")
    row = audit_pod(pod("kube-router-x", "DaemonSet", ds["spec"]["template"]["spec"]))
    assert row["priorityClassName"] == "system-node-critical" and row["tolerations"] == "all taints"
    assert "priorityClassName" not in row["recommendations"] and "tolerate" not in row["recommendations"]


def test_audit_table_and_check() -> None:
    frame = audit_pods([GOOD_AGENT, pod("z", "DaemonSet", {"containers": [{"name": "c"}]}, "BestEffort")])
    assert list(frame["pod"]) == ["agent-1", "z"]
    assert audit_check(frame) == {"name": "qos cni pod audit", "status": "passed",
                                  "message": "2 CNI pods audited, 1 with recommendations"}
    assert audit_check(audit_pods([]))["status"] == "failed"


# ----------------------------------------------------------------------------- Antrea Egress


def test_egress_object_shape() -> None:
    obj = QA.egress_object("e", "10M", egress_ip="10.0.0.9", namespace_selector={"matchLabels": {"a": "b"}})
    assert obj["apiVersion"] == "crd.antrea.io/v1beta1" and obj["kind"] == "Egress"
    assert obj["spec"] == {"appliedTo": {"namespaceSelector": {"matchLabels": {"a": "b"}}}, "egressIP": "10.0.0.9",
                           "bandwidth": {"rate": "10M", "burst": "10M"}}


def test_default_antrea_config_lacks_the_shaping_gate() -> None:
    params = Params(cni={"profile": "antrea"}, qos={"antrea_egress": {"egress_ip": "10.0.0.9"}})
    obj, checks = QA.egress_plan(params.qos, params.cni)
    assert obj["spec"]["bandwidth"] == {"rate": "10M", "burst": "10M"}  # qos.bandwidth.egress
    rows = {r["check"]: r for r in checks.to_dict("records")}
    assert rows["featureGates.Egress"]["status"] == "passed"
    assert rows["featureGates.EgressTrafficShaping"]["status"] == "failed"
    assert rows["featureGates.EgressTrafficShaping"]["source"] == "Antrea default"
    assert "cni.config.featureGates.EgressTrafficShaping: true" in rows["featureGates.EgressTrafficShaping"]["fix"]


@pytest.mark.parametrize("config", [{"featureGates": {"EgressTrafficShaping": True}},
                                    {"featureGates.EgressTrafficShaping": True}])
def test_gate_enabled_in_cni_config(config: dict) -> None:
    params = Params(cni={"profile": "antrea", "config": config},
                    qos={"antrea_egress": {"external_ip_pool": "pool", "rate": "50M", "burst": "100M"}})
    obj, checks = QA.egress_plan(params.qos, params.cni)
    assert set(checks["status"]) == {"passed"}
    assert obj["spec"]["externalIPPool"] == "pool" and obj["spec"]["bandwidth"] == {"rate": "50M", "burst": "100M"}


def test_missing_egress_ip_source_is_reported() -> None:
    _, checks = QA.egress_plan(Params().qos, Params().cni)
    row = checks[checks["check"] == "Egress IP source"].iloc[0]
    assert row["status"] == "failed" and "egress_ip or external_ip_pool" in row["fix"]


@pytest.mark.skipif(not ANTREA_FIXTURE.exists(), reason="shared Antrea fixture not present")
def test_gates_read_from_the_real_manifest_config() -> None:
    config = find_antrea_config(Manifest(ANTREA_FIXTURE.read_text(), str(ANTREA_FIXTURE)))
    gates = QA.effective_gates({}, config.agent)
    # v2.7.0's antrea-agent.conf only comments the gates out: Antrea's defaults apply
    assert gates == {"Egress": (True, "Antrea default"), "EgressTrafficShaping": (False, "Antrea default")}
    enabled = config.agent.replace("#  EgressTrafficShaping: false", "  EgressTrafficShaping: true")
    assert QA.effective_gates({}, enabled)["EgressTrafficShaping"] == (True, "manifest antrea-agent.conf")
    assert AGENT_CONF == "antrea-agent.conf"
