"""cni-runbook: run the CNI runbook stages, keep and verify their audit records.

Subcommands: run, params, resume, list, show, verify, report, and ``lab`` (registered by
``cni_runbook.lab.cli`` when that module is present).

Exit codes: 0 success, 1 a stage failed or a record does not verify, 2 a user error (bad params,
unknown run, ...), printed as a message without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from . import __version__, audit, stages
from .audit import RunbookError
from .errors import OperatorError
from .params import ParamsError, load_params


def _stage_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part]


def cmd_run(args: argparse.Namespace) -> int:
    from . import runner  # papermill and nbconvert load slowly: only for the commands that use them

    result = runner.start(args.params, args.set or [], _stage_list(args.stages), True if args.plan else None,
                          args.outputs)
    return _finish(result)


def cmd_params(args: argparse.Namespace) -> int:
    """Validate params and print the layered result, touching nothing."""
    loaded = load_params(args.params, args.set or [])
    for f in loaded.files:
        print(f"# {f['path']}  sha256 {f['sha256'][:12]}")
    print(yaml.safe_dump(loaded.params.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from . import runner

    return _finish(runner.resume(args.run_id, args.outputs))


def _finish(result) -> int:
    """The runner's recap (console and run.log) names stages, verdict, report and junit paths;
    stdout gets the run folder, for scripts."""
    print(result.run_dir)
    if result.failed:
        print(f"fix the cause, then: cni-runbook resume {result.run_id}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from . import history

    runs = history.load_runs(args.outputs, verify=not args.no_verify)
    if runs.empty:
        print(f"no runs in {args.outputs or audit.outputs_root()}")
    else:
        print(runs.to_string(index=False))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    run_dir = audit.find_run(args.run_id, args.outputs)
    record = audit.load_record(run_dir)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"run {record['run_id']}  {record['status'].upper()}  site {record['site']}  "
          f"{'plan' if record['plan'] else 'apply'}  by {record['operator']}")
    print(f"  started {record['started']}  finished {record.get('finished') or '-'}")
    print(f"  folder {run_dir}  ({len(record['files'])} files recorded)")
    for s in record["stages"]:
        print(f"  {s['stage']:<18} #{s['attempt']} {s['status']:<8} {s['duration_s']:7.1f} s  {s['summary']}")
    failed = [s for s in record["stages"] if s["status"] == "failed"]
    if failed and record["status"] == "failed":
        from . import runner

        print(runner.failure_message(run_dir, runner.StageOutcome(**failed[-1])))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    run_dir = audit.find_run(args.run_id, args.outputs)
    problems = audit.verify(run_dir)
    if problems:
        print(f"run {run_dir.name}: DOES NOT VERIFY", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"run {run_dir.name}: verified ({len(audit.load_record(run_dir)['files'])} files match run.json)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import report

    run_dir = audit.find_run(args.run_id, args.outputs)
    problems = audit.verify(run_dir)
    if problems:
        raise RunbookError(f"run {run_dir.name} does not verify; `cni-runbook verify {run_dir.name}` lists why")
    path = report.build(run_dir, Path(args.out)) if args.out else run_dir / report.REPORT
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cni-runbook", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cni-runbook {__version__}")
    parser.add_argument("--outputs", type=Path, default=None,
                        help="folder of run folders (default $CNI_RUNBOOK_OUTPUTS or <project>/outputs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="validate params and run stages into a new run folder")
    p.add_argument("--params", nargs="+", required=True, metavar="FILE", help="site params files, layered in order")
    p.add_argument("--stages", nargs="+", metavar="STAGE",
                   help=f"stages to run (id, number or name; default run.stages): {', '.join(stages.STAGE_IDS)}")
    p.add_argument("--plan", action="store_true", help="render and record only; touch no host and no cluster")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override one value (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("params", help="validate params files and print the layered result (runs nothing)")
    p.add_argument("--params", nargs="*", default=[], metavar="FILE", help="site params files, layered in order")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override one value (repeatable)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("resume", help="continue a failed run from its failed stage, in the same folder")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("list", help="all archived runs")
    p.add_argument("--no-verify", action="store_true", help="skip re-hashing each run folder")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="one run's record")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true", help="print run.json")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("verify", help="re-hash a run folder against its run.json (exit 1 on any difference)")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("report", help="path of a run's report.html, or rebuild it elsewhere with --out")
    p.add_argument("run_id")
    p.add_argument("--out", help="write the report to this file instead")
    p.set_defaults(func=cmd_report)

    from .lab import cli as lab_cli

    lab_cli.register(sub)

    from .cni import cli as cni_cli  # `rollback`: stage 02's objects (owned with cni/install.py)

    cni_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamsError, RunbookError) as exc:
        print(f"cni-runbook: {exc}", file=sys.stderr)
        return 2
    except OperatorError as exc:  # the lab or a cluster said no (LabError, KubeError): the message says why
        print(f"cni-runbook: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
