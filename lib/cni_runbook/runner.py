"""Execute stage notebooks with papermill into a run folder and keep its record.

One fresh kernel per stage, a per-cell execution timeout with ``interrupt_on_timeout=True`` (a
timed-out cell otherwise leaves a notebook that looks successful), output logged to the console
and to ``run.log``. The run stops at the first failing stage and names the failing cell.
papermill writes each executed notebook into a private staging folder; it is scrubbed of
secrets before it is moved into the run folder, so no secret ever lands there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from . import audit, history, report, stages
from .audit import RunbookError
from .params import LoadedParams, load_params
from .redact import Redactor
from .state import RESULT_FILE, artifact_dirs, attempt_dir, kubeconfigs, next_attempt

KERNEL_NAME = "cni-runbook"
STAGING_PREFIX = "cni-runbook-"  # papermill's private staging folders: <tmp>/cni-runbook-<run id>-*
log = logging.getLogger("cni_runbook")


@dataclass
class StageOutcome:
    """One execution (attempt) of one stage, as run.json records it."""

    stage: str
    attempt: int
    notebook: str
    artifacts: str | None
    status: str
    started: str
    duration_s: float
    summary: str
    error: dict[str, Any] | None = None


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    outcomes: list[StageOutcome] = field(default_factory=list)

    @property
    def failed(self) -> StageOutcome | None:
        return next((o for o in self.outcomes if o.status in ("failed", "interrupted")), None)


def resolve_kernel(preferred: str | None = None) -> str:
    """The Jupyter kernel to run stages in: ``preferred``, else cni-runbook if registered, else python3."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if preferred:
        if preferred not in specs:
            raise RunbookError(f"Jupyter kernel {preferred!r} is not installed (have: {', '.join(sorted(specs))})")
        return preferred
    return KERNEL_NAME if KERNEL_NAME in specs else "python3"


class _Scrub(logging.Filter):
    """Scrub secrets from log records before any handler sees them."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = ()
        return True


_PAPERMILL_CHATTER = ("Executing Cell", "Ending Cell", "Input Notebook:", "Output Notebook:", "Working directory:",
                      "Executing notebook with kernel:")


class _Quiet(logging.Filter):
    """Keep papermill's own chatter (cell markers, notebook paths, kernel name) and empty outputs
    out of the console; run.log keeps everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith("papermill"):
            return bool(console_lines(message)) and not message.startswith(_PAPERMILL_CHATTER)
        return True


_STEP = re.compile(r"^\[(\d+)/(\d+)\] ")
_COUNT = re.compile(r"(?<![\d./])(\d+)/(\d+)(?![\d./])")  # 3/14, not 10.0.0.0/24
# "not ready: <pods>" in a count line is progress (a later line supersedes it), not trouble
_TROUBLE = re.compile(r"(?i)fail|error|timed? ?out|refused|denied|unreachable|not (?!ready)|warn")


def _intermediate(line: str) -> bool:
    """A progress line that a later one supersedes (``[3/12] Pod x/c: created``, ``pods ...: 5/14
    Running+Ready``) and that says nothing went wrong."""
    if _TROUBLE.search(line):
        return False
    step = _STEP.match(line)
    rest = line[step.end():] if step else line
    counts = [(int(a), int(b)) for a, b in _COUNT.findall(rest)]
    if any(a < b for a, b in counts) and step is not None:
        return False  # "[2/6] pod: 3/4 commands succeeded": a partial result, keep it
    if step is not None:
        return int(step.group(1)) < int(step.group(2))
    return bool(counts) and counts[0][0] < counts[0][1]


#: a tqdm bar as text (``cluster.yml: 0task [00:00, ?task/s]``, ``x: 100%|###| 9/9 [00:05<00:00, 1.7it/s]``):
#: the notebook shows it live; the console gets the summary line printed after it instead
_TQDM = re.compile(r"\[\d+:\d+(?::\d+)?(?:<[^,\]]*)?, *[^\]]*/s\]\s*$")


def console_lines(message: str) -> list[str]:
    """Notebook output as the console shows it: blank lines, progress bars and superseded
    progress lines dropped (run.log keeps every line)."""
    return [line for line in message.rstrip("\n").splitlines()
            if line.strip() and not _TQDM.search(line) and not _intermediate(line)]


class _ConsoleFormat(logging.Formatter):
    """The console: ``HH:MM:SS message`` for the runner, notebook output indented under its stage
    (no logger names, no levels except WARNING/ERROR)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%H:%M:%S")
        lines = record.getMessage().rstrip("\n").splitlines() or [""]
        if record.name.startswith("papermill"):
            return "\n".join(f"         {line}".rstrip() for line in console_lines(record.getMessage()))
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        pad = " " * (len(stamp) + 1)
        return "\n".join([f"{stamp} {level}{lines[0]}"] + [f"{pad}{line}".rstrip() for line in lines[1:]])


class _Logging:
    """Console + run.log handlers on the papermill and cni_runbook loggers, for one run."""

    def __init__(self, run_dir: Path, redactor: Redactor) -> None:
        self.scrub = _Scrub(redactor)
        self.handlers: list[logging.Handler] = [logging.FileHandler(run_dir / "run.log"),
                                                logging.StreamHandler(sys.stderr)]
        self.handlers[0].setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self.handlers[1].setFormatter(_ConsoleFormat())
        for handler in self.handlers:
            handler.addFilter(self.scrub)
        self.handlers[1].addFilter(_Quiet())
        self.loggers = [logging.getLogger("papermill"), log]
        self._warnings = warnings.catch_warnings()

    def __enter__(self) -> _Logging:
        for logger in self.loggers:
            logger.setLevel(logging.INFO)
            logger.propagate = False
            for handler in self.handlers:
                logger.addHandler(handler)
        self._warnings.__enter__()
        # nbformat warns on reading a notebook whose cells have no ids; the executed copy gets them
        warnings.filterwarnings("ignore", message="Cell is missing an id field")
        return self

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        for logger in self.loggers:
            logger.propagate = True
            for handler in self.handlers:
                logger.removeHandler(handler)
        for handler in self.handlers:
            handler.close()


def _kernel_manager_class():
    """Kernels on Unix domain sockets (ipc): no TCP port, so no "Kernel is running over TCP
    without encryption" warning in every stage's log, and no port another process can reach."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _private_socket_prefix(self) -> str:
            # the sockets of this kernel only, in a private folder (jupyter_client's default is a
            # path relative to the kernel's cwd, shared by every kernel started there at once)
            self._socket_dir = tempfile.mkdtemp(prefix="cni-runbook-kernel-")
            return str(Path(self._socket_dir) / "kernel")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart and getattr(self, "_socket_dir", None):
                shutil.rmtree(self._socket_dir, ignore_errors=True)

    return IPCKernelManager


def _kernel_pids() -> list[int]:
    """Child processes of this runner that are Jupyter kernels (they run in their own session)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and b"kernel" in cmdline:
            found.append(int(stat.parent.name))
    return found


class _Signals:
    """SIGTERM and SIGHUP stop a run the way Ctrl-C does, with the stage's own cleanup.

    The first signal interrupts the stage's kernel (SIGINT: the running cell raises
    KeyboardInterrupt, so its ``finally`` clean-ups remove the test workloads), then gives the
    kernel :attr:`GRACE_S` seconds before the runner itself stops; a second signal stops at once.
    Either way the stage is recorded as interrupted and the record is finalised and verifiable.
    """

    GRACE_S = 60
    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}
        self._finalising = False

    def finalising(self) -> None:
        """The stages are over and the record is being finalised: from now on a signal is noted
        in the log, never raised, so the record ends complete and verifiable."""
        self._finalising = True
        signal.alarm(0)

    def __enter__(self) -> _Signals:
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self._finalising:
            log.warning("%s: the stages are over; finishing the run's record first", signal.Signals(signum).name)
            return
        first = self.received is None
        self.received = signal.Signals(signum).name
        kernels = _kernel_pids() if first else []
        for pid in kernels:
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:
                pass
        if kernels:
            log.warning("%s: interrupting the stage (kernel pid %s); stopping in at most %d s",
                        self.received, ", ".join(map(str, kernels)), self.GRACE_S)
            signal.signal(signal.SIGALRM, self._expire)
            signal.alarm(self.GRACE_S)
            return
        raise KeyboardInterrupt(self.received)

    def _expire(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"{self.received}: the stage did not stop within {self.GRACE_S} s")

    def __exit__(self, *exc: object) -> None:
        signal.alarm(0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _cell_head(notebook: Path, index: int | None) -> str | None:
    """First line of the failing cell; ``index`` counts cells without papermill's error markers."""
    if index is None or not notebook.exists():
        return None
    cells = [c for c in nbformat.read(notebook, as_version=4).cells
             if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    if 0 <= index < len(cells):
        return cells[index].source.strip().splitlines()[0] if cells[index].source.strip() else ""
    return None


def execute_stage(stage: stages.StageSpec, run_dir: Path, loaded: LoadedParams, plan: bool, kernel: str,
                  attempt: int, notebooks_dir: Path, redactor: Redactor,
                  signals: _Signals | None = None) -> StageOutcome:
    """Execute one stage notebook into the run folder and return its outcome."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_name = stage.output_name if attempt == 1 else stage.output_name.replace(".ipynb", f".attempt{attempt}.ipynb")
    target = run_dir / out_name
    if target.exists():
        raise RunbookError(f"{target} exists: run folders are append-only")
    parameters = {
        "params_files": [f["path"] for f in loaded.files[1:]],  # the first layer is defaults.yaml
        "set_values": loaded.set_values,
        "run_dir": str(run_dir),
        "stage": stage.id,
        "plan": plan,
    }
    timeout = loaded.params.run.timeouts.for_stage(stage.id)
    started, t0 = audit.now(), time.monotonic()
    error: dict[str, Any] | None = None
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{run_dir.name}-"))  # repair finds it by run id
    staged = staging / out_name
    try:
        papermill.execute_notebook(
            str(notebooks_dir / stage.notebook), str(staged), parameters=parameters, kernel_name=kernel,
            cwd=str(notebooks_dir), log_output=True, progress_bar=sys.stderr.isatty(),
            execution_timeout=timeout, interrupt_on_timeout=True, kernel_manager_class=_kernel_manager_class())
    except PapermillExecutionError as exc:
        error = {"cell_index": exc.cell_index, "exec_count": exc.exec_count, "ename": exc.ename, "evalue": exc.evalue}
        if exc.ename == "KeyboardInterrupt":
            error["evalue"] = (f"interrupted by {signals.received}" if signals and signals.received else
                               f"interrupted: a cell ran longer than the {timeout} s execution timeout")
    except KeyboardInterrupt as exc:
        error = {"cell_index": None, "exec_count": None, "ename": "KeyboardInterrupt",
                 "evalue": f"interrupted by {exc.args[0] if exc.args else 'the operator'}"}
    except Exception as exc:  # kernel failed to start or died, notebook unreadable, ...
        error = {"cell_index": None, "exec_count": None, "ename": type(exc).__name__, "evalue": str(exc)}
    finally:
        if staged.exists():
            redactor.file(staged)
            shutil.move(str(staged), target)
        shutil.rmtree(staging, ignore_errors=True)
    duration = round(time.monotonic() - t0, 3)

    artifacts = attempt_dir(run_dir, stage.id, attempt)
    artifacts = artifacts if artifacts.is_dir() else None
    result = None
    if artifacts is not None and (artifacts / RESULT_FILE).exists():
        result = json.loads((artifacts / RESULT_FILE).read_text())
    if error:
        error["cell"] = _cell_head(target, error["cell_index"])
        status = "interrupted" if error["ename"] == "KeyboardInterrupt" and (
            signals and signals.received or error["evalue"].startswith("interrupted by")) else "failed"
        recorded_failure = result is not None and result["status"] == "failed"
        summary = result["summary"] if recorded_failure else f"{error['ename']}: {error['evalue']}"
    elif result is None:
        status, summary = "failed", "the stage recorded no result (StageContext.result was not called)"
    else:
        status, summary = result["status"], result["summary"]
    return StageOutcome(stage=stage.id, attempt=attempt, notebook=out_name,
                        artifacts=artifacts.relative_to(run_dir).as_posix() if artifacts else None,
                        status=status, started=started, duration_s=duration, summary=summary, error=error)


def failure_message(run_dir: Path, outcome: StageOutcome) -> str:
    """Where a stage failed, for people: stage, cell, error, executed notebook."""
    err = outcome.error or {}
    where = ""
    if err.get("cell_index") is not None:
        where = f" in cell In [{err.get('exec_count')}]" + (f" ({err['cell']!r})" if err.get("cell") else "")
    verb = "was interrupted" if outcome.status == "interrupted" else "failed"
    return (f"stage {outcome.stage} {verb}{where}: {outcome.summary}\n"
            f"  executed notebook: {run_dir / outcome.notebook}")


_MARKS = {"passed": "\u2705", "planned": "\U0001f4dd", "skipped": "\u23ed\ufe0f ", "failed": "\u274c",
          "interrupted": "\u26d4", "abandoned": "\u26a0\ufe0f "}


def params_lines(record: dict[str, Any]) -> list[str]:
    """The run's params in a few lines (once per run; every stage's notebook has its own table)."""
    p = record.get("params") or {}
    cni, prov, cluster = p.get("cni") or {}, p.get("provisioner") or {}, p.get("cluster") or {}
    nodes = cluster.get("nodes") or []
    files = ", ".join(f"{f['path']} (sha256 {f['sha256'][:12]})" for f in record.get("params_files", []))
    lines = [f"params: {files}"]
    if record.get("set_values"):
        lines.append("overrides: " + ", ".join(record["set_values"]))
    cni_text = f"{cni.get('profile')}" + (f" {cni['version']}" if cni.get("version") else "") + \
        f", route {cni.get('route')}" + (", server-side dry-run" if cni.get("server_dry_run") else "")
    lines.append(f"site {record['site']}, provisioner {prov.get('kind')}, {len(nodes)} nodes "
                 f"({', '.join(n.get('name', '?') for n in nodes)}), CNI {cni_text}, "
                 f"perf {'on' if (p.get('validation') or {}).get('perf') else 'off'}, "
                 f"qos {'on' if (p.get('qos') or {}).get('enabled') else 'off'}")
    return lines


def recap_lines(run_dir: Path, record: dict[str, Any]) -> list[str]:
    """The end of the console log: one line per stage, one verdict line, where the records are."""
    latest: dict[str, dict[str, Any]] = {}
    for s in record["stages"]:
        latest[s["stage"]] = s
    width = max([len(s) for s in record["selected"]] + [8])
    lines = [f"Recap of run {record['run_id']} ({'plan' if record['plan'] else 'apply'}, site {record['site']}, "
             f"CNI {history.cni_label(record)}):"]
    for stage_id in record["selected"]:
        s = latest.get(stage_id)
        if s is None:
            lines.append(f"  \u2796 {stage_id:<{width}}  not run")
            continue
        attempt = f" (attempt {s['attempt']})" if s["attempt"] > 1 else ""
        summary = s["summary"] if len(s["summary"]) <= 110 else s["summary"][:107] + "..."
        lines.append(f"  {_MARKS.get(s['status'], '?')} {stage_id:<{width}}  {s['status']:<7} "
                     f"{s['duration_s']:6.1f} s{attempt}  {summary}")
    total = sum(s["duration_s"] for s in record["stages"])
    counts = {k: sum(latest.get(x, {}).get("status") == k for x in record["selected"]) for k in _MARKS}
    n = len(record["selected"])
    failed = [s for s in record["stages"] if s["status"] == "failed"]
    if record["status"] == "failed":
        verdict = f"\u274c {counts['failed']} of {n} stages failed ({failed[-1]['stage'] if failed else '?'})"
        not_run = n - sum(counts.values())
        verdict += f", {not_run} not run" if not_run else ""
    elif record["status"] in ("interrupted", "abandoned"):
        stopped = [s for s in record["stages"] if s["status"] in ("interrupted", "abandoned")]
        verdict = (f"\u26d4 run {record['status']}" + (f" by {record['interrupted_by']}" if record.get("interrupted_by") else "")
                   + (f" in stage {stopped[-1]['stage']}" if stopped else "")
                   + f"; `cni-runbook resume {record['run_id']}` continues it")
    elif record["status"] == "planned":
        verdict = f"\U0001f4dd all {n} stages planned; nothing was touched"
    else:
        verdict = f"\u2705 all {n} stages passed" + (f" ({counts['skipped']} skipped)" if counts["skipped"] else "")
    lines.append(f"{verdict} in {total:.0f} s")
    if failed and record["status"] == "failed":
        lines += failure_message(run_dir, StageOutcome(**failed[-1])).splitlines()
    lines += [f"report: {run_dir / report.REPORT}", f"junit:  {run_dir / 'junit.xml'}"]
    return lines


class Run:
    """One run folder and its record, executing stages into it."""

    def __init__(self, run_dir: Path, record: dict[str, Any], loaded: LoadedParams,
                 notebooks_dir: Path | None = None) -> None:
        self.run_dir = run_dir
        self.record = record
        self.loaded = loaded
        self.notebooks_dir = notebooks_dir or stages.NOTEBOOKS_DIR

    def redactor(self) -> Redactor:
        return Redactor.for_params(self.loaded.params, kubeconfigs(self.run_dir, self.loaded.params))

    def save(self) -> None:
        """Scrub the folder and the record, then hash the folder into run.json."""
        redactor = self.redactor()
        redactor.tree(self.run_dir)
        self.record = redactor.data(self.record)
        audit.write_record(self.run_dir, self.record)

    def pending(self) -> list[stages.StageSpec]:
        done = {s["stage"] for s in self.record["stages"] if s["status"] in ("passed", "planned", "skipped")}
        return [stages.get(s) for s in self.record["selected"] if s not in done]

    def execute(self) -> RunResult:
        """Execute the pending stages in order, stopping at the first failure."""
        todo = self.pending()
        kernel = self.record["kernel"]
        plan = self.record["plan"]
        outcomes: list[StageOutcome] = []
        self.record["status"] = "running"
        self.record["runner"] = audit.runner_info()  # a hard kill leaves this: list/verify/resume see it
        self.save()
        signals = _Signals()
        with _Logging(self.run_dir, self.redactor()), signals:
            log.info("run %s: %d stage(s) %s, kernel %s", self.record["run_id"], len(todo),
                     "in PLAN mode" if plan else "applying", kernel)
            log.info("\n".join(params_lines(self.record)))
            try:
                for n, stage in enumerate(todo, 1):
                    attempt = next_attempt(self.run_dir, stage.id)
                    log.info("[%d/%d] %s: %s", n, len(todo), stage.id, stage.title)
                    outcome = execute_stage(stage, self.run_dir, self.loaded, plan, kernel, attempt,
                                            self.notebooks_dir, self.redactor(), signals)
                    outcomes.append(outcome)
                    self.record["stages"].append(asdict(outcome))
                    self.record.update(history.run_facts(self.run_dir, self.record))
                    self.save()
                    log.info("[%d/%d] %s: %s in %.1f s - %s", n, len(todo), stage.id, outcome.status.upper(),
                             outcome.duration_s, outcome.summary)
                    if outcome.status in ("failed", "interrupted") or signals.received:
                        break
            except KeyboardInterrupt as exc:  # a signal between stages
                signals.received = signals.received or (exc.args[0] if exc.args else "SIGINT")
            signals.finalising()
            failed = any(o.status == "failed" for o in outcomes)
            interrupted = bool(signals.received) or any(o.status == "interrupted" for o in outcomes)
            self.record["status"] = ("interrupted" if interrupted else "failed" if failed else
                                     ("planned" if plan else "passed"))
            if signals.received:
                self.record["interrupted_by"] = signals.received
            if not plan:
                self._release_lock()
            self.record["finished"] = audit.now()
            self._summaries()
            log.info("\n".join(recap_lines(self.run_dir, self.record)))
            self.save()  # after the recap: run.log is hashed as it ends
        return RunResult(self.record["run_id"], self.run_dir, self.record["status"], outcomes)

    def _release_lock(self) -> None:
        """Give the cluster's run lock up, so the next run can start at once (it expires anyway)."""
        try:
            from .kube.lock import release_run
            from .state import RunState

            if release_run(self.record["run_id"], self.loaded.params, RunState(self.run_dir).get):
                log.info("run lock of the cluster released")
        except Exception as exc:  # noqa: BLE001 - an unreleased lock expires by itself
            log.warning("the cluster's run lock was not released (%s); it expires by itself", exc)

    def _summaries(self) -> None:
        """junit.xml (one case per stage execution) and report.html."""
        cases = [{"name": f"{s['stage']}#{s['attempt']}", "status": s["status"], "message": s["summary"],
                  "time_s": s["duration_s"]} for s in self.record["stages"]]
        (self.run_dir / "junit.xml").write_text(audit.junit_xml(f"cni-runbook {self.record['run_id']}", cases))
        self.save()  # the report reads the record
        report.build(self.run_dir)


def start(files: list[str], set_values: list[str] = (), stage_refs: list[str] | None = None,
          plan: bool | None = None, outputs: Path | None = None,
          notebooks_dir: Path | None = None, loaded: LoadedParams | None = None) -> RunResult:
    """Validate params (unless ``loaded`` already holds them), create a new run folder and
    execute the selected stages."""
    loaded = loaded or load_params(files, set_values)
    params = loaded.params
    try:
        selected = stages.select(stage_refs or params.run.stages)
    except KeyError as exc:
        raise RunbookError(f"unknown stage {exc.args[0]!r}; expected 'all' or one of "
                           f"{', '.join(stages.STAGE_IDS)}") from None
    kernel = resolve_kernel(params.run.kernel)
    run_dir = audit.create_run_dir(params.site, outputs)
    record = {
        "schema": 1,
        "run_id": run_dir.name,
        "site": params.site,
        "operator": audit.operator(),
        "started": audit.now(),
        "finished": None,
        "status": "created",
        "plan": params.run.plan if plan is None else plan,
        "selected": [s.id for s in selected],
        "kernel": kernel,
        "project": audit.project_info(),
        "params_files": loaded.files,
        "set_values": loaded.set_values,
        "params": params.model_dump(mode="json"),
        "stages": [],
    }
    return Run(run_dir, record, loaded, notebooks_dir).execute()


def _load_run(run_dir: Path, notebooks_dir: Path | None = None) -> Run:
    record = audit.load_record(run_dir)
    files = [f["path"] for f in record["params_files"][1:]]
    return Run(run_dir, record, load_params(files, record["set_values"]), notebooks_dir)


def close_abandoned(run_dir: Path, why: str, by: str) -> dict[str, Any]:
    """Close the record of a run whose runner died (SIGKILL, power loss) as ``abandoned``.

    Nothing is hidden: the stage that was running gets an ``abandoned`` entry, its staged notebook
    (left in the temporary folder, unscrubbed) is scrubbed and moved into the run folder, the files
    written after the last record are listed as adopted, and the record says who closed it, when
    and why. Returns the closed record.
    """
    run = _load_run(run_dir)
    record = run.record
    before = set(record.get("files", {}))
    redactor = run.redactor()
    moved = []
    for staging in sorted(Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}{run_dir.name}-*")):
        for staged in staging.glob("*.ipynb"):
            redactor.file(staged)
            if not (run_dir / staged.name).exists():
                shutil.move(str(staged), run_dir / staged.name)
                moved.append(staged.name)
        shutil.rmtree(staging, ignore_errors=True)
    at = audit.now()
    for stage_id in record["selected"]:
        recorded = {int(e.get("attempt") or 0) for e in record["stages"] if e["stage"] == stage_id}
        spec = stages.get(stage_id)
        for folder in artifact_dirs(run_dir, stage_id):
            attempt = 1 if folder.name == stage_id else int(folder.name.rsplit(".attempt", 1)[1])
            if attempt in recorded:
                continue
            name = spec.output_name if attempt == 1 else spec.output_name.replace(".ipynb", f".attempt{attempt}.ipynb")
            record["stages"].append(asdict(StageOutcome(
                stage=stage_id, attempt=attempt, notebook=name, artifacts=folder.relative_to(run_dir).as_posix(),
                status="abandoned", started=dt_iso(folder.stat().st_mtime), duration_s=0.0,
                summary=f"abandoned: {why}; the stage never finished (record closed by {by})")))
    record["status"] = "abandoned"
    record["finished"] = at
    run.save()  # scrub everything first, then list what the last record did not know
    adopted = sorted(set(audit.hash_tree(run_dir)) - before)
    run.record["abandoned"] = {"reason": why, "closed_by": by, "at": at, "operator": audit.operator(),
                           "adopted_files": adopted, "staged_notebooks_recovered": moved}
    run._summaries()
    run.save()
    return run.record


def dt_iso(timestamp: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def repair(run_id: str, outputs: Path | None = None) -> dict[str, Any]:
    """``cni-runbook repair``: close an abandoned run's record (see :func:`close_abandoned`)."""
    run_dir = audit.find_run(run_id, outputs)
    record = audit.load_record(run_dir)
    why = audit.abandoned(record)
    if not why:
        raise RunbookError(f"run {run_dir.name} is not abandoned (status {record.get('status')}); nothing to repair")
    return close_abandoned(run_dir, why, "repair")


def resume(run_id: str, outputs: Path | None = None, notebooks_dir: Path | None = None) -> RunResult:
    """Continue a run from its first stage that did not succeed, in the same run folder.

    A run abandoned by a hard kill is first closed as ``abandoned`` (said on the console), then continued.
    """
    run_dir = audit.find_run(run_id, outputs)
    try:
        why = audit.abandoned(audit.load_record(run_dir))
    except RunbookError:
        why = None  # verify below names the problem
    if why:
        print(f"run {run_dir.name} was abandoned ({why}): closing its record as abandoned, then resuming",
              file=sys.stderr)
        close_abandoned(run_dir, why, "resume")
    problems = audit.verify(run_dir)
    if problems:
        raise RunbookError(f"run {run_id} does not verify, refusing to add to it:\n  " + "\n  ".join(problems))
    record = audit.load_record(run_dir)
    for entry in record["params_files"]:
        path = Path(entry["path"])
        if not path.exists() or audit.sha256_file(path) != entry["sha256"]:
            raise RunbookError(f"params file {path} changed since run {run_id} started; start a new run")
    run = _load_run(run_dir, notebooks_dir)
    if not run.pending():
        raise RunbookError(f"run {run_id} has nothing left to run (status {record['status']})")
    return run.execute()
