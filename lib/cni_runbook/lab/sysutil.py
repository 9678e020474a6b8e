"""Small, loud wrappers around the system commands the lab uses."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from ..errors import OperatorError

#: command -> Debian package that provides it (named in "missing prerequisite" errors).
PREREQUISITES: dict[str, str] = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "containerd": "containerd",
    "runc": "runc",
    "iptables-legacy": "iptables",
    "ipset": "ipset",
    "conntrack": "conntrack",
    "/usr/sbin/sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "docker-registry": "docker-registry",
    "go": "golang (Go >= 1.25)",
    "/bin/busybox": "busybox-static",  # probe tools in the agnhost image (validation suite)
}


class LabError(OperatorError):
    """An error the operator can act on; printed without a traceback."""


def missing_prerequisites(commands: Sequence[str] | None = None) -> list[str]:
    """Return "command (Debian package: pkg)" for every missing prerequisite."""
    missing = []
    for cmd in commands or PREREQUISITES:
        if shutil.which(cmd) is None:
            missing.append(f"{cmd} (Debian package: {PREREQUISITES.get(cmd, '?')})")
    return missing


def run(args: Sequence[str], check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command, capturing output; on failure raise LabError with its stderr."""
    proc = subprocess.run(list(args), capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"command failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stderr.strip()}")
    return proc


def quiet(args: Sequence[str]) -> bool:
    """Run a best-effort cleanup command; True when it succeeded."""
    try:
        return subprocess.run(list(args), capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def heartbeat(progress: Callable[[str], None], what: str, every: float = 60.0) -> Iterator[None]:
    """Say "still <what> (N min so far)" every ``every`` seconds while the block runs: a long
    compile prints nothing of its own, and a CI log that is silent for ten minutes reads as hung."""
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            progress(f"still {what} ({(time.monotonic() - started) / 60:.0f} min so far)")

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1)
