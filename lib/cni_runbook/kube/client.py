"""One place that talks to a Kubernetes API server.

Every cluster call of the runbooks goes through :class:`Kube`, built from a
kubeconfig *path* (the credentials stay in that file; nothing here prints or logs
them). It uses an isolated ``ApiClient`` (never the global configuration) and a
dynamic client whose discovery cache lives in a private temporary file, refreshed
when new CRDs appear.

Faults of the API server fail fast instead of hanging a stage:

* every request has a timeout (connect :data:`CONNECT_TIMEOUT_S`, read ``request_timeout``);
  a watch's read timeout follows its server-side ``timeoutSeconds`` (plus a margin), so a frozen
  API server ends a watch when its step's time is up;
* idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS, and PATCH: this package sends server-side
  apply and merge patches only) are retried with exponential backoff on
  connection errors and 502/503/504 - enough to ride out an API server restart of a few seconds;
  a request that was not sent (connection refused) is retried whatever its method. A read timeout
  is not retried: a server that slow is sick, and the step must fail within its own time.
* :func:`retry` repeats a whole step (a list + watch, a clean-up) on transient errors until the
  step's deadline.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config

from ..errors import OperatorError
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError


class KubeError(OperatorError):
    """A cluster operation failed in a way the operator should read."""


def api_error_message(exc: Exception) -> str:
    """The server's own message for an API error (the Status 'message'), else str(exc)."""
    body = getattr(exc, "body", None)
    if body:
        import json

        try:
            data = json.loads(body if isinstance(body, str) else body.decode())
            return data.get("message") or str(exc)
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(exc)


CONNECT_TIMEOUT_S = 5.0
WATCH_MARGIN_S = 2.0
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})  # PATCH: server-side apply and merge patches


def _retries() -> urllib3.Retry:
    """Backoff 0.5, 1, 2, 4 s (capped at 4): about 8 s of retrying, covering a short API server restart."""
    return urllib3.Retry(total=5, connect=5, read=0, status=3, other=0, backoff_factor=0.5, backoff_max=4,
                         status_forcelist=(502, 503, 504), allowed_methods=IDEMPOTENT,
                         raise_on_status=False, respect_retry_after_header=True)


def new_api_client(kubeconfig: str | Path, context: str | None, request_timeout: float) -> client.ApiClient:
    """An isolated ApiClient with retries and a default timeout on every request (see module docstring)."""
    cfg = type.__call__(client.Configuration)
    config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg,
                            persist_config=False)
    cfg.retries = _retries()
    api = client.ApiClient(configuration=cfg)
    rest = api.rest_client
    request = rest.request

    def with_timeout(method, url, *args, _request_timeout=None, **kwargs):
        if _request_timeout is None:
            query = dict(parse_qsl(urlsplit(url).query))
            query.update({k: str(v) for k, v in dict(kwargs.get("query_params") or []).items()})
            if query.get("watch", "").lower() == "true":
                server_s = query.get("timeoutSeconds")
                _request_timeout = (CONNECT_TIMEOUT_S, float(server_s) + WATCH_MARGIN_S) if server_s else None
            else:
                _request_timeout = (CONNECT_TIMEOUT_S, request_timeout)
        return request(method, url, *args, _request_timeout=_request_timeout, **kwargs)

    rest.request = with_timeout
    return api


TRANSIENT = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)


def transient(exc: BaseException) -> bool:
    """An error worth retrying: the API server unreachable, slow, restarting (429/5xx) or a watch expired (410)."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 410, 429, 500, 502, 503, 504)
    return isinstance(exc, TRANSIENT)


def retry(call: Callable[[], Any], *, deadline: float, what: str, pause_s: float = 0.5,
          max_pause_s: float = 4.0) -> Any:
    """``call()`` until it succeeds or ``deadline`` (time.monotonic) passes; only transient errors are retried.

    The last error is raised as a :class:`KubeError` naming ``what`` when the deadline passes.
    """
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - filtered by transient()
            if not transient(exc):
                raise
            if time.monotonic() + pause_s >= deadline:
                raise KubeError(f"{what}: the API server did not answer in time "
                                f"({type(exc).__name__}: {str(exc)[:200]})") from None
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, max_pause_s)


@dataclass
class Kube:
    """A connection to one cluster (see module docstring)."""

    kubeconfig: Path
    context: str | None = None
    request_timeout: float = 10.0  # read timeout of every request but watches (see module docstring)
    _cache_dir: tempfile.TemporaryDirectory = field(default_factory=tempfile.TemporaryDirectory, repr=False)

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None) -> "Kube":
        path = Path(path)
        if not path.is_file():
            raise KubeError(f"kubeconfig {path} does not exist")
        return cls(path, context)

    @cached_property
    def api(self) -> client.ApiClient:
        return new_api_client(self.kubeconfig, self.context, self.request_timeout)

    def fresh_api(self) -> client.ApiClient:
        """A new, unshared ApiClient (the caller closes it).

        ``kubernetes.stream`` swaps ``call_api`` on the client it is given while an exec
        runs, so an exec must never share a client with other threads.
        """
        return new_api_client(self.kubeconfig, self.context, self.request_timeout)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def server(self) -> str:
        return self.api.configuration.host

    @cached_property
    def dynamic(self) -> DynamicClient:
        return DynamicClient(self.api, cache_file=str(Path(self._cache_dir.name) / "discovery.json"))

    def refresh_discovery(self) -> None:
        """Forget cached API discovery (call after CRDs or APIServices were added)."""
        self.dynamic.resources.invalidate_cache()

    def resource(self, api_version: str, kind: str):
        """The dynamic resource for apiVersion/kind, or KubeError naming them."""
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            self.refresh_discovery()
            try:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise KubeError(f"the API server does not serve kind {kind} in {api_version}") from None

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object as a dict, or None when it does not exist."""
        res = self.resource(api_version, kind)
        try:
            obj = self.dynamic.get(res, name=name, namespace=namespace if res.namespaced else None)
        except NotFoundError:
            return None
        return obj.to_dict()

    def version(self) -> str:
        return client.VersionApi(self.api).get_code().git_version

    def close(self) -> None:
        if "api" in self.__dict__:
            self.api.close()
        self._cache_dir.cleanup()


def cluster_kubeconfig(params, state_get: Callable[[str], Any]) -> tuple[Path, str | None]:
    """The kubeconfig (path, context) a stage after 01 works with.

    The one stage 01 handed over in the run state (``kubeconfig``, ``kube_context``) when there
    is one; else by provisioner kind: ``existing`` -> ``provisioner.kubeconfig``, ``lab`` -> the
    embedded lab's admin kubeconfig; ``kubespray`` needs stage 01 to have run in this run.
    """
    handed = state_get("kubeconfig")
    if handed:
        return Path(handed), state_get("kube_context") or params.provisioner.context
    kind = params.provisioner.kind
    if kind == "existing":
        return Path(params.provisioner.kubeconfig), params.provisioner.context
    raise KubeError(f"provisioner {kind!r}: stage 01 handed over no kubeconfig in the run state "
                    "(run 01_cluster_no_cni first, in the same run; the stages take the cluster from "
                    "cni_runbook.provision.targets.resolve)")


__all__ = ["Kube", "KubeError", "ApiException", "NotFoundError", "api_error_message", "cluster_kubeconfig",
           "retry", "transient", "new_api_client"]
