"""``cni-runbook rollback RUN``: remove what stage 02 of a run created (registered by cni_runbook.cli)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rollback", help="delete the objects stage 02 (CNI install) of a run created; the run folder is left as recorded")
    p.add_argument("run", help="run id (in the outputs folder) or path of a run folder")
    p.add_argument("--kubeconfig", type=Path, help="cluster to act on (default: the one noted by the run's stage 02)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait until the objects are gone (default 180)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import audit
    from .install import InstallError, rollback_run

    run_dir = Path(args.run) if Path(args.run).is_dir() else audit.find_run(args.run, args.outputs)
    try:
        removed, work = rollback_run(run_dir, kubeconfig=args.kubeconfig, context=args.context, timeout=args.timeout,
                                     progress=print)
    except InstallError as exc:
        print(f"cni-runbook rollback: {exc}")
        return 1
    print(f"rollback of {run_dir.name}: {len(removed)} object(s) deleted; record of the rollback in {work}")
    return 0
