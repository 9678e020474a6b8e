"""A small, honest wrapper around ``ansible_runner.run_async``.

Why a wrapper:

* ansible-runner writes extravars/envvars/cmdline into ``<private_data_dir>/env/`` and silently
  reuses them on the next run in the same directory. Every run here gets a FRESH private data
  directory inside the caller's run folder, and refuses to reuse one.
* Events stream into a :class:`Progress` model (tasks seen, hosts, ok/changed/failed/unreachable
  counts, a live list of failures) that a notebook can render with tqdm
  (:func:`tqdm_listener`) or anything else that takes a callback.
* Secrets: a ``redact(text) -> text`` callable is applied to every event before ansible-runner
  writes it to ``job_events/``, to the failure messages shown live, and, once the run is over, to
  every other text file ansible-runner left in the private data directory (stdout, command,
  env/*). The artifacts are kept in the run folder, so they are part of the audit record.
* The environment: ansible-playbook gets, and ``artifacts/<ident>/command`` records, only the
  variables of :data:`ENV_ALLOW` (plus ``ANSIBLE_*``/``LC_*``, the caller's ``envvars`` and what
  ansible-runner sets itself), never the operator's whole environment.
"""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ansible_runner
import ansible_runner.interface
import pandas as pd

Redactor = Callable[[str], str]
Listener = Callable[["Progress"], None]

COUNT_KEYS = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
FINAL_STATUSES = ("successful", "failed", "timeout", "canceled", "error")
# ansible-runner's playbook_on_stats keys -> the names an operator reads in PLAY RECAP.
_STATS_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}
MESSAGE_LIMIT = 4000


def _identity(text: str) -> str:
    return text


def redact_structure(value: Any, redact: Redactor) -> Any:
    """Return ``value`` with ``redact`` applied to every string inside dicts/lists (keys kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_structure(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_structure(v, redact) for v in value)
    return value


def failure_message(res: Mapping[str, Any] | None) -> str:
    """The text an operator needs from a failed/unreachable task result."""
    if not res:
        return ""
    parts: list[str] = []
    msg = res.get("msg")
    if msg:
        parts.append(str(msg))
    for key in ("stderr", "module_stderr"):
        text = res.get(key)
        if text and str(text) not in parts:
            parts.append(str(text).strip())
    if not parts and res.get("stdout"):
        parts.append(str(res["stdout"]).strip())
    if not parts and res.get("rc") not in (None, 0):
        parts.append(f"rc={res['rc']}")
    if not parts and res.get("results"):  # a loop: report the first failed item
        for item in res["results"]:
            if isinstance(item, Mapping) and item.get("failed"):
                parts.append(f"item {item.get('item')!r}: {failure_message(item)}")
                break
    text = "\n".join(p for p in parts if p)
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT] + f"... [{len(text) - MESSAGE_LIMIT} more characters]"
    return text


@dataclass(frozen=True)
class Failure:
    """One failed or unreachable task on one host (already redacted)."""

    host: str
    task: str
    kind: str  # "failed" | "unreachable"
    action: str
    message: str
    play: str = ""


@dataclass(frozen=True)
class TaskResult:
    """The result of a captured task on one host (kept in memory, not redacted)."""

    host: str
    task: str
    action: str
    event: str  # runner_on_ok | runner_on_failed | runner_on_unreachable | runner_on_skipped
    res: Mapping[str, Any]


class Progress:
    """Live model of a playbook run, fed one ansible-runner event at a time.

    Thread-safe enough for a notebook: events arrive on ansible-runner's thread, readers take
    snapshots (``totals``, ``failures``) from the notebook thread.
    """

    def __init__(self, capture: Collection[str] = ()) -> None:
        self.status = "pending"
        self.plays: list[str] = []
        self.tasks: list[str] = []
        self.current_task: str | None = None
        self.hosts: list[str] = []
        self.counts: dict[str, dict[str, int]] = {}
        self.failures: list[Failure] = []
        self.stats: dict[str, dict[str, int]] | None = None
        self.captured: dict[str, dict[str, TaskResult]] = {}
        self.events_seen = 0
        self._capture = set(capture)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    # -- feeding -------------------------------------------------------------------------
    def capture(self, tasks: Collection[str]) -> None:
        """Also keep the per-host results of these task names (see ``AnsibleResult.results``)."""
        self._capture.update(tasks)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(progress)`` after every event and status change."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self)

    def _host(self, host: str) -> dict[str, int]:
        if host not in self.counts:
            self.hosts.append(host)
            self.counts[host] = {k: 0 for k in COUNT_KEYS}
        return self.counts[host]

    def set_status(self, status: str) -> None:
        with self._lock:
            self.status = status
        self._notify()

    def handle(self, event: Mapping[str, Any], *, redact: Redactor | None = None) -> None:
        """Update the model from one ansible-runner event.

        ``redact`` is applied to the failure messages kept in :attr:`failures`; captured task
        results are kept as they came (in memory only).
        """
        redact = redact or _identity
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host") or data.get("remote_addr")
        task = data.get("task") or ""
        action = data.get("task_action") or ""
        res = data.get("res") or {}
        with self._lock:
            self.events_seen += 1
            if kind == "playbook_on_play_start":
                self.plays.append(data.get("play") or data.get("name") or "")
            elif kind == "playbook_on_task_start":
                self.tasks.append(task)
                self.current_task = task
            elif kind == "runner_on_start" and host:
                self._host(host)
            elif kind == "runner_on_ok" and host:
                counts = self._host(host)
                counts["ok"] += 1
                if res.get("changed"):
                    counts["changed"] += 1
            elif kind == "runner_on_skipped" and host:
                self._host(host)["skipped"] += 1
            elif kind == "runner_on_failed" and host:
                counts = self._host(host)
                if data.get("ignore_errors"):
                    counts["ignored"] += 1
                else:
                    counts["failed"] += 1
                    self.failures.append(
                        Failure(host, task, "failed", action, redact(failure_message(res)), data.get("play", ""))
                    )
            elif kind == "runner_on_unreachable" and host:
                self._host(host)["unreachable"] += 1
                self.failures.append(
                    Failure(
                        host, task, "unreachable", action, redact(failure_message(res)), data.get("play", "")
                    )
                )
            elif kind == "playbook_on_stats":
                self.stats = {
                    ours: dict(data.get(theirs) or {}) for theirs, ours in _STATS_KEYS.items()
                }
                for per_host in self.stats.values():
                    for name in per_host:
                        self._host(name)
            if (
                host
                and task in self._capture
                and kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped")
            ):
                self.captured.setdefault(task, {})[host] = TaskResult(host, task, action, kind, res)
        self._notify()

    # -- reading -------------------------------------------------------------------------
    @property
    def totals(self) -> dict[str, int]:
        with self._lock:
            out = {k: 0 for k in COUNT_KEYS}
            for counts in self.counts.values():
                for key, value in counts.items():
                    out[key] += value
            return out

    def summary(self) -> str:
        t = self.totals
        return (
            f"{self.status}: {len(self.tasks)} tasks, {len(self.hosts)} hosts, ok={t['ok']} "
            f"changed={t['changed']} failed={t['failed']} unreachable={t['unreachable']}"
        )

    def recap(self) -> pd.DataFrame:
        """Per-host PLAY RECAP table; from playbook_on_stats when Ansible got that far."""
        rows = []
        with self._lock:
            for host in self.hosts:
                if self.stats is not None:
                    row = {key: int(self.stats.get(key, {}).get(host, 0)) for key in COUNT_KEYS}
                else:
                    row = dict(self.counts[host])
                rows.append({"host": host, **row})
        frame = pd.DataFrame(rows, columns=["host", *COUNT_KEYS])
        return frame.set_index("host")

    def failures_frame(self) -> pd.DataFrame:
        with self._lock:
            rows = [
                {"host": f.host, "task": f.task, "kind": f.kind, "action": f.action, "message": f.message}
                for f in self.failures
            ]
        return pd.DataFrame(rows, columns=["host", "task", "kind", "action", "message"])


def tqdm_listener(bar: Any) -> Listener:
    """A :class:`Progress` listener driving a tqdm bar (``tqdm.auto.tqdm(total=None, unit="task")``).

    The bar counts tasks started; the postfix shows ok/changed/failed/unreachable totals and the
    description the current task. Works with ``tqdm.notebook`` too.
    """

    def update(progress: Progress) -> None:
        bar.n = len(progress.tasks)
        description = progress.current_task or progress.status
        bar.set_description((description or "")[:48], refresh=False)
        totals = progress.totals
        bar.set_postfix(
            ok=totals["ok"],
            changed=totals["changed"],
            failed=totals["failed"],
            unreachable=totals["unreachable"],
            refresh=False,
        )
        bar.refresh()

    return update


@dataclass
class AnsibleResult:
    """What a finished (or stopped) run left behind."""

    status: str
    rc: int | None
    playbook: str
    private_data_dir: Path
    artifact_dir: Path
    progress: Progress
    started: datetime
    duration_s: float
    redacted_files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    @property
    def failures(self) -> list[Failure]:
        return list(self.progress.failures)

    def recap(self) -> pd.DataFrame:
        return self.progress.recap()

    def failed_tasks(self) -> pd.DataFrame:
        return self.progress.failures_frame()

    def results(self, task: str) -> dict[str, TaskResult]:
        """Captured results of ``task`` by host (the task must be listed in ``capture``)."""
        return dict(self.progress.captured.get(task, {}))

    def summary(self) -> str:
        return f"{self.playbook}: {self.progress.summary()} rc={self.rc} in {self.duration_s:.1f}s"

    def raise_for_status(self) -> AnsibleResult:
        if not self.ok:
            raise AnsibleRunError(self)
        return self


class AnsibleRunError(RuntimeError):
    def __init__(self, result: AnsibleResult) -> None:
        self.result = result
        lines = [result.summary()]
        for f in result.failures[:10]:
            first = f.message.splitlines()[0] if f.message else ""
            lines.append(f"  {f.kind} {f.host}: {f.task}: {first}")
        lines.append(f"  artifacts: {result.artifact_dir}")
        super().__init__("\n".join(lines))


# Variables of the caller's environment that ansible-playbook may see (and the record may show).
# Everything else (cloud keys, tokens, database URLs, ...) is dropped; variables the caller passes
# as ``envvars`` and those ansible-runner sets itself are kept.
ENV_ALLOW = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
    "SSH_AUTH_SOCK", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
ENV_ALLOW_PREFIXES = ("ANSIBLE_", "LC_")


def allowed_env(env: Mapping[str, str], keep: Collection[str] = ()) -> dict[str, str]:
    """The variables of ``env`` that are on the allow-list, set by ansible-runner, or in ``keep``.

    A variable inherited unchanged from this process's environment is kept only when allowed; one
    ansible-runner added or changed (its callback plugin settings, ...) is its own and kept.
    """
    out: dict[str, str] = {}
    for name, value in env.items():
        inherited = os.environ.get(name) == value
        if name in keep or name in ENV_ALLOW or name.startswith(ENV_ALLOW_PREFIXES) or not inherited:
            out[name] = value
    return out


def ansible_playbook_binary() -> str:
    """The ansible-playbook of this interpreter's environment (so versions checked here apply)."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise FileNotFoundError("ansible-playbook is not installed in this environment or on PATH")
    return found


def fresh_private_data_dir(run_dir: Path | str, name: str) -> Path:
    """Create and return a new, empty directory ``<run_dir>/ansible/<timestamp>-<name>[-N]``."""
    base = Path(run_dir) / "ansible"
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"
    for n in range(1, 1000):
        candidate = base / (f"{stamp}-{safe}" if n == 1 else f"{stamp}-{safe}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RuntimeError(f"could not create a fresh private data dir under {base}")


def redact_tree(root: Path, redact: Redactor, *, skip: Iterable[Path] = ()) -> list[Path]:
    """Apply ``redact`` to every UTF-8 text file below ``root``; return the files changed."""
    skipped = {p.resolve() for p in skip}
    changed: list[Path] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.resolve() in skipped:
            continue
        if any(parent.resolve() in skipped for parent in path.parents):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        new = redact(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


class AnsibleJob:
    """A playbook run in progress. ``cancel()`` stops it; ``wait()`` returns the result."""

    def __init__(
        self,
        *,
        playbook: str,
        private_data_dir: Path,
        progress: Progress,
        redact: Redactor,
        runner_kwargs: dict[str, Any],
        cancel_callback: Callable[[], bool] | None,
        on_event: Callable[[Mapping[str, Any]], None] | None,
        status_handler: Callable[[Mapping[str, Any]], None] | None,
    ) -> None:
        self.playbook = playbook
        self.private_data_dir = private_data_dir
        self.progress = progress
        self._redact = redact
        self._user_cancel = cancel_callback
        self._cancel = threading.Event()
        self._on_event = on_event
        self._status_handler = status_handler
        self._result: AnsibleResult | None = None
        self.started = datetime.now(timezone.utc)
        self._t0 = time.monotonic()
        progress.set_status("starting")
        # run_async() without its shortcut: the environment is cut down to the allow-list before
        # ansible-runner writes it to artifacts/<ident>/command and hands it to ansible-playbook.
        self._runner = ansible_runner.interface.init_runner(
            **runner_kwargs,
            event_handler=self._event,
            status_handler=self._status,
            cancel_callback=self._should_cancel,
        )
        config = self._runner.config
        config.env = allowed_env(config.env, set(runner_kwargs.get("envvars") or {}))
        self._thread = threading.Thread(target=self._runner.run)
        self._thread.start()

    # ansible-runner callbacks (its thread) ------------------------------------------------
    def _event(self, event: dict[str, Any]) -> bool:
        # The model sees the event as Ansible sent it (host and task names intact, captured
        # results unredacted in memory) and redacts failure messages itself; the event written
        # to job_events/ and passed to on_event is redacted (dict keys are kept as they are).
        self.progress.handle(copy.deepcopy(event), redact=self._redact)
        if self._redact is not _identity:
            for key in ("stdout", "event_data"):
                if key in event:
                    event[key] = redact_structure(event[key], self._redact)
        if self._on_event is not None:
            self._on_event(event)
        return True  # keep the event on disk: it is part of the audit record

    def _status(self, status_data: Mapping[str, Any], runner_config: Any = None) -> None:
        status = status_data.get("status", "")
        self.progress.set_status(status)
        if self._status_handler is not None:
            self._status_handler({"status": status, "runner_ident": status_data.get("runner_ident")})

    def _should_cancel(self) -> bool:
        if self._cancel.is_set():
            return True
        if self._user_cancel is not None and self._user_cancel():
            self._cancel.set()
            return True
        return False

    # public -------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask ansible-runner to stop the playbook (status becomes ``canceled``)."""
        self._cancel.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> AnsibleResult:
        """Block until the run ends (``TimeoutError`` if ``timeout`` seconds pass first)."""
        if self._result is not None:
            return self._result
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.playbook} still running after {timeout}s")
        runner = self._runner
        artifact_dir = Path(runner.config.artifact_dir)
        redacted: list[Path] = []
        if self._redact is not _identity:
            redacted = redact_tree(self.private_data_dir, self._redact, skip=[artifact_dir / "job_events"])
        status = runner.status or self.progress.status
        self.progress.set_status(status)
        self._result = AnsibleResult(
            status=status,
            rc=runner.rc,
            playbook=self.playbook,
            private_data_dir=self.private_data_dir,
            artifact_dir=artifact_dir,
            progress=self.progress,
            started=self.started,
            duration_s=time.monotonic() - self._t0,
            redacted_files=redacted,
        )
        return self._result


def start_playbook(
    playbook: str | Path,
    *,
    run_dir: Path | str,
    inventory: str | Path | Mapping[str, Any],
    project_dir: str | Path | None = None,
    extravars: Mapping[str, Any] | None = None,
    extravars_files: Sequence[str | Path] = (),
    envvars: Mapping[str, str] | None = None,
    cmdline: Sequence[str] = (),
    limit: str | None = None,
    tags: str | None = None,
    verbosity: int = 0,
    forks: int | None = None,
    timeout: int | None = None,
    idle_timeout: int | None = None,
    poll_interval_s: float = 1.0,
    cancel_callback: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    capture: Collection[str] = (),
    on_event: Callable[[Mapping[str, Any]], None] | None = None,
    status_handler: Callable[[Mapping[str, Any]], None] | None = None,
    redact: Redactor | None = None,
    name: str | None = None,
) -> AnsibleJob:
    """Start ``playbook`` in the background in a fresh private data dir under ``run_dir``.

    ``playbook`` is relative to ``project_dir`` (the working directory, so an ``ansible.cfg``
    there applies), or an absolute path (then its folder becomes ``project_dir``).
    ``inventory`` is a path, or a dict/str ansible-runner writes into the private data dir.
    ``timeout`` is the whole-job limit in seconds and ``idle_timeout`` the longest silence
    (both end with status ``timeout``); ``cancel_callback`` is polled by ansible-runner every
    ``poll_interval_s`` seconds, ``job.cancel()`` does the same from another thread.
    """
    playbook_path = Path(playbook)
    if project_dir is None:
        if not playbook_path.is_absolute():
            raise ValueError("give project_dir, or an absolute playbook path")
        project_dir, playbook_path = playbook_path.parent, Path(playbook_path.name)
    project = Path(project_dir).resolve()
    if not (project / playbook_path).is_file():
        raise FileNotFoundError(f"playbook {playbook_path} not found in {project}")
    if isinstance(inventory, Path):
        if not inventory.exists():
            raise FileNotFoundError(f"inventory {inventory} does not exist")
        inventory = str(inventory.resolve())
    elif isinstance(inventory, str) and "\n" not in inventory and Path(inventory).exists():
        inventory = str(Path(inventory).resolve())
    if progress is None:
        progress = Progress(capture)
    else:
        progress.capture(capture)

    private_data_dir = fresh_private_data_dir(run_dir, name or playbook_path.stem)
    args: list[str] = []
    for path in extravars_files:
        resolved = Path(path).resolve()
        if not resolved.is_file():
            raise FileNotFoundError(f"extra vars file {resolved} does not exist")
        args += ["-e", f"@{resolved}"]
    args += list(cmdline)
    runner_kwargs: dict[str, Any] = {
        "private_data_dir": str(private_data_dir),
        "project_dir": str(project),
        "playbook": str(playbook_path),
        "inventory": inventory,
        "ident": "run",
        "quiet": True,
        "verbosity": verbosity or None,
    }
    if extravars:
        runner_kwargs["extravars"] = dict(extravars)
    env = {k: str(v) for k, v in (envvars or {}).items()}
    # ansible-runner runs "ansible-playbook" from PATH: make it the one of this environment.
    bin_dir = str(Path(ansible_playbook_binary()).parent)
    path = env.get("PATH", os.environ.get("PATH", ""))
    if path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    runner_kwargs["envvars"] = env
    if args:
        runner_kwargs["cmdline"] = shlex.join(args)
    if limit:
        runner_kwargs["limit"] = limit
    if tags:
        runner_kwargs["tags"] = tags
    if forks:
        runner_kwargs["forks"] = forks
    if timeout:
        runner_kwargs["timeout"] = int(timeout)
    settings: dict[str, Any] = {"pexpect_timeout": poll_interval_s}
    if idle_timeout:
        settings["idle_timeout"] = int(idle_timeout)
    runner_kwargs["settings"] = settings
    return AnsibleJob(
        playbook=str(playbook_path),
        private_data_dir=private_data_dir,
        progress=progress,
        redact=redact if redact is not None else _identity,
        runner_kwargs=runner_kwargs,
        cancel_callback=cancel_callback,
        on_event=on_event,
        status_handler=status_handler,
    )


def run_playbook(playbook: str | Path, **kwargs: Any) -> AnsibleResult:
    """:func:`start_playbook` and wait for the result (same keyword arguments)."""
    return start_playbook(playbook, **kwargs).wait()
