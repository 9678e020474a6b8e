"""Run folders and their records: run ids, run.json, file hashes, verification.

A run folder ``outputs/<run-id>/`` holds the executed notebooks, ``artifacts/``, ``state.json``,
``run.log`` and three summary files that are rewritten as the run progresses: ``run.json``,
``junit.xml`` and ``report.html``. Every other file is written once and never replaced.
``run.json`` lists the sha256 of every other file in the folder and a digest of itself, so
``verify`` finds a modified, missing or unexpected file, or an edited record.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import secrets as _random
import socket
import subprocess
from pathlib import Path
from typing import Any

from . import __version__
from .params import PROJECT_ROOT

RECORD = "run.json"
SUMMARY_FILES = (RECORD, "junit.xml", "report.html")


class RunbookError(Exception):
    """A user-facing error (unknown run, tampered record, ...): printed without a traceback."""


def outputs_root() -> Path:
    """Where run folders live: $CNI_RUNBOOK_OUTPUTS, else <project>/outputs."""
    return Path(os.environ.get("CNI_RUNBOOK_OUTPUTS") or PROJECT_ROOT / "outputs")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(site: str) -> str:
    """``20260126T101500Z-lab-3f9a``: sortable by time, names the site, unique."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{site}-{_random.token_hex(2)}"


def create_run_dir(site: str, root: Path | None = None) -> Path:
    """Create a new, empty run folder (never reuses an existing one)."""
    root = root or outputs_root()
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / new_run_id(site)
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path


def find_run(run_id: str, root: Path | None = None) -> Path:
    """The folder of a run: its id, a unique prefix of one, ``latest`` (the newest run) or a
    path to a run folder. An unknown id gets a "did you mean" naming the closest ids."""
    import difflib

    root = root or outputs_root()
    for path in (Path(run_id), root / run_id):
        if (path / RECORD).is_file():
            return path
    ids = sorted(p.parent.name for p in root.glob(f"*/{RECORD}")) if root.is_dir() else []
    if run_id == "latest":
        if ids:
            return root / ids[-1]
        raise RunbookError(f"no runs in {root}")
    matches = [i for i in ids if i.startswith(run_id)]
    if len(matches) == 1:
        return root / matches[0]
    if len(matches) > 1:
        raise RunbookError(f"run id prefix {run_id!r} is ambiguous in {root}: {', '.join(matches[:5])}"
                           + (f" and {len(matches) - 5} more" if len(matches) > 5 else ""))
    close = difflib.get_close_matches(run_id, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else (
        "; `cni-runbook list` shows the runs" if ids else "")
    raise RunbookError(f"no run {run_id!r} in {root}{hint}")


def operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def project_info() -> dict[str, Any]:
    """Project version and git commit (commit None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                                 text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"version": __version__, "git_commit": commit, "git_dirty": bool(dirty) if commit else None}


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def runner_info() -> dict[str, Any]:
    """Who executes a run: enough to tell later whether that process is still alive."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "pid_start": _process_start(pid)}


def abandoned(record: dict[str, Any]) -> str | None:
    """Why a record still marked running has no runner any more (a hard kill, a reboot), else None.

    A run whose runner is alive, or that ran on another host (nothing here can tell), is not abandoned.
    """
    if record.get("status") not in ("running", "created"):
        return None
    runner = record.get("runner")
    if not isinstance(runner, dict):
        return "the record is marked running but names no runner process"
    if runner.get("host") != socket.gethostname():
        return None
    if runner.get("boot_id") and _boot_id() and runner["boot_id"] != _boot_id():
        return f"the machine restarted since runner pid {runner.get('pid')} started the run"
    start = _process_start(int(runner.get("pid") or 0))
    if start is None or (runner.get("pid_start") and start != runner["pid_start"]):
        return f"its runner (pid {runner.get('pid')} on {runner['host']}) is gone"
    return None


def effective_status(record: dict[str, Any]) -> str:
    """The status to show: 'abandoned' for a running record without a runner."""
    return "abandoned" if abandoned(record) else str(record.get("status"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(run_dir: Path) -> dict[str, str]:
    """sha256 of every file in the run folder except run.json, by relative path."""
    return {
        p.relative_to(run_dir).as_posix(): sha256_file(p)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.relative_to(run_dir).as_posix() != RECORD
    }


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_record(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Hash the folder into the record and write run.json atomically; returns the record."""
    record["files"] = hash_tree(run_dir)
    record["record_sha256"] = _digest(record)
    tmp = run_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(run_dir / RECORD)
    return record


def load_record(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunbookError(f"{run_dir / RECORD}: unreadable run record: {exc}") from None


def verify(run_dir: Path) -> list[str]:
    """Problems found by re-hashing the run folder; empty when the record holds."""
    try:
        record = load_record(run_dir)
    except RunbookError as exc:
        return [str(exc)]
    problems = []
    why = abandoned(record)
    if why:
        problems.append(f"{RECORD}: the run was abandoned ({why}) and its record was never finalised; "
                        f"`cni-runbook repair {record.get('run_id', run_dir.name)}` closes it as abandoned, "
                        "`cni-runbook resume` closes it and continues")
    elif record.get("status") == "running":
        runner = record.get("runner") or {}
        problems.append(f"{RECORD}: the run is still in progress (runner pid {runner.get('pid')} on "
                        f"{runner.get('host')}); verify it when it ends")
    if record.get("record_sha256") != _digest(record):
        problems.append(f"{RECORD}: edited after it was written (digest mismatch)")
    recorded: dict[str, str] = record.get("files", {})
    actual = hash_tree(run_dir)
    for name, digest in recorded.items():
        if name not in actual:
            problems.append(f"{name}: missing")
        elif actual[name] != digest:
            problems.append(f"{name}: modified (sha256 {actual[name][:12]}..., recorded {digest[:12]}...)")
    problems.extend(f"{name}: not in the record" for name in actual if name not in recorded)
    return problems


def junit_xml(suite: str, cases: list[dict[str, Any]]) -> str:
    """A JUnit XML report: cases are {name, status, message?, time_s?}; failed -> <failure>,
    skipped/planned -> <skipped> (a plan proves nothing ran)."""
    from xml.sax.saxutils import escape, quoteattr

    failures = sum(c["status"] == "failed" for c in cases)
    skipped = sum(c["status"] in ("skipped", "planned") for c in cases)
    lines = [f'<?xml version="1.0" encoding="UTF-8"?>',
             f"<testsuite name={quoteattr(suite)} tests=\"{len(cases)}\" failures=\"{failures}\" "
             f"skipped=\"{skipped}\" timestamp={quoteattr(now())}>"]
    for case in cases:
        attrs = f"classname={quoteattr(suite)} name={quoteattr(str(case['name']))} time=\"{case.get('time_s') or 0:.3f}\""
        message = quoteattr(str(case.get("message") or case["status"]))
        if case["status"] == "failed":
            body = f"<failure message={message}>{escape(str(case.get('message') or ''))}</failure>"
        elif case["status"] in ("skipped", "planned"):
            body = f"<skipped message={message}/>"
        else:
            body = ""
        lines.append(f"  <testcase {attrs}>{body}</testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"
