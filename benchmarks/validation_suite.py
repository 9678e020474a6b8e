"""Benchmark of stage 03 on the lab (not a timed test): full suite wall time; the pod-to-pod
matrix batched (one exec per source pod) vs the naive way (one exec per pair, serially), in the
same run; matrix time for 6, 12 and 24 probe pods.

    CNI_RUNBOOK_LAB_INDEX=N .venv/bin/python benchmarks/validation_suite.py [--skip-suite]

Needs a running lab with its CNI (`cluster.up` + `cluster.install_cni`).
"""

from __future__ import annotations

import argparse
import time

from cni_runbook.kube import Kube
from cni_runbook.kube.apply import Applier
from cni_runbook.kube.exec import exec_in_pod
from cni_runbook.kube.wait import pods_running
from cni_runbook.lab.config import LabConfig
from cni_runbook.lab.images import image_ref
from cni_runbook.validation.probe import Probe, probe_command, run_probes
from cni_runbook.validation.suite import SuiteConfig, run_suite
from cni_runbook.validation.workloads import LABELS, SELECTOR, Images, cleanup, list_nodes, ready_nodes

NS = "cni-runbook-bench"


def probe_pods(kube: Kube, count: int, nodes: list[str]) -> list[tuple[str, str]]:
    """``count`` agnhost netexec pods spread over the nodes; returns (name, ip)."""
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": LABELS}}]
    for i in range(count):
        objects.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"p{i}", "namespace": NS, "labels": LABELS},
                        "spec": {"nodeName": nodes[i % len(nodes)], "tolerations": [{"operator": "Exists"}],
                                 "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": False,
                                 "containers": [{"name": "main", "image": image_ref("agnhost"),
                                                 "command": ["/agnhost", "netexec", "--http-port=8080"],
                                                 "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}})
    Applier(kube).apply(objects)
    pods_running(kube, NS, SELECTOR, minimum=count, timeout=300)
    pods = kube.core.list_namespaced_pod(NS, label_selector=SELECTOR).items
    return sorted(((p.metadata.name, p.status.pod_ip) for p in pods), key=lambda x: int(x[0][1:]))


def matrix_probes(pods: list[tuple[str, str]]) -> list[Probe]:
    return [Probe(f"{NS}/{src}", ip, 8080, name=f"{src}->{dst}") for src, _ in pods for dst, ip in pods if src != dst]


def naive(kube: Kube, probes: list[Probe], timeout_s: float = 2.0) -> tuple[float, int]:
    """One exec per pair, one after the other (what a simple loop over kubectl exec does)."""
    started = time.monotonic()
    ok = 0
    for p in probes:
        ns, pod = p.src.split("/")
        res = exec_in_pod(kube, ns, pod, list(probe_command(p, timeout_s)), timeout=timeout_s + 10)
        ok += res.returncode == 0
    return time.monotonic() - started, ok


def batched(kube: Kube, probes: list[Probe]) -> tuple[float, int]:
    started = time.monotonic()
    results = run_probes(kube, probes, timeout_s=2.0, attempts=1, concurrency=8)
    return time.monotonic() - started, sum(r.ok is True for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--sizes", default="6,12,24")
    args = ap.parse_args()
    cfg = LabConfig()
    kube = Kube.from_kubeconfig(cfg.admin_kubeconfig)
    nodes = ready_nodes(list_nodes(kube))
    print(f"lab: {len(nodes)} Ready nodes ({', '.join(nodes)})")
    if not args.skip_suite:
        scfg = SuiteConfig(images=Images(image_ref("agnhost"), image_ref("iperf3")),
                           cni_agent="kube-system/kube-router", probe_timeout_s=2, perf=False)
        started = time.monotonic()
        res = run_suite(kube, scfg)
        wall = time.monotonic() - started
        print(f"full suite (no perf): {wall:.1f}s wall; {res.summary}; {res.timing_line()} (target: 60 s)")
        scfg.perf = True
        started = time.monotonic()
        res = run_suite(kube, scfg)
        print(f"full suite with perf: {time.monotonic() - started:.1f}s wall; {res.summary}; {res.timing_line()}")
    for size in (int(s) for s in args.sizes.split(",")):
        try:
            t0 = time.monotonic()
            pods = probe_pods(kube, size, nodes)
            setup = time.monotonic() - t0
            probes = matrix_probes(pods)
            t_batch, ok_batch = batched(kube, probes)
            line = (f"{size:>2} pods, {len(probes):>3} pairs: batched {t_batch:6.2f}s ({ok_batch} ok, "
                    f"{size} execs)")
            if size <= 12:
                t_naive, ok_naive = naive(kube, probes)
                line += f"; naive {t_naive:6.2f}s ({ok_naive} ok, {len(probes)} execs); ratio {t_naive / t_batch:5.1f}x"
            else:
                per = naive(kube, probes[:20])[0] / 20
                line += f"; naive (est. from 20 pairs) {per * len(probes):6.1f}s; ratio ~{per * len(probes) / t_batch:5.1f}x"
            print(line + f"   [pod setup {setup:.1f}s]")
        finally:
            cleanup(kube, NS, wait=True, timeout=120)


if __name__ == "__main__":
    main()
