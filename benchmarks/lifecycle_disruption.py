"""Benchmark: the disruption each real lab CNI operation of stage 05 causes.

For every operation the streaming probe runs over the sampled pod pairs (all nodes) while
stage 05 applies it; printed per operation: pairs, median and max outage per pair (seconds),
the operation's duration, and the same for an idle window of the same probes (the baseline:
the measurement's own noise), so later changes to the order of steps can be compared. Run as
root, against your lab index:

    CNI_RUNBOOK_LAB_INDEX=7 .venv/bin/python benchmarks/lifecycle_disruption.py [--ops broken-upgrade ...]

Operations, in the order they chain (each starts from the CNI the previous one left):
``broken-upgrade`` (kube-router to images that do not exist: rollout timeout, then the rollback
to the recorded objects), ``replace-to-flannel`` (kube-router -> flannel v0.28.4), ``flannel-upgrade``
(flannel v0.28.4 -> v0.28.10), ``replace-to-kube-router`` (flannel v0.28.10 -> kube-router). The lab
is brought up prepared for both CNIs; the CNI the first selected operation starts from is
installed first. A replacement's outage runs until the restarted probe pods answer on the new
CNI (lifecycle.disruption: the relay).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLANNEL = ROOT.parent / "shared" / "fixtures" / "flannel"
V0289 = FLANNEL / "kube-flannel-v0.28.9.yml"
# name: (example, extra --set values, the CNI it starts from, the CNI it leaves)
OPS = {
    "broken-upgrade": ("lab-upgrade-broken.yaml", ["lifecycle.rollout_timeout_s=40"], "kube-router", "kube-router"),
    "replace-to-flannel": ("lab-replace-flannel.yaml", ["lifecycle.accept.policies_not_enforced=true"], "kube-router",
                           "flannel-v0.28.4"),
    "flannel-upgrade": ("lab-upgrade-flannel.yaml", [], "flannel-v0.28.4", "flannel-v0.28.10"),
    "replace-to-kube-router": ("lab-replace-kube-router.yaml", ["cni.version=v0.28.10", f"cni.source.path={V0289}"],
                               "flannel-v0.28.10", "kube-router"),
}
MANIFESTS = {"flannel-v0.28.4": FLANNEL / "kube-flannel-v0.28.4.yml"}


def run_op(name: str, example: str, extra: list[str], work: Path) -> dict:
    from cni_runbook.lifecycle import stage as lifecycle_stage
    from cni_runbook.lifecycle.compare import disruption_figures
    from cni_runbook.state import open_stage

    ctx = open_stage("05_cni_lifecycle", [str(ROOT / "params" / "lab.yaml"), str(ROOT / "params" / "examples" / example)],
                     ["lifecycle.truth_tables=false", *extra], work / name, False)
    plan = lifecycle_stage.plan_stage(ctx)
    if not plan.ok:
        return {"op": name, "error": "; ".join(plan.refusals)}
    started = time.monotonic()
    result = lifecycle_stage.apply_stage(ctx, plan, progress=lambda _m: None, validate=False)
    measured = result.disruption
    if measured is None or measured.result is None:
        return {"op": name, "error": getattr(measured, "error", "") or "no measurement (streaming probe absent?)"}
    return {"op": name, "seconds": round(time.monotonic() - started, 1), "rolled_back": result.rolled_back,
            "ok": result.ok, **disruption_figures(measured.per_pair())}


def idle(seconds: float, work: Path) -> dict:
    from cni_runbook.kube import Kube
    from cni_runbook.lab.config import LabConfig
    from cni_runbook.lifecycle.compare import disruption_figures
    from cni_runbook.lifecycle.stage import disruption_factory
    from cni_runbook.params import load_params

    params = load_params([str(ROOT / "params" / "lab.yaml")]).params
    kube = Kube.from_kubeconfig(LabConfig().admin_kubeconfig)
    try:
        with disruption_factory(kube, params, lambda _k, d=None: d)() as measured:
            time.sleep(seconds)
    finally:
        kube.close()
    return {"op": f"idle {seconds:.0f} s (baseline)", **disruption_figures(measured.per_pair())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="*", default=list(OPS), choices=list(OPS))
    parser.add_argument("--idle-s", type=float, default=20)
    args = parser.parse_args()
    chain = [OPS[n] for n in args.ops]
    broken = [f"{a} -> {b}" for a, b in zip(args.ops, args.ops[1:]) if OPS[a][3] != OPS[b][2]]
    if broken:
        parser.error(f"these operations do not chain (each starts from the CNI the previous one left): {broken}")
    from cni_runbook.lab import cluster
    from cni_runbook.lab.config import LabConfig

    cfg = LabConfig()
    if cluster.phase(cfg) == "cluster":
        cluster.down(cfg, progress=lambda _m: None)  # a known start: no other CNI's node leftovers
    cluster.up(cfg, progress=lambda _m: None, cni="flannel")  # kube-router's images are always published
    first = chain[0][2]
    if first == "kube-router":
        cluster.install_cni(cfg, progress=lambda _m: None)
    elif first in MANIFESTS:
        cluster.install_cni(cfg, progress=lambda _m: None, cni="flannel", manifest=MANIFESTS[first])
    else:
        parser.error(f"no operation can start the chain from {first}")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(idle(args.idle_s, Path(tmp)))
            for name in args.ops:
                example, extra, _, _ = OPS[name]
                try:
                    rows.append(run_op(name, example, extra, Path(tmp)))
                except Exception as exc:  # noqa: BLE001 - report it, the later operations cannot chain
                    rows.append({"op": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                    break
    finally:
        cluster.down(cfg, progress=lambda _m: None)
    for row in rows:
        if "error" in row:
            print(f"{row['op']:<28} not measured: {row['error']}")
        else:
            failed = not row.get("ok", True) and not row.get("rolled_back")  # broken-upgrade fails and rolls back by design
            tail = f"  ({row['seconds']} s{', rolled back' if row.get('rolled_back') else ''}" \
                   f"{', FAILED' if failed else ''})" if "seconds" in row else ""
            print(f"{row['op']:<28} pairs {row['pairs']:>3}  median outage/pair {row['median_outage_s']:6.2f} s  "
                  f"max outage {row['max_outage_s']:6.2f} s{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
