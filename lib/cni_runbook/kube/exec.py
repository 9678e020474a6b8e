"""Run a command in a pod and get stdout, stderr and the exit code separately (thread-safe)."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client
from kubernetes.stream import stream

from .client import Kube


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    returncode: int | None  # None: the command did not finish before the timeout

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def exec_in_pod(kube: Kube, namespace: str, pod: str, command: list[str], container: str | None = None,
                timeout: float = 30) -> ExecResult:
    """Exec ``command`` (no shell unless you pass one) with a hard timeout."""
    kwargs = {"container": container} if container else {}
    api = kube.fresh_api()  # exec patches its client while it runs: never share one
    try:
        ws = stream(
            client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, namespace, command=command,
            stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False, **kwargs,
        )
    except Exception:
        api.close()
        raise
    try:
        ws.run_forever(timeout=timeout)
        out, err = ws.read_stdout(timeout=0) or "", ws.read_stderr(timeout=0) or ""
        # returncode reads the error channel; it is only meaningful once the stream closed.
        code = ws.returncode if not ws.is_open() else None
    finally:
        ws.close()
        api.close()
    return ExecResult(out, err, code)


class ExecSession:
    """A long-lived exec with stdin open: write to the command, read its output as it comes.

    One thread reads (:meth:`read`), any thread may :meth:`write`. The caller bounds
    the session's life (the command should end by itself; :meth:`close` always returns).
    """

    def __init__(self, kube: Kube, namespace: str, pod: str, command: list[str], container: str | None = None):
        kwargs = {"container": container} if container else {}
        self.api = kube.fresh_api()
        try:
            self.ws = stream(
                client.CoreV1Api(self.api).connect_get_namespaced_pod_exec, pod, namespace, command=command,
                stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False, **kwargs,
            )
        except Exception:
            self.api.close()
            raise

    def write(self, text: str) -> None:
        self.ws.write_stdin(text)

    def read(self, timeout: float) -> tuple[str, str]:
        """What arrived on stdout and stderr within ``timeout`` seconds ("" when nothing did)."""
        if self.ws.is_open():
            self.ws.update(timeout=timeout)
        return self.ws.read_stdout(timeout=0) or "", self.ws.read_stderr(timeout=0) or ""

    def is_open(self) -> bool:
        return self.ws.is_open()

    @property
    def returncode(self) -> int | None:
        return self.ws.returncode if not self.ws.is_open() else None

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.api.close()


def pod_logs(kube: Kube, namespace: str, pod: str, container: str | None = None, tail: int = 50) -> str:
    kwargs = {"container": container} if container else {}
    return kube.core.read_namespaced_pod_log(pod, namespace, tail_lines=tail, **kwargs)


__all__ = ["ExecResult", "ExecSession", "exec_in_pod", "pod_logs"]
