"""Waits with watches and timeouts: CRDs Established, rollouts, nodes Ready, pods Running,
namespaces gone.

Every wait lists once (the current state may already satisfy it), then watches
from that resourceVersion until the predicate holds or the deadline passes; the
watch is re-opened if the server closes it early, and list and watch are retried
(with backoff) across a short API server outage, never beyond the deadline. A timeout raises
:class:`WaitTimeout` saying what was awaited and the last state seen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from kubernetes import watch
from kubernetes.client.rest import ApiException

from .client import CONNECT_TIMEOUT_S, Kube, KubeError, transient


def kube_read_s() -> float:
    """Read timeout of the list that starts each wait round (shorter of this and the time left)."""
    return 10.0

Progress = Callable[[str], None]


class WaitTimeout(KubeError):
    pass


def watch_until(
    list_func: Callable,
    predicate: Callable[[list[dict]], tuple[bool, str]],
    timeout: float,
    what: str,
    progress: Progress | None = None,
    **list_kwargs,
) -> str:
    """Wait until ``predicate(items)`` is true for the listed objects.

    ``predicate`` returns (done, description); the description is passed to
    ``progress`` whenever it changes and is returned when done.
    """
    deadline = time.monotonic() + timeout
    state = ""
    pause, last_error = 0.5, None
    while True:
        remaining = deadline - time.monotonic()
        try:
            # the list's read timeout is bounded by the wait's own time (a frozen API server)
            result = list_func(**list_kwargs, _preload_content=False,
                               _request_timeout=(CONNECT_TIMEOUT_S, max(1.0, min(kube_read_s(), remaining))))
        except Exception as exc:  # noqa: BLE001 - transient ones are retried until the deadline
            if not transient(exc):
                raise
            last_error = f"{type(exc).__name__}: {str(exc)[:160]}"
            if time.monotonic() + pause >= deadline:
                raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}: the API server did not "
                                  f"answer ({last_error}); last state: {state or 'none seen'}") from None
            time.sleep(pause)
            pause = min(pause * 2, 4.0)
            continue
        pause = 0.5
        data = json.loads(result.data)
        items = {(i["metadata"].get("namespace"), i["metadata"]["name"]): i for i in data.get("items", [])}
        rv = data["metadata"].get("resourceVersion")
        done, state = _check(predicate, items, state, progress)
        if done:
            return state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last state: {state}")
        w = watch.Watch()
        try:
            for event in w.stream(list_func, **list_kwargs, resource_version=rv,
                                  timeout_seconds=max(1, int(remaining))):
                obj = event["raw_object"]
                key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
                if event["type"] == "DELETED":
                    items.pop(key, None)
                else:
                    items[key] = obj
                done, state = _check(predicate, items, state, progress)
                if done:
                    w.stop()
                    return state
                if time.monotonic() > deadline:
                    break
        except ApiException as exc:
            if exc.status != 410 and not transient(exc):  # 410 Gone: resourceVersion too old, list again
                raise
        except Exception as exc:  # noqa: BLE001 - a watch cut by an API server restart: list again
            if not transient(exc):
                raise
            last_error = f"{type(exc).__name__}: {str(exc)[:160]}"
        finally:
            w.stop()
        if time.monotonic() > deadline:
            extra = f" (the API server: {last_error})" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{extra}; last state: {state}")


def _check(predicate, items: dict, previous: str, progress: Progress | None) -> tuple[bool, str]:
    done, state = predicate(list(items.values()))
    if progress and state != previous:
        progress(state)
    return done, state


def _field(name: str) -> str:
    return f"metadata.name={name}"


def crd_established(kube: Kube, name: str, timeout: float = 60) -> str:
    from kubernetes import client

    api = client.ApiextensionsV1Api(kube.api)

    def pred(items):
        conds = {c["type"]: c["status"] for i in items for c in (i.get("status") or {}).get("conditions") or []}
        return conds.get("Established") == "True", f"CRD {name}: Established={conds.get('Established', 'Unknown')}"

    return watch_until(api.list_custom_resource_definition, pred, timeout, f"CRD {name} to be Established",
                       field_selector=_field(name))


def rollout(kube: Kube, kind: str, namespace: str, name: str, timeout: float = 300,
            progress: Progress | None = None) -> str:
    """Wait for a DaemonSet or Deployment to be fully rolled out and ready."""
    if kind == "DaemonSet":
        func = kube.apps.list_namespaced_daemon_set

        def pred(items):
            if not items:
                return False, f"DaemonSet {namespace}/{name}: not found"
            s, meta = items[0].get("status") or {}, items[0]["metadata"]
            want = s.get("desiredNumberScheduled", 0)
            ready, updated = s.get("numberReady", 0), s.get("updatedNumberScheduled", 0)
            fresh = s.get("observedGeneration", 0) >= meta.get("generation", 1)
            return (fresh and want > 0 and ready == want and updated == want,
                    f"DaemonSet {namespace}/{name}: {ready}/{want} ready, {updated} updated")
    elif kind == "Deployment":
        func = kube.apps.list_namespaced_deployment

        def pred(items):
            if not items:
                return False, f"Deployment {namespace}/{name}: not found"
            spec, s, meta = items[0]["spec"], items[0].get("status") or {}, items[0]["metadata"]
            want = spec.get("replicas", 1)
            ready, updated = s.get("readyReplicas", 0), s.get("updatedReplicas", 0)
            fresh = s.get("observedGeneration", 0) >= meta.get("generation", 1)
            return (fresh and ready == want and updated == want and s.get("replicas", 0) == want,
                    f"Deployment {namespace}/{name}: {ready}/{want} ready, {updated} updated")
    else:
        raise KubeError(f"no rollout wait for kind {kind}")
    return watch_until(func, pred, timeout, f"{kind} {namespace}/{name} to roll out", progress,
                       namespace=namespace, field_selector=_field(name))


def node_ready(node: dict) -> tuple[bool, str]:
    cond = next((c for c in (node.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
    return cond.get("status") == "True", cond.get("message", "")


def nodes_state(items: list[dict], expected: int | None = None) -> tuple[bool, str]:
    """(all ``expected`` nodes registered and Ready, a description naming the nodes that are not)."""
    ready = [i["metadata"]["name"] for i in items if node_ready(i)[0]]
    want = expected if expected is not None else len(items)
    late = sorted(i["metadata"]["name"] for i in items if not node_ready(i)[0])
    text = f"nodes Ready: {len(ready)}/{want}"
    if late:  # a timeout names the nodes at fault
        text += f"; not Ready: {', '.join(late[:5])}" + (f" (+{len(late) - 5} more)" if len(late) > 5 else "")
    elif len(items) < want:
        text += f"; {want - len(items)} node(s) not registered"
    return want > 0 and len(ready) >= want and len(items) >= want, text


def nodes_ready(kube: Kube, expected: int | None = None, timeout: float = 180,
                progress: Progress | None = None) -> str:
    return watch_until(kube.core.list_node, lambda items: nodes_state(items, expected), timeout,
                       "all nodes to be Ready", progress)


def pod_state(pod: dict) -> str:
    """``name on node (reason)`` of a pod that is not ready: a waiting container's reason, else its phase."""
    status = pod.get("status") or {}
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason") for c in status.get("containerStatuses") or ()]
    reason = next((w for w in waiting if w), None) or status.get("phase") or "Pending"
    node = (pod.get("spec") or {}).get("nodeName") or "no node yet"
    return f"{pod['metadata']['name']} on {node} ({reason})"


def pod_ready(pod: dict) -> bool:
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
    return (pod.get("status") or {}).get("phase") == "Running" and conds.get("Ready") == "True"


def pods_state(items: list[dict], what: str, minimum: int = 1) -> tuple[bool, str]:
    """(at least ``minimum`` live pods, all Running and Ready; a description naming the pods that are not)."""
    live = [i for i in items if not i["metadata"].get("deletionTimestamp")]
    n_ready = sum(pod_ready(p) for p in live)
    text = f"pods {what}: {n_ready}/{len(live)} Running+Ready"
    late = sorted(pod_state(p) for p in live if not pod_ready(p))
    if late:  # a timeout names the pods at fault, their nodes and why
        text += f"; not ready: {', '.join(late[:4])}" + (f" (+{len(late) - 4} more)" if len(late) > 4 else "")
    return len(live) >= minimum and n_ready == len(live), text


def pods_running(kube: Kube, namespace: str, label_selector: str, minimum: int = 1,
                 timeout: float = 180, progress: Progress | None = None) -> str:
    """Wait until at least ``minimum`` pods match and every matching pod is Running and Ready."""
    return watch_until(kube.core.list_namespaced_pod,
                       lambda items: pods_state(items, f"{namespace}/{label_selector}", minimum), timeout,
                       f"pods {label_selector} in {namespace} to be Running", progress,
                       namespace=namespace, label_selector=label_selector)


#: Kubernetes' namespace controller starts removing a deleted namespace only this long after the
#: request, however empty the namespace is (``namespaceDeletionGracePeriod``,
#: pkg/controller/namespace/namespace_controller.go; not configurable). Test workloads' clean-ups
#: wait for their pods, not for this; whoever needs the namespace again waits with
#: :func:`namespaces_gone`.
NAMESPACE_DELETION_GRACE_S = 5


def namespaces_gone(kube: Kube, names: list[str] | tuple[str, ...], timeout: float) -> list[str]:
    """Wait until none of the namespaces ``names`` exists; the ones still there after ``timeout``
    (empty: all gone). Polled every 0.3 s, unlike the watches above: it waits for a handful of
    test namespaces, at most a few seconds."""
    deadline = time.monotonic() + timeout
    left = list(names)
    while left:
        left = [name for name in left if kube.get("v1", "Namespace", name) is not None]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return left
