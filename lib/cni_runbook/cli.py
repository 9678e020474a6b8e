"""cni-runbook: run the CNI runbook stages, keep and verify their audit records.

Subcommands: run, params, resume, list, show, verify, repair, report, and ``lab`` (registered by
``cni_runbook.lab.cli`` when that module is present), ``rollback`` and ``policy``.

Exit codes: 0 success, 1 a stage failed or a record does not verify, 2 a user error (bad params,
unknown run, ...), printed as a message without a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from . import __version__, audit, stages
from .audit import RunbookError
from .errors import OperatorError
from .params import ParamsError, load_params


def _stage_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part]


def _cluster_sets(args: argparse.Namespace) -> list[str]:
    """``--kubeconfig``/``--context`` as the params overrides they stand for (recorded in run.json)."""
    sets = []
    if getattr(args, "kubeconfig", None):
        sets += ["provisioner.kind=existing", f"provisioner.kubeconfig={Path(args.kubeconfig).resolve()}"]
    if getattr(args, "context", None):
        sets.append(f"provisioner.context={args.context}")
    return sets


def cmd_run(args: argparse.Namespace) -> int:
    sets = (args.set or []) + _cluster_sets(args)
    loaded = load_params(args.params, sets)  # bad params exit 2 before papermill is even imported
    from . import runner  # papermill and nbconvert load slowly: only for the commands that use them

    result = runner.start(args.params, sets, _stage_list(args.stages), True if args.plan else None, args.outputs,
                          loaded=loaded)
    return _finish(result)


def cmd_params(args: argparse.Namespace) -> int:
    """Validate params and print the layered result, touching nothing."""
    loaded = load_params(args.params, args.set or [])
    for f in loaded.files:
        print(f"# {f['path']}  sha256 {f['sha256'][:12]}")
    print(yaml.safe_dump(loaded.params.model_dump(mode="json"), sort_keys=False), end="")
    if not args.params or args.no_checks:
        return 0
    from . import stages

    findings = stages.check_params(args.params, args.set or [])
    for stage_id, f in findings:
        print(f"{f.severity}: {stage_id}: {f}", file=sys.stderr)
    blocking = [f for _, f in findings if f.blocking]
    print(f"plan checks: {len(blocking)} error(s), {len(findings) - len(blocking)} warning(s) "
          "(the stages' static plan checks; stage 02's source is checked by `run --plan`)", file=sys.stderr)
    return 1 if blocking else 0


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


def _dump(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")


def cmd_list(args: argparse.Namespace) -> int:
    from . import display, history

    runs = history.load_runs(args.outputs, verify=not args.no_verify)
    if args.output in ("json", "yaml"):
        records = [{k: (v.isoformat() if hasattr(v, "isoformat") else (None if v != v else v)) for k, v in row.items()}
                   for row in runs.to_dict("records")]
        _dump(records, args.output)
        return 0
    if runs.empty:
        if not args.no_headers:
            print(f"no runs in {args.outputs or audit.outputs_root()}", file=sys.stderr)
        return 0
    shown = runs if args.output == "wide" else runs[history.SHORT_COLUMNS]
    shown = shown.assign(started=shown["started"].map(lambda t: t.strftime("%Y-%m-%d %H:%M")),
                         verified=shown["verified"].map(lambda v: "-" if v is None else ("yes" if v else "NO")))
    text = display.text_table(shown).splitlines()
    print("\n".join(text[1:] if args.no_headers else text))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from . import history

    run_dir = audit.find_run(args.run_id, args.outputs)
    record = audit.load_record(run_dir)
    output = "json" if args.json else args.output
    if output in ("json", "yaml"):
        _dump(record, output)
        return 0
    facts = {k: record.get(k) or v for k, v in history.run_facts(run_dir, record).items()}
    cluster = facts["cluster"]
    print(f"run {record['run_id']}  {record['status'].upper()}  site {record['site']}  "
          f"{'plan' if record['plan'] else 'apply'}  by {record['operator']}")
    print(f"  CNI {history.cni_label(record | facts)}  route {facts['cni'].get('route') or '-'}  "
          f"cluster {cluster.get('server') or cluster.get('name') or '-'}  Kubernetes {cluster.get('kubernetes') or '-'}")
    print(f"  started {record['started']}  finished {record.get('finished') or '-'}")
    print(f"  folder {run_dir}  ({len(record['files'])} files recorded)")
    if output == "wide":
        for f in record["params_files"]:
            print(f"  params {f['path']}  sha256 {f['sha256'][:12]}")
        for value in record.get("set_values") or []:
            print(f"  override {value}")
        project = record.get("project", {})
        print(f"  cni-runbook {project.get('version')} commit {(project.get('git_commit') or '-')[:12]}  "
              f"kernel {record.get('kernel')}")
    if not args.no_headers:
        print(f"  {'STAGE':<18} {'#':>2} {'STATUS':<8} {'SECONDS':>7}  SUMMARY")
    for s in record["stages"]:
        summary = s["summary"] if output == "wide" or len(s["summary"]) <= 100 else s["summary"][:97] + "..."
        print(f"  {s['stage']:<18} {s['attempt']:>2} {s['status']:<8} {s['duration_s']:7.1f}  {summary}")
    failed = [s for s in record["stages"] if s["status"] == "failed"]
    if failed and record["status"] == "failed":
        from . import runner

        print(runner.failure_message(run_dir, runner.StageOutcome(**failed[-1])))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.all:
        found = audit.verify_all(args.outputs)
        bad = {run: problems for run, problems in found.items() if problems}
        for run, problems in bad.items():
            print(f"run {run}: DOES NOT VERIFY", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
        print(f"{len(found) - len(bad)} of {len(found)} run(s) verified (signatures, hashes, chains)"
              + (f"; {len(bad)} do not: {', '.join(bad)}" if bad else ""))
        return 1 if bad else 0
    if not args.run_id:
        raise RunbookError("verify: give a run id, or --all")
    try:
        run_dir = audit.find_run(args.run_id, args.outputs)
    except RunbookError as exc:
        if "is missing" not in str(exc):
            raise
        print(f"cni-runbook: {exc}", file=sys.stderr)  # a deleted record is tampering, not a typo
        return 1
    problems = audit.verify(run_dir)
    if problems:
        print(f"run {run_dir.name}: DOES NOT VERIFY", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"run {run_dir.name}: verified ({len(audit.load_record(run_dir)['files'])} files match run.json, "
          "signature valid)")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from . import runner

    record = runner.repair(args.run_id, args.outputs)
    info = record["abandoned"]
    print(f"run {record['run_id']}: closed as ABANDONED ({info['reason']})")
    for entry in record["stages"]:
        if entry["status"] == "abandoned":
            print(f"  stage {entry['stage']} #{entry['attempt']}: abandoned")
    if info["adopted_files"]:
        print(f"  {len(info['adopted_files'])} file(s) written after the last record were adopted (listed in run.json)")
    print(f"  continue with: cni-runbook resume {record['run_id']}")
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


class _Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a mistyped subcommand or choice."""

    def error(self, message: str):
        import re

        found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2))
            close = difflib.get_close_matches(found.group(1), choices, n=2, cutoff=0.5)
            if close:
                message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        super().error(message)


RUN_HELP = 'run id, a unique prefix of one, or "latest"'


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cni-runbook", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cni-runbook {__version__}")
    parser.add_argument("--outputs", type=Path, default=None,
                        help="folder of run folders (default $CNI_RUNBOOK_OUTPUTS or <project>/outputs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="validate params and run stages into a new run folder")
    p.add_argument("--params", nargs="+", required=True, metavar="FILE", help="site params files, layered in order")
    p.add_argument("--stages", nargs="+", metavar="STAGE",
                   help=f"stages to run (id, number or name; default run.stages): {', '.join(stages.STAGE_IDS)}")
    p.add_argument("--plan", action="store_true", help="render and record only; touch no host and no cluster")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override one value (repeatable)")
    p.add_argument("--kubeconfig", type=Path, help="act on the existing cluster of this kubeconfig (sets "
                   "provisioner.kind=existing and provisioner.kubeconfig)")
    p.add_argument("--context", help="kubeconfig context (sets provisioner.context)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("params", help="validate params files and print the layered result (runs nothing)")
    p.add_argument("--params", nargs="*", default=[], metavar="FILE", help="site params files, layered in order")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override one value (repeatable)")
    p.add_argument("--no-checks", action="store_true",
                   help="only validate and print; skip the stages' static plan checks (Kubespray validation, waivers, ...)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("resume", help="continue a failed run from its failed stage, in the same folder")
    p.add_argument("run_id", help=RUN_HELP)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("list", help="all archived runs: when, site, CNI and version, outcome, verified")
    p.add_argument("--no-verify", action="store_true", help="skip re-hashing each run folder")
    p.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml"), default="table",
                   help="table (default), wide (every column: operator, cluster, stages, ...), json or yaml")
    p.add_argument("--no-headers", action="store_true", help="table rows only (for scripts)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="one run's record: CNI, cluster, stages")
    p.add_argument("run_id", help=RUN_HELP)
    p.add_argument("-o", "--output", choices=("text", "wide", "json", "yaml"), default="text",
                   help="text (default), wide (params files, overrides, full summaries), json or yaml (run.json)")
    p.add_argument("--json", action="store_true", help="same as -o json")
    p.add_argument("--no-headers", action="store_true", help="no header line over the stages")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("verify", help="re-hash a run folder against its signed run.json (exit 1 on any difference); "
                       "--all: every run, their chains and deleted records")
    p.add_argument("run_id", nargs="?", help=RUN_HELP)
    p.add_argument("--all", action="store_true", help="verify every run folder of the outputs folder")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("repair", help="close the record of a run whose runner was killed (SIGKILL, power loss) "
                       "as abandoned, listing what it left")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("report", help="path of a run's report.html, or rebuild it elsewhere with --out")
    p.add_argument("run_id", help=RUN_HELP)
    p.add_argument("--out", help="write the report to this file instead")
    p.set_defaults(func=cmd_report)

    from .lab import cli as lab_cli

    lab_cli.register(sub)

    from .cni import cli as cni_cli  # `rollback`: stage 02's objects (owned with cni/install.py)

    cni_cli.register(sub)
    from .policy import cli as policy_cli  # `policy convert`, `policy impact` (touch nothing)

    policy_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`cni-runbook list | head -1`): stop quietly, as other CLIs do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ParamsError, RunbookError) as exc:
        print(f"cni-runbook: {exc}", file=sys.stderr)
        return 2
    except OperatorError as exc:  # the lab or a cluster said no (LabError, KubeError): the message says why
        print(f"cni-runbook: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
