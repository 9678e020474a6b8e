"""Faults injected into the real lab: a frozen API server, an API server restart (two runs at
once, SIGTERM and SIGKILL of a run, canary secrets: tests/lab/test_reliability_runs.py).

* a SIGSTOPped API server fails a stage-03 step bounded by its own timeout, not by the freeze;
* a short API server restart (killed; the lab's supervisor restarts it) during a stage-02 install
  is ridden out by the retries.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path



def _apiserver_pid(cfg) -> int:
    status = json.loads((Path(cfg.state_dir) / "status.json").read_text())
    (pid,) = [c["pid"] for c in status["components"] if c["name"] == "kube-apiserver" and c["pid"]]
    return pid


def _wait_api(kube, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.version()
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise AssertionError("the lab API server did not come back")



def test_a_frozen_api_server_fails_the_step_within_its_timeout(lab, kube):
    from cni_runbook.kube import Kube
    from cni_runbook.lab.images import image_ref
    from cni_runbook.validation.suite import SuiteConfig, run_suite
    from cni_runbook.validation.workloads import Images, cleanup

    cfg = SuiteConfig(images=Images(image_ref("agnhost"), image_ref("iperf3")), cni_agent="kube-system/kube-router",
                      probe_timeout_s=2, attempts=1, pod_ready_s=30, perf=False)
    pid = _apiserver_pid(lab.cfg)
    frozen: list[float] = []
    messages: list[str] = []

    def say(message: str) -> None:
        messages.append(message)
        if not frozen and message.startswith("applying"):
            os.killpg(pid, signal.SIGSTOP)
            frozen.append(time.monotonic())

    fresh = Kube.from_kubeconfig(lab.cfg.admin_kubeconfig)
    thaw = threading.Timer(60, lambda: os.killpg(pid, signal.SIGCONT))
    thaw.start()
    try:
        try:
            result = run_suite(fresh, cfg, progress=say)
            outcome = result.summary
        except Exception as exc:  # noqa: BLE001 - failing is the expected outcome
            outcome = f"{type(exc).__name__}: {exc}"
        ended = time.monotonic()
    finally:
        thaw.cancel()
        os.killpg(pid, signal.SIGCONT)
        fresh.close()
    assert frozen, messages
    print(f"stage 03 step failed {ended - frozen[0]:.1f} s after the freeze: {outcome}")
    assert ended - frozen[0] < 45, outcome
    assert "did not answer" in outcome, outcome  # said plainly, naming what was being done
    _wait_api(kube)
    cleanup(kube, cfg.namespace, wait=True, timeout=120)


def test_a_short_api_server_restart_during_the_cni_install_is_ridden_out(lab, tmp_path):
    from cni_runbook import cni as engine
    from cni_runbook.lab.images import LAB_REGISTRY
    from cni_runbook.params.schema import Cni

    lab.fresh()  # no CNI: the install has a DaemonSet to roll out and nodes to wait for
    kube = lab.kube()
    prepared = engine.prepare(Cni(profile="lab", version=None, image_registry=f"{LAB_REGISTRY}/cnilab"), tmp_path / "art")
    objects = engine.objects_for_cluster(prepared.rendered, kube, namespace="kube-system")
    pid = _apiserver_pid(lab.cfg)
    restarted: list[float] = []

    def progress(message: str) -> None:
        if not restarted and message.startswith("DaemonSet "):  # waiting for the rollout
            os.killpg(pid, signal.SIGKILL)  # the supervisor starts it again after 1 s
            restarted.append(time.monotonic())

    timeouts = engine.Timeouts(crd_s=30, rollout_s=180, apiservice_s=60, nodes_s=120, coredns_s=180, rollback_s=90)
    try:
        result = engine.install(kube, objects, record_dir=tmp_path / "rec", timeouts=timeouts, expected_nodes=3,
                                progress=progress)
    finally:
        kube.close()
    lab.has_cni = result.ok
    assert restarted, "the install never reached its rollout wait"
    assert _apiserver_pid(lab.cfg) != pid  # it really was restarted
    assert result.ok, result.steps_table()
    assert all(s.status == "passed" for s in result.steps)
