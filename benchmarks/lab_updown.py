"""Benchmark: warm `lab up` (to all nodes registered) and `lab down` on this machine.

Targets from issue 3: warm up within 90 s, down within 15 s. Run as root:

    CNI_RUNBOOK_LAB_INDEX=7 .venv/bin/python benchmarks/lab_updown.py [--rounds 2]

It builds (or reuses) everything first so the rounds measure warm runs only, and prints
each round and the ratio of the measured median to the target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from cni_runbook.lab import cluster
from cni_runbook.lab.build import build
from cni_runbook.lab.config import LabConfig
from cni_runbook.lab.images_step import build_images

UP_TARGET_S, DOWN_TARGET_S = 90.0, 15.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cfg = LabConfig()
    build(progress=lambda _m: None)
    build_images(progress=lambda _m: None)
    if cluster.phase(cfg) != "down":
        cluster.down(cfg, progress=lambda _m: None)
    ups, downs = [], []
    for i in range(1, args.rounds + 1):
        t0 = time.monotonic()
        cluster.up(cfg, progress=lambda _m: None)
        ups.append(time.monotonic() - t0)
        t0 = time.monotonic()
        cluster.down(cfg, progress=lambda _m: None)
        downs.append(time.monotonic() - t0)
        print(f"round {i}: up {ups[-1]:.1f}s  down {downs[-1]:.1f}s", flush=True)
    up_med, down_med = statistics.median(ups), statistics.median(downs)
    print(f"warm up   median {up_med:.1f}s  target {UP_TARGET_S:.0f}s  ratio {up_med / UP_TARGET_S:.2f}")
    print(f"down      median {down_med:.1f}s  target {DOWN_TARGET_S:.0f}s  ratio {down_med / DOWN_TARGET_S:.2f}")
    return 0 if up_med <= UP_TARGET_S and down_med <= DOWN_TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
