"""A tiny process supervisor for the lab's components.

Run as ``python -m cni_runbook.lab.supervisor STATE_DIR``, detached from the
terminal. It reads ``STATE_DIR/components.json`` (a list of components, each
``{"name", "argv", "env"}``), starts them in order with their output appended to
``STATE_DIR/logs/<name>.log``, restarts any that exit (with backoff), and writes
``STATE_DIR/status.json`` every second. SIGHUP re-reads the component list and
starts the new ones (so the hosts and the cluster can come up in two steps);
SIGTERM stops everything in reverse order (TERM, then KILL after a grace period)
and exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GRACE_SECONDS = 6.0
MAX_BACKOFF = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None
    history: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children: dict[str, Child] = {}
        self.stopping = False
        self.reload_requested = True

    def load(self) -> None:
        spec = json.loads((self.state_dir / "components.json").read_text())
        for item in spec:
            if item["name"] not in self.children:
                self.children[item["name"]] = Child(item["name"], item["argv"], item.get("env", {}))

    def start(self, child: Child) -> None:
        log = open(self.logs / f"{child.name}.log", "ab")
        log.write(f"\n--- supervisor: starting {child.name} at {time.strftime('%H:%M:%S')} ---\n".encode())
        log.flush()
        env = {**os.environ, **child.env}
        child.proc = subprocess.Popen(
            child.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
        log.close()
        child.started_at = time.time()

    def tick(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is not None:
                child.last_exit = child.proc.returncode
                child.proc = None
                child.restarts += 1
                backoff = min(MAX_BACKOFF, 2 ** min(child.restarts, 5) / 2)
                child.next_start = now + backoff
            if child.proc is None and now >= child.next_start:
                self.start(child)

    def write_status(self) -> None:
        status = {
            "supervisor_pid": os.getpid(),
            "updated": time.time(),
            "components": [
                {
                    "name": c.name,
                    "pid": c.proc.pid if c.proc else None,
                    "state": "running" if c.proc else "restarting",
                    "restarts": c.restarts,
                    "last_exit": c.last_exit,
                    "started_at": c.started_at,
                    "log": str(self.logs / f"{c.name}.log"),
                }
                for c in self.children.values()
            ],
        }
        tmp = self.state_dir / "status.json.tmp"
        tmp.write_text(json.dumps(status, indent=1))
        tmp.replace(self.state_dir / "status.json")

    def stop_all(self) -> None:
        running = [c for c in reversed(list(self.children.values())) if c.proc]
        for child in running:
            try:
                os.killpg(child.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in running):
            time.sleep(0.1)
        for child in running:
            if child.proc.poll() is None:
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.proc.wait(timeout=5)

    def loop(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_requested", True))
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                self.load()
            self.tick()
            self.write_status()
            time.sleep(0.5)
        self.stop_all()
        (self.state_dir / "status.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m cni_runbook.lab.supervisor STATE_DIR", file=sys.stderr)
        return 2
    Supervisor(Path(args[0])).loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
