"""``cni-runbook rollback RUN``: undo a run's CNI change (registered by cni_runbook.cli).

A run whose stage 05 applied an upgrade: the recorded previous objects are restored (the
previous version, :mod:`cni_runbook.lifecycle.rollback`). Otherwise: what stage 02 created is
removed.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rollback", help="undo a run's CNI change: a stage-05 upgrade is reverted to the recorded previous version, "
        "else the objects stage 02 (CNI install) created are deleted; the run folder is left as recorded")
    p.add_argument("run", help="run id (in the outputs folder) or path of a run folder")
    p.add_argument("--kubeconfig", type=Path, help="cluster to act on (default: the one noted by the run's stage 02)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait until the objects are gone (default 180)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import audit
    from .result import InstallError
    from .rollback import rollback_run

    run_dir = Path(args.run) if Path(args.run).is_dir() else audit.find_run(args.run, args.outputs)
    from ..lifecycle.rollback import rollback_upgrade_run, upgrade_records

    if upgrade_records(run_dir):
        from ..lifecycle.errors import LifecycleError

        try:
            detail, work = rollback_upgrade_run(run_dir, kubeconfig=args.kubeconfig, context=args.context,
                                                timeout=args.timeout, progress=print)
        except LifecycleError as exc:
            print(f"cni-runbook rollback: {exc}")
            return 1
        print(f"rollback of {run_dir.name} (stage 05 upgrade): {detail}; record of the rollback in {work}")
        return 0
    try:
        removed, work = rollback_run(run_dir, kubeconfig=args.kubeconfig, context=args.context, timeout=args.timeout,
                                     progress=print)
    except InstallError as exc:
        print(f"cni-runbook rollback: {exc}")
        return 1
    print(f"rollback of {run_dir.name}: {len(removed)} object(s) deleted; record of the rollback in {work}")
    return 0
