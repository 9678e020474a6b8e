"""Kubernetes access for the runbooks: client, server-side apply, waits, exec."""

from .client import Kube, KubeError, cluster_kubeconfig

__all__ = ["Kube", "KubeError", "cluster_kubeconfig"]
