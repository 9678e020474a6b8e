"""Test double of :class:`cni_runbook.kube.exec.ExecSession` shared by the probe and stream unit tests.

The pod's command runs as a local process (no cluster, no API server): stdin, stdout and the
exit code behave like a long-lived exec's. Only the exec transport is doubled; the in-pod
scripts run for real under busybox. Import it with ``from local_session import LocalSession``.
"""

from __future__ import annotations

import os
import select
import subprocess


class LocalSession:
    """ExecSession's interface (write, read, is_open, returncode, close) over a local process;
    ``env`` (e.g. a PATH with nothing but busybox) is the process environment."""

    def __init__(self, kube, namespace, pod, command, container=None, env=None):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env)
        os.set_blocking(self.proc.stdout.fileno(), False)

    def write(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def end_input(self):
        """Close the command's stdin (what the end of an exec session does)."""
        self.proc.stdin.close()

    def read(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return ((self.proc.stdout.read() or b"").decode(), "") if ready else ("", "")

    def is_open(self):
        return self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except (OSError, ValueError):
                pass
