"""Run folders and their records: run ids, run.json, file hashes, verification.

A run folder ``outputs/<run-id>/`` holds the executed notebooks, ``artifacts/``, ``state.json``,
``run.log`` and three summary files that are rewritten as the run progresses: ``run.json``,
``junit.xml`` and ``report.html``. Every other file is written once and never replaced.
``run.json`` lists the sha256 of every other file in the folder and a digest of itself, so
``verify`` finds a modified, missing or unexpected file, or an edited record.

Beyond self-consistent hashes (which anyone can recompute): every record is signed with an
HMAC-SHA256 key the site keeps outside the run folders (params ``run.record_key``, default
``$XDG_STATE_HOME/cni-runbook/record.key``, created 0600 on first use), and chained to the
previous record of the same site in the same outputs folder (its run id, run.json sha256 and
signature at the time). ``verify --all`` checks every record's signature, that every chained
record still exists and that every run folder has its run.json; a per-site head file next to the
key names the newest record, so deleting the last record is found too.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import hmac
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
    for path in (Path(run_id), root / run_id):
        if path.is_dir() and any(path.iterdir()):
            raise RunbookError(f"run {path.name}: {RECORD} is missing - the record of this run folder was "
                               "deleted (tampering), the files left cannot be trusted")
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
    body = {k: v for k, v in record.items() if k not in ("record_sha256", "signature")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# --- signing and chaining -------------------------------------------------------------------

def _state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "cni-runbook"


def default_key_path() -> Path:
    return _state_home() / "record.key"


def key_path(record: dict[str, Any]) -> Path:
    """The signing key a record names (params run.record_key), else the default location."""
    named = ((record.get("params") or {}).get("run") or {}).get("record_key")
    return Path(named).expanduser() if named else default_key_path()


def load_key(path: Path, create: bool = False) -> bytes | None:
    """The HMAC key in ``path``; with ``create`` a new random key is written (0600) if there is none."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            return None
    except (OSError, ValueError) as exc:
        raise RunbookError(f"{path}: unreadable record signing key: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_random.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # atomic: when two runs create the key at once, the first one wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"cni-runbook record key" + key).hexdigest()[:16]


def _signature(record: dict[str, Any], key: bytes) -> str:
    body = {k: v for k, v in record.items() if k != "signature"}
    return hmac.new(key, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def _head_file(run_dir: Path, site: str) -> Path:
    root = hashlib.sha256(str(run_dir.resolve().parent).encode()).hexdigest()[:10]
    return _state_home() / "chain" / f"{root}-{site}.head"


def _previous(run_dir: Path, site: str) -> Path | None:
    """The newest other run folder of the same site, older than this one, with a record."""
    for other in sorted(run_dir.parent.iterdir(), reverse=True):
        if other.name >= run_dir.name or not other.is_dir():
            continue
        try:
            if json.loads((other / RECORD).read_text()).get("site") == site:
                return other
        except (OSError, json.JSONDecodeError):
            continue
    return None


def _chain(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    prev = _previous(run_dir, record.get("site", ""))
    if prev is None:
        return {"previous": None}
    prev_record = json.loads((prev / RECORD).read_text())
    return {"previous": prev.name, "previous_sha256": sha256_file(prev / RECORD),
            "previous_signature": (prev_record.get("signature") or {}).get("value")}


def write_record(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Hash the folder into the record, chain and sign it, write run.json atomically; returns the record."""
    if "chain" not in record:
        record["chain"] = _chain(run_dir, record)
    record["files"] = hash_tree(run_dir)
    record["record_sha256"] = _digest(record)
    path = key_path(record)
    key = load_key(path, create=True)
    record["signature"] = {"alg": "hmac-sha256", "key_id": _key_id(key), "key": str(path),
                           "value": _signature(record, key)}
    tmp = run_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(run_dir / RECORD)
    head = _head_file(run_dir, record.get("site", ""))
    try:
        newest = head.read_text().strip()
    except OSError:
        newest = ""
    if run_dir.name >= newest:
        head.parent.mkdir(parents=True, exist_ok=True)
        head.write_text(run_dir.name + "\n")
    return record


def _signature_problems(record: dict[str, Any]) -> list[str]:
    sig = record.get("signature")
    if not isinstance(sig, dict) or not sig.get("value"):
        return [f"{RECORD}: not signed (a record written by this runbook always is: forged or stripped?)"]
    path = key_path(record)
    key = load_key(path)
    if key is None:
        return [f"{RECORD}: signed with key {sig.get('key_id')}, but the key {path} is not here to check it"]
    if sig.get("key_id") != _key_id(key):
        return [f"{RECORD}: signed with key {sig.get('key_id')}, not with {path} (key {_key_id(key)})"]
    if not hmac.compare_digest(str(sig["value"]), _signature(record, key)):
        return [f"{RECORD}: signature does not match its content: the record was rewritten after it was signed"]
    return []


def verify_all(root: Path | None = None) -> dict[str, list[str]]:
    """Problems of every run folder under ``root`` (by folder name), chains and head files included.

    A folder without run.json is reported as a deleted record; a record whose chained
    predecessor is gone names it; each site's newest record must be the one its head file names.
    """
    root = root or outputs_root()
    found: dict[str, list[str]] = {}
    if not root.is_dir():
        return found
    sites: dict[str, str] = {}
    for run_dir in sorted(p for p in root.iterdir()
                          if p.is_dir() and not p.name.startswith(".") and ".rollback-" not in p.name):
        if not (run_dir / RECORD).exists():
            found[run_dir.name] = [f"{RECORD}: missing - the record of this run folder was deleted (tampering), "
                                   "the files left cannot be trusted"]
            continue
        problems = verify(run_dir)
        try:
            record = load_record(run_dir)
        except RunbookError:
            found[run_dir.name] = problems
            continue
        prev = (record.get("chain") or {}).get("previous")
        if prev and not (root / prev / RECORD).exists():
            problems.append(f"chain: the previous record of site {record.get('site')}, {prev}, is gone (deleted?)")
        sites[record.get("site", "")] = max(sites.get(record.get("site", ""), ""), run_dir.name)
        found[run_dir.name] = problems
    for site, newest in sites.items():
        try:
            head = _head_file(root / newest, site).read_text().strip()
        except OSError:
            continue
        if head and head > newest:
            found.setdefault(head, []).append(
                f"{RECORD}: missing - {head} was the newest record of site {site} and its run folder is gone (deleted?)")
    return found


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
    problems.extend(_signature_problems(record))
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
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
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
