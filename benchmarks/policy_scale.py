"""Benchmark: whole-cluster analysis at scale (issue 15), mixed Kubernetes NetworkPolicies and
Antrea ClusterNetworkPolicies, one port.

For each size (default 5,000 pods x 500 policies, then 10,000 x 1,000; half K8s, half Antrea,
the workload generators of benchmarks/policy_engine.py) it measures, in one run:

* engine compile (``PolicyEngine(...)`` from parsed policies) and the full matrix for one
  port (``matrix_array``: every ordered pod pair), their sum against the 1 s target;
* peak resident memory (``ru_maxrss``) against the 1 GB target;
* agreement with the naive per-pair evaluator (``naive_verdict``) on a random sample of
  pairs (default 10,000), and the naive evaluator's time per pair, extrapolated to the whole
  matrix: the speed-up ratio;
* a calibration figure: the time of one element-wise AND of two arrays the size of the
  matrix on this machine (on a loaded machine every figure stretches together).

    .venv/bin/python benchmarks/policy_scale.py [--sizes 5000x500,10000x1000] [--sample 10000]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from policy_engine import antrea_workload, workload  # noqa: E402

from cni_runbook.policy import AntreaPolicy, NetworkPolicy, PolicyEngine, Probe, naive_verdict  # noqa: E402

TARGET_S = 1.0
TARGET_RSS_MB = 1024


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(pods: int, policies: int, sample: int, seed: int, check_targets: bool) -> int:
    k8s_count = policies // 2
    cluster, objects = workload(pods, k8s_count, seed)
    k8s = [NetworkPolicy.from_dict(o) for o in objects]
    antrea = [AntreaPolicy.from_dict(o) for o in antrea_workload(policies - k8s_count, seed)]
    n = len(cluster.pods)
    print(f"\n{n} pods x {len(k8s) + len(antrea)} policies ({len(k8s)} NetworkPolicies, "
          f"{len(antrea)} Antrea ClusterNetworkPolicies), TCP/80, {n * n:,} pairs")

    a = np.ones((n, n), dtype=bool)
    b = np.ones((n, n), dtype=bool)
    started = time.perf_counter()
    _ = a & b
    calibration = time.perf_counter() - started
    del a, b, _

    started = time.perf_counter()
    engine = PolicyEngine(cluster, k8s, antrea)
    compiled = time.perf_counter()
    matrix = engine.matrix_array(80, "TCP")
    done = time.perf_counter()
    compile_s, matrix_s = compiled - started, done - compiled
    total = compile_s + matrix_s
    peak = rss_mb()

    rng = random.Random(seed)
    keys = cluster.pod_keys
    pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(sample)]
    started = time.perf_counter()
    disagree = 0
    for s, d in pairs:
        allowed = naive_verdict(cluster, k8s, Probe(keys[s], keys[d], 80, "TCP"), antrea)[0].allowed
        disagree += allowed != bool(matrix[s, d])
    naive_s = time.perf_counter() - started
    per_pair = naive_s / sample
    naive_full = per_pair * n * n

    print(f"  compile {compile_s * 1000:8.1f} ms + matrix {matrix_s * 1000:8.1f} ms = {total * 1000:8.1f} ms"
          f"  (target <= {TARGET_S * 1000:.0f} ms)")
    print(f"  peak RSS {peak:8.1f} MB  (target <= {TARGET_RSS_MB} MB)")
    print(f"  allowed pairs {int(matrix.sum()):,} of {n * n:,}")
    print(f"  naive per-pair evaluator: {sample:,} random pairs in {naive_s:.1f} s ({per_pair * 1e6:.0f} us/pair); "
          f"whole matrix extrapolated {naive_full:,.0f} s")
    print(f"  ratio naive/engine: {naive_full / total:,.0f}x; agreement {sample - disagree:,}/{sample:,} pairs")
    print(f"  calibration: one {n}x{n} boolean AND takes {calibration * 1000:.1f} ms here "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    status = 0
    if disagree:
        print("  ERROR: engine and naive evaluator disagree", file=sys.stderr)
        status = 1
    if check_targets and (total > TARGET_S or peak > TARGET_RSS_MB):
        print("  WARNING: over a target (time or memory)", file=sys.stderr)
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x500,10000x1000", help="PODSxPOLICIES list; the first is checked "
                                                                       "against the targets, the others measured")
    parser.add_argument("--sample", type=int, default=10_000, help="random pairs checked against the naive evaluator")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    status = 0
    for number, size in enumerate(args.sizes.split(",")):
        pods, _, policies = size.partition("x")
        status |= one(int(pods), int(policies), args.sample, args.seed, check_targets=number == 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
