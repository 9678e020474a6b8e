"""One place that talks to a Kubernetes API server.

Every cluster call of the runbooks goes through :class:`Kube`, built from a
kubeconfig *path* (the credentials stay in that file; nothing here prints or logs
them). It uses an isolated ``ApiClient`` (never the global configuration) and a
dynamic client whose discovery cache lives in a private temporary file, refreshed
when new CRDs appear.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

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


@dataclass
class Kube:
    """A connection to one cluster (see module docstring)."""

    kubeconfig: Path
    context: str | None = None
    request_timeout: float = 30.0
    _cache_dir: tempfile.TemporaryDirectory = field(default_factory=tempfile.TemporaryDirectory, repr=False)

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None) -> "Kube":
        path = Path(path)
        if not path.is_file():
            raise KubeError(f"kubeconfig {path} does not exist")
        return cls(path, context)

    @cached_property
    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)

    def fresh_api(self) -> client.ApiClient:
        """A new, unshared ApiClient (the caller closes it).

        ``kubernetes.stream`` swaps ``call_api`` on the client it is given while an exec
        runs, so an exec must never share a client with other threads.
        """
        return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)

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


__all__ = ["Kube", "KubeError", "ApiException", "NotFoundError", "api_error_message", "cluster_kubeconfig"]
