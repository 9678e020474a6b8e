"""Failure messages name the node, pod or object at fault (issue 16): the waits' last state, stage
02's and stage 04's summaries, from recorded results (no cluster)."""

from __future__ import annotations

import pandas as pd

from cni_runbook.cni.result import InstallResult, Step
from cni_runbook.kube.wait import nodes_state, pods_state
from cni_runbook.params import LAB_FILE
from cni_runbook.state import open_stage


def _node(name: str, ready: bool) -> dict:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def _pod(name: str, node: str | None, phase: str = "Running", ready: bool = True, waiting: str | None = None) -> dict:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"metadata": {"name": name}, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"state": state}]}}


def test_the_node_wait_names_the_nodes_that_are_not_ready():
    done, text = nodes_state([_node("cp1", True), _node("w2", False), _node("w1", False)], expected=3)
    assert not done and text == "nodes Ready: 1/3; not Ready: w1, w2"
    done, text = nodes_state([_node("cp1", True)], expected=3)
    assert not done and text == "nodes Ready: 1/3; 2 node(s) not registered"
    assert nodes_state([_node("cp1", True)], expected=1) == (True, "nodes Ready: 1/1")


def test_the_pod_wait_names_the_pods_their_nodes_and_why():
    items = [_pod("coredns-a", "w1"), _pod("coredns-b", "w2", ready=False, waiting="CrashLoopBackOff"),
             _pod("coredns-c", None, phase="Pending", ready=False)]
    done, text = pods_state(items, "kube-system/k8s-app=kube-dns", minimum=2)
    assert not done
    assert text == ("pods kube-system/k8s-app=kube-dns: 1/3 Running+Ready; not ready: "
                    "coredns-b on w2 (CrashLoopBackOff), coredns-c on no node yet (Pending)")
    assert pods_state(items[:1], "ns/app=x") == (True, "pods ns/app=x: 1/1 Running+Ready")


def test_stage_02_names_the_failed_post_check_and_the_cni_pods_at_fault():
    from cni_runbook.stages.cni_install import CniInstallStage

    health = pd.DataFrame([
        {"workload": "DaemonSet antrea-agent", "pod": "antrea-agent-x1", "node": "w1", "phase": "Running",
         "ready": "2/2", "restarts": 0, "waiting": ""},
        {"workload": "DaemonSet antrea-agent", "pod": "antrea-agent-x2", "node": "w2", "phase": "Running",
         "ready": "1/2", "restarts": 7, "waiting": "CrashLoopBackOff"}])
    result = InstallResult(dry_run=False, steps=[Step("nodes Ready", "passed", "nodes Ready: 3/3")],
                           post_checks=[Step("antrea agents connected", "failed",
                                             "agent on w2 not connected to the controller\nmore")], health=health)
    outcome = CniInstallStage.outcome(result)
    assert outcome.status == "failed"
    assert outcome.summary == ("0 objects (nothing applied); 0 change(s); failed: antrea agents connected "
                               "(agent on w2 not connected to the controller); CNI pods not ready: "
                               "antrea-agent-x2 on w2: Running, ready 1/2, restarts 7 (CrashLoopBackOff)")
    result.post_checks[0].status = "passed"
    result.health = health.iloc[:1]
    assert CniInstallStage.outcome(result).summary == "0 objects (nothing applied); 0 change(s)"


def test_stage_04_names_the_incorrect_pairs_and_the_leftovers_it_removed(tmp_path):
    from cni_runbook.policy import matrix as M
    from cni_runbook.policy import flow, results
    from cni_runbook.stages.policy_qos import PolicyQosStage

    explanation = pd.DataFrame([{"from": "x/a", "to": "y/b", "expected": M.BLOCKED, "observed": M.ALLOWED,
                                 "explanation": "deny-all selects y/b"}])
    comparison = M.Comparison(71, 1, 0, 9, pd.DataFrame(), (("x/a", "y/b"),))
    failed_set = results.SetResult("default-deny-ingress", "builtin", "deny", matrices=[
        results.MatrixResult(80, "TCP", pd.DataFrame(), pd.DataFrame(), comparison, explanation)])
    ctx = open_stage("04_policy_qos", [str(LAB_FILE)], ["qos.enabled=false"], tmp_path / "run", False)
    stage = PolicyQosStage(ctx)
    stage.policy_run = flow.PolicyRun(layout=None, baseline=results.SetResult("baseline", "", ""),
                                        results=[failed_set])
    stage.cni_audit = pd.DataFrame([{"pod": "kube-system/kube-router-1", "status": "ok"}])
    stage.leftovers = ["Namespace x", "Namespace cni-runbook-qos"]
    outcome = stage.outcome(ctx.params)
    assert outcome.status == "failed"
    assert outcome.summary == (
        "removed 2 leftover(s) of an earlier, interrupted run first (Namespace x, Namespace cni-runbook-qos); "
        "policy: 0/1 sets as expected (correct 71, incorrect 1); failed: policy default-deny-ingress "
        "(correct 71, incorrect 1; x/a -> y/b TCP/80: observed allowed, expected blocked)")
    assert outcome.checks[0].name == "leftovers of earlier runs" and outcome.checks[0].status == "passed"
    assert outcome.data["leftovers_removed"] == ["Namespace x", "Namespace cni-runbook-qos"]


def test_stage_05_names_the_failed_step():
    from cni_runbook.lifecycle.apply import LifecycleResult, Step

    result = LifecycleResult("upgrade", steps=[
        Step("apply CRDs", "passed"), Step("rollout DaemonSet kube-system/antrea-agent", "failed",
                                          "timed out after 300s; last state: 2/3 ready\nmore")])
    assert result.summary() == ("upgrade: 1/2 steps passed; failed: rollout DaemonSet kube-system/antrea-agent "
                                "(timed out after 300s; last state: 2/3 ready)")
    result.error = "CNI upgrade failed while applying: boom"
    assert result.summary() == "upgrade: 1/2 steps passed; CNI upgrade failed while applying: boom"
