"""Leftovers of a stage's earlier, interrupted run: found by the stage's own marks, and removed.

A stage that creates test objects marks each one with the annotation :data:`ROLE_ANNOTATION`
(``cni-runbook.io/role``: which part of the stage made it). A run that ends normally removes
them; a run stopped hard (SIGKILL, a lost connection, a power cut) leaves them in the cluster,
where they would change the next run's measurements or make it refuse to start. The stage then
calls :func:`remove` with its roles before it applies anything: namespaces carrying one of the
roles go (with everything in them), then marked pods and NetworkPolicies in other namespaces;
nothing without the mark is touched. The lock (:mod:`.lock`) guarantees no other run's stage
is using them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kubernetes.client.rest import ApiException

from .client import Kube, KubeError, retry

ROLE_ANNOTATION = "cni-runbook.io/role"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Leftover:
    kind: str  # Namespace | Pod | NetworkPolicy
    namespace: str | None
    name: str
    role: str

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def _role(obj) -> str:
    return ((obj.metadata.annotations or {}) if obj.metadata else {}).get(ROLE_ANNOTATION, "")


def find(kube: Kube, roles: Iterable[str]) -> list[Leftover]:
    """Every namespace, pod and NetworkPolicy of the cluster marked with one of ``roles``
    (pods and policies inside a marked namespace are not listed: they go with it)."""
    roles = set(roles)
    namespaces = kube.core.list_namespace().items
    found = [Leftover("Namespace", None, n.metadata.name, _role(n))
             for n in namespaces if _role(n) in roles and not n.metadata.deletion_timestamp]
    # a namespace already terminating is a finished run's clean-up that Kubernetes completes
    # (wait.NAMESPACE_DELETION_GRACE_S after the request): not a leftover, and its pods go with it
    gone_with = {f.name for f in found} | {n.metadata.name for n in namespaces if n.metadata.deletion_timestamp}
    for pod in kube.core.list_pod_for_all_namespaces().items:
        if _role(pod) in roles and pod.metadata.namespace not in gone_with and not pod.metadata.deletion_timestamp:
            found.append(Leftover("Pod", pod.metadata.namespace, pod.metadata.name, _role(pod)))
    from kubernetes import client

    for policy in client.NetworkingV1Api(kube.api).list_network_policy_for_all_namespaces().items:
        if _role(policy) in roles and policy.metadata.namespace not in gone_with:
            found.append(Leftover("NetworkPolicy", policy.metadata.namespace, policy.metadata.name, _role(policy)))
    return found


def _delete(kube: Kube, item: Leftover) -> None:
    from kubernetes import client

    try:
        if item.kind == "Namespace":
            kube.core.delete_namespace(item.name, propagation_policy="Background")
        elif item.kind == "Pod":
            kube.core.delete_namespaced_pod(item.name, item.namespace, grace_period_seconds=0)
        else:
            client.NetworkingV1Api(kube.api).delete_namespaced_network_policy(item.name, item.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _exists(kube: Kube, item: Leftover) -> bool:
    api_version = "networking.k8s.io/v1" if item.kind == "NetworkPolicy" else "v1"
    return kube.get(api_version, item.kind, item.name, item.namespace) is not None


def remove(kube: Kube, roles: Iterable[str], timeout: float = 180, progress: Progress | None = None) -> list[Leftover]:
    """Delete the leftovers of ``roles`` (:func:`find`) and wait until they are gone.

    Returns what was removed (empty: there was nothing). Raises :class:`KubeError` naming every
    object still there after ``timeout`` seconds, so the stage fails before it applies anything.
    """
    say = progress or (lambda _m: None)
    deadline = time.monotonic() + timeout
    found = retry(lambda: find(kube, roles), deadline=time.monotonic() + min(timeout, 30),
                  what="listing the leftovers of earlier runs")
    if not found:
        return []
    say(f"removing {len(found)} leftover(s) of an earlier, interrupted run: {', '.join(f.ref for f in found)}")
    for item in found:
        retry(lambda item=item: _delete(kube, item), deadline=deadline, what=f"deleting {item.ref}")
    left = list(found)
    while left:
        left = [item for item in left if _exists(kube, item)]
        if not left:
            break
        if time.monotonic() > deadline:
            raise KubeError(f"leftovers of an earlier run still there after {timeout:.0f}s: "
                            f"{', '.join(f.ref for f in left)} (delete them, e.g. kubectl delete namespace ...)")
        time.sleep(1)
    say(f"removed: {', '.join(f.ref for f in found)}")
    return found


__all__ = ["ROLE_ANNOTATION", "Leftover", "find", "remove"]
