"""Stage 04 end to end on the real lab (kube-router enforces NetworkPolicy, the chained CNI
``bandwidth`` plugin enforces the bandwidth annotations).

One policy run serves the module: the x/y/z by a/b/c layout, the baseline, all six built-in
scenarios; each observed matrix must equal the engine's expectation, and everything the run
created must be gone afterwards. Then a bandwidth-limited iperf3 pair, and the CNI pod audit.
"""

from __future__ import annotations

import time

import pytest

from cni_runbook.params.schema import Params
from cni_runbook.policy import flow, results
from cni_runbook.policy.workloads import probe_image
from cni_runbook.provision import lab as lab_target
from cni_runbook.qos import audit, bandwidth

pytestmark = pytest.mark.lab

SCENARIOS = ["default-deny-ingress", "default-deny-egress-allow-dns", "namespace-isolation",
             "allow-from-labelled-namespace", "ip-block", "named-port"]


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)



@pytest.fixture(scope="module")
def params() -> Params:
    return Params(policy={"scenarios": ["all"], "enforcement_timeout_s": 45},
                  qos={"bandwidth": {"ingress": "20M", "egress": "20M"}, "duration_s": 4})


@pytest.fixture(scope="module")
def policy_run(kube, params, tmp_path_factory):
    started = time.monotonic()
    run = flow.run(kube, params.policy, probe_image(params, lab_target.target(require_up=False)), tmp_path_factory.mktemp("stage04"), progress=_say)
    _say(f"policy run: {run.summary} in {time.monotonic() - started:.0f}s")
    _say("\n" + results.summary_frame(run.results).to_string())
    return run


def test_baseline_everything_reachable(policy_run):
    assert policy_run.error == ""
    # 9 pods, 72 pairs (loopback ignored) on TCP/80 and TCP/81, the matrices the built-in sets
    # compare (the layout also serves UDP: a set from a file probes it, and its baseline with it)
    assert policy_run.baseline.summary == "correct 144, incorrect 0"
    assert [m.label for m in policy_run.baseline.matrices] == ["TCP/80", "TCP/81"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_observed_equals_expected(policy_run, name):
    result = next(r for r in policy_run.results if r.name == name)
    details = {m.label: m.comparison.summary for m in result.matrices}
    assert details == {"TCP/80": "correct 72, incorrect 0", "TCP/81": "correct 72, incorrect 0"}, (
        f"{name}: {details}\n{result.mismatches().to_string()}")
    assert result.ok, result.row()
    assert result.latency_s is not None and result.latency_s < 45
    assert result.restored_s is not None, "the baseline did not return after removing the policies"


def test_policies_and_namespaces_removed(policy_run, kube):
    assert [r.name for r in policy_run.results] == SCENARIOS
    assert set(policy_run.removed) >= {"Namespace x", "Namespace y", "Namespace z"}
    # the pods are gone; the namespaces are gone or terminating (Kubernetes removes a namespace
    # 5 s after its deletion; the next deploy of the layout waits for that)
    left_ns = [n for n in kube.core.list_namespace().items if n.metadata.name in {"x", "y", "z"}]
    assert all(n.metadata.deletion_timestamp for n in left_ns), [n.metadata.name for n in left_ns]
    assert [p.metadata.name for n in left_ns for p in kube.core.list_namespaced_pod(n.metadata.name).items] == []
    left = kube.dynamic.get(kube.resource("networking.k8s.io/v1", "NetworkPolicy")).items
    assert [f"{p.metadata.namespace}/{p.metadata.name}" for p in left] == []


def test_bandwidth_limits_hold_and_stay_below_the_unlimited_baseline(kube, params, tmp_path):
    run = bandwidth.measure(kube, params.qos, bandwidth.iperf3_image(params, lab_target.target(require_up=False)), tmp_path / "qos.jsonl", progress=_say)
    _say(f"{run.measurements()}")
    assert set(run.results) == {"baseline", "ingress", "egress"}
    assert all(r.ok for r in run.results.values()), run.measurements()
    rows = {c.direction: c for c in run.checks}
    for direction in ("ingress", "egress"):
        check = rows[direction]
        assert check.status == "passed", check.row()
        assert check.measured_bps < check.baseline_bps / 2
    assert not kube.core.list_namespace(field_selector=f"metadata.name={params.qos.namespace}").items


def test_cni_pod_audit_reads_the_kube_router_pods(kube, lab):
    frame = audit.audit_pods(audit.cni_pods(kube, "kube-system", "lab"))
    assert len(frame) == len(lab.cfg.nodes)
    assert set(frame["owner"]) == {"DaemonSet"}
    assert set(frame["priorityClassName"]) == {"system-node-critical"}
    assert set(frame["tolerations"]) == {"all taints"}
    assert audit.audit_check(frame)["status"] == "passed"
