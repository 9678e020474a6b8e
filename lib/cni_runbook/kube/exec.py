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


def pod_logs(kube: Kube, namespace: str, pod: str, container: str | None = None, tail: int = 50) -> str:
    kwargs = {"container": container} if container else {}
    return kube.core.read_namespaced_pod_log(pod, namespace, tail_lines=tail, **kwargs)


__all__ = ["ExecResult", "exec_in_pod", "pod_logs"]
