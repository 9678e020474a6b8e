"""Kubernetes access for the runbooks: client, server-side apply, waits, exec."""

from .client import Kube, KubeError

__all__ = ["Kube", "KubeError"]
