"""Benchmark of the probe engine on the lab (not a timed test): figures and ratios in one run.

* matrix: 24 probe pods / 552 pairs and 48 pods / 2,256 pairs with the engine (one prober exec
  per source pod), against the naive per-pair baseline (one exec per pair, one after the other,
  what a loop over ``kubectl exec`` does) measured in the same run (on a sample of pairs for the
  large sizes, extrapolated); goal: 552 pairs <= 1.0 s and >= 30x the baseline;
* stage 03: the full suite without perf, deploy and cleanup included (goal <= 8 s);
* stage 04: the policy part (layout, baseline, six built-in sets, removal; goal <= 30 s);
* streaming: 20 pairs every 200 ms for 60 s (goal: no gap over 2 intervals), with a known
  outage injected (an iptables DROP of one destination in its node for 3 s) that the outage
  window must match within 250 ms at both ends.

    CNI_RUNBOOK_LAB_INDEX=N .venv/bin/python benchmarks/validation_suite.py [--skip-suite] [--skip-policy]
        [--skip-stream] [--sizes 24,48] [--stream-s 60]

Needs a running lab with its CNI (`cluster.up` + `cluster.install_cni`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from cni_runbook.kube import Kube
from cni_runbook.kube.apply import Applier
from cni_runbook.kube.exec import exec_in_pod
from cni_runbook.kube.wait import pods_running
from cni_runbook.lab.config import LabConfig
from cni_runbook.lab.hosts import nsenter_prefix
from cni_runbook.lab.images import image_ref
from cni_runbook.validation.probe import Probe, ProberPool, probe_argv, run_probes
from cni_runbook.validation.stream import stream
from cni_runbook.validation.suite import SuiteConfig, run_suite
from cni_runbook.validation.workloads import LABELS, SELECTOR, Images, cleanup, list_nodes, ready_nodes

NS = "cni-runbook-bench"
PORT = 8080


def load() -> str:
    """The machine's load average (1/5/15 min): the figures depend on it (a shared 2-core machine)."""
    return "load avg " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def probe_pods(kube: Kube, count: int, nodes: list[str]) -> list[tuple[str, str, str]]:
    """``count`` agnhost netexec pods spread over the nodes; returns (name, ip, node)."""
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": LABELS}}]
    for i in range(count):
        objects.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"p{i}", "namespace": NS, "labels": LABELS},
                        "spec": {"nodeName": nodes[i % len(nodes)], "tolerations": [{"operator": "Exists"}],
                                 "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": False,
                                 "containers": [{"name": "main", "image": image_ref("agnhost"),
                                                 "command": ["/agnhost", "netexec", f"--http-port={PORT}"],
                                                 "readinessProbe": {"tcpSocket": {"port": PORT},
                                                                    "periodSeconds": 1}}]}})
    Applier(kube).apply(objects)
    pods_running(kube, NS, SELECTOR, minimum=count, timeout=300)
    pods = kube.core.list_namespaced_pod(NS, label_selector=SELECTOR).items
    return sorted(((p.metadata.name, p.status.pod_ip, p.spec.node_name) for p in pods), key=lambda x: int(x[0][1:]))


def matrix_probes(pods: list[tuple[str, str, str]]) -> list[Probe]:
    return [Probe(f"{NS}/{src}", ip, PORT, name=f"{src}->{dst}") for src, _, _ in pods for dst, ip, _ in pods
            if src != dst]


def naive(kube: Kube, probes: list[Probe], timeout_s: float = 2.0) -> tuple[float, int]:
    """The baseline: one exec per pair, one after the other (what a loop over kubectl exec does)."""
    started = time.monotonic()
    ok = 0
    for p in probes:
        ns, pod = p.src.split("/")
        res = exec_in_pod(kube, ns, pod, list(probe_argv(p, timeout_s)), timeout=timeout_s + 10)
        ok += res.returncode == 0
    return time.monotonic() - started, ok


def timed(fn, *args, **kwargs) -> tuple[float, int]:
    started = time.monotonic()
    results = fn(*args, **kwargs)
    return time.monotonic() - started, sum(r.ok is True for r in results)


def bench_matrix(kube: Kube, nodes: list[str], sizes: list[int]) -> None:
    for size in sizes:
        try:
            t0 = time.monotonic()
            pods = probe_pods(kube, size, nodes)
            setup = time.monotonic() - t0
            probes = matrix_probes(pods)
            kw = dict(timeout_s=2.0, attempts=1, concurrency=48)
            run_probes(kube, probes[: size - 1], **kw)  # warm the API server's and the nodes' caches once
            cold = [timed(run_probes, kube, probes, **kw) for _ in range(2)]  # exec start-up included
            with ProberPool() as pool:
                first = timed(pool, kube, probes, **kw)
                warm = [timed(pool, kube, probes, **kw) for _ in range(3)]  # probers already running
                execs = pool.opened
            sample = probes if len(probes) <= 60 else probes[:: max(1, len(probes) // 40)][:40]
            t_naive, ok_naive = naive(kube, sample)
            est = t_naive / len(sample) * len(probes)
            kind = "measured" if len(sample) == len(probes) else f"est. from {len(sample)} pairs"
            c_best, w_best = min(cold)[0], min(warm)[0]
            goal = "   (goal: <= 1.0 s and >= 30x)" if size == 24 else ""
            print(f"matrix {size:>2} pods, {len(probes):>4} pairs: naive {est:6.1f}s ({kind}, {ok_naive}/{len(sample)} "
                  f"ok)   [pod setup {setup:.1f}s]", flush=True)
            print(f"  cold (run_probes: {size} execs started): {c_best:5.2f}s best of "
                  f"{', '.join(f'{t:.2f}' for t, _ in cold)} ({cold[0][1]} ok); ratio {est / c_best:5.1f}x{goal}")
            print(f"  warm (ProberPool, {execs} execs kept): {w_best:5.2f}s best of "
                  f"{', '.join(f'{t:.2f}' for t, _ in warm)} ({warm[0][1]} ok; its first run {first[0]:.2f}s; "
                  f"{w_best / len(probes) * 1000:.2f} ms per pair); "
                  f"ratio {est / w_best:5.1f}x{goal}   [{load()}]", flush=True)
        finally:
            cleanup(kube, NS, wait=True, timeout=180)


def bench_suite(kube: Kube) -> None:
    scfg = SuiteConfig(images=Images(image_ref("agnhost"), image_ref("iperf3")),
                       cni_agent="kube-system/kube-router", probe_timeout_s=2, perf=False)
    started = time.monotonic()
    res = run_suite(kube, scfg)
    wall = time.monotonic() - started
    print(f"stage 03 suite (no perf): {wall:.1f}s wall; {res.summary}; {res.timing_line()}  "
          f"(goal: <= 8 s; ratio to goal {wall / 8:.2f})   [{load()}]", flush=True)


def bench_policy(kube: Kube) -> None:
    from cni_runbook.params.schema import Params
    from cni_runbook.policy import flow

    params = Params(policy={"scenarios": ["all"], "enforcement_timeout_s": 45})
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        run = flow.run(kube, params.policy, image_ref("agnhost"), Path(tmp))
    wall = time.monotonic() - started
    probes = sum(r.probes_run for r in [run.baseline, *run.results] if r is not None)
    print(f"stage 04 policy part: {wall:.1f}s wall; {run.summary}; {probes} probes  "
          f"(goal: <= 30 s; 88 s before; ratio {88 / wall:.1f}x)   [{load()}]", flush=True)


def _drop(cfg: LabConfig, node: str, ip: str, add: bool) -> None:
    rule = ["FORWARD", "-d", ip, "-p", "tcp", "--dport", str(PORT), "-j", "DROP"]
    argv = [*nsenter_prefix(cfg, cfg.node(node)), "iptables", "-w", "-I" if add else "-D", *rule]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def bench_stream(kube: Kube, cfg: LabConfig, nodes: list[str], seconds: float) -> None:
    try:
        pods = probe_pods(kube, 5, nodes)
        probes = [p for p in matrix_probes(pods)][:20]
        # The victim: a destination of several pairs, on another node than their sources.
        victim_name, victim_ip, victim_node = pods[1]
        with stream(kube, probes, interval_s=0.2, timeout_s=1.0) as s:
            time.sleep(seconds / 2)
            for node in nodes:  # wherever the packets to the victim are forwarded
                _drop(cfg, node, victim_ip, True)
            down = time.time()
            s.mark("drop")
            time.sleep(3.0)
            for node in nodes:
                _drop(cfg, node, victim_ip, False)
            up = time.time()
            s.mark("undrop")
            time.sleep(seconds / 2 - 3.0)
        res = s.result()
        steps = res.series.sort_values(["pair", "sent_s"]).groupby("pair")["sent_s"].diff().dropna()
        print(f"streaming: {res.summary}  (goal: max gap <= 0.40 s; ratio {res.max_gap_s / 0.4:.2f} of the goal)"
              f"   [{load()}]")
        print(f"streaming: {len(steps)} steps between samples of a pair: median {steps.median():.3f} s, "
              f"p99 {steps.quantile(0.99):.3f} s, {int((steps > 0.4).sum())} over 0.40 s", flush=True)
        hit = res.outages[res.outages["label"].str.endswith(f"->{victim_name}")]
        others = res.outages[~res.outages["label"].str.endswith(f"->{victim_name}")]
        start_err = max((abs(res.started + r.start_s - down) for r in hit.itertuples()), default=float("nan"))
        end_err = max((abs(res.started + r.end_s - up) for r in hit.itertuples()), default=float("nan"))
        want = sum(1 for p in probes if p.target == victim_ip)
        print(f"streaming: injected 3.00 s outage of {victim_name} ({want} pairs): {len(hit)} windows, durations "
              f"{', '.join(f'{d:.2f}' for d in hit['duration_s'])} s; worst start error {start_err * 1000:.0f} ms, "
              f"worst end error {end_err * 1000:.0f} ms (goal: <= 250 ms); windows on other pairs: {len(others)}",
              flush=True)
    finally:
        cleanup(kube, NS, wait=True, timeout=180)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--skip-policy", action="store_true")
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--sizes", default="24,48")
    ap.add_argument("--stream-s", type=float, default=60.0)
    args = ap.parse_args()
    cfg = LabConfig()
    kube = Kube.from_kubeconfig(cfg.admin_kubeconfig)
    nodes = ready_nodes(list_nodes(kube))
    print(f"lab: {len(nodes)} Ready nodes ({', '.join(nodes)}); {load()}", flush=True)
    bench_matrix(kube, nodes, [int(s) for s in args.sizes.split(",") if s])
    if not args.skip_suite:
        bench_suite(kube)
    if not args.skip_policy:
        bench_policy(kube)
    if not args.skip_stream:
        bench_stream(kube, cfg, nodes, args.stream_s)


if __name__ == "__main__":
    main()
