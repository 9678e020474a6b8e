"""Deploy a truth-table layout on a real cluster and read it back for the engine.

Every pod of a :class:`~.layout.Layout` becomes an agnhost pod with one ``netexec`` container
per port number, serving TCP (HTTP) and, when the layout probes them, UDP and SCTP on that
port. Container ports carry the layout's names (``serve-80-tcp``), so named-port policies
resolve exactly as the engine expects. The first container is always called ``netexec``: the
probe engine execs its probes there.

Pods are spread round-robin over the schedulable nodes (``nodeSelector`` on the hostname
label), so a 3 x 3 layout on three nodes tests same-node and cross-node pairs alike.

The objects are applied with :class:`~cni_runbook.kube.apply.Applier` and a record file:
:func:`remove` deletes exactly what was created (a namespace that existed before keeps
existing; only our pods leave it). The engine's view (:func:`observed_cluster`) is read back
from the API server: real namespace labels, pod labels, container ports and pod IPs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kube import Kube, KubeError
from ..kube.apply import Applied, Applier, rollback
from ..kube.leftovers import ROLE_ANNOTATION
from ..kube.wait import namespaces_gone, node_ready, watch_until
from .layout import Layout
from .model import Cluster, NetworkPolicy

Progress = Callable[[str], None]

NETEXEC_CONTAINER = "netexec"
ROLE = "policy-truth-table"  # the mark of the layout's namespaces and pods (kube/leftovers.py)
TEST_POLICY_ROLE = "policy-test-set"  # the mark of a set's policies that are removed after it


def marked_test_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """A test policy as applied: with the mark that lets the next run remove it if this one is stopped
    (an annotation: selectors never see it)."""
    meta = dict(policy.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), ROLE_ANNOTATION: TEST_POLICY_ROLE}
    return {**policy, "metadata": meta}
HOSTNAME_LABEL = "kubernetes.io/hostname"


def probe_image(params: Any, target: Any = None) -> str:
    """The agnhost image: the target's own (e.g. the lab's build), else ``validation.images.probe``."""
    default = params.validation.images.probe
    return target.image("probe", default) if target is not None else default


# --------------------------------------------------------------------------- rendering


def schedulable_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of Ready nodes without NoSchedule / NoExecute taints, sorted."""
    names = []
    for node in nodes:
        taints = (node.get("spec") or {}).get("taints") or ()
        if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints):
            continue
        if node_ready(node)[0]:
            names.append(node["metadata"]["name"])
    return sorted(names)


def _netexec_args(port: int, protocols: set[str]) -> list[str]:
    return [
        "netexec",
        f"--http-port={port}",
        f"--udp-port={port if 'UDP' in protocols else -1}",
        f"--sctp-port={port if 'SCTP' in protocols else -1}",
    ]


def pod_object(layout_pod: Any, image: str, node: str | None = None) -> dict[str, Any]:
    """The Pod for one layout pod (see the module docstring)."""
    by_port: dict[int, list[Any]] = {}
    for p in layout_pod.ports:
        by_port.setdefault(p.port, []).append(p)
    containers = []
    for number, (port, entries) in enumerate(sorted(by_port.items())):
        containers.append(
            {
                "name": NETEXEC_CONTAINER if number == 0 else f"{NETEXEC_CONTAINER}-{port}",
                "image": image,
                "args": _netexec_args(port, {e.protocol for e in entries}),
                "ports": [{"name": e.name, "containerPort": e.port, "protocol": e.protocol} for e in entries],
            }
        )
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 1, "containers": containers}
    if node:
        spec["nodeSelector"] = {HOSTNAME_LABEL: node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": layout_pod.name,
            "namespace": layout_pod.namespace,
            "labels": dict(layout_pod.labels),
            "annotations": {ROLE_ANNOTATION: ROLE},
        },
        "spec": spec,
    }


def workload_objects(layout: Layout, image: str, nodes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Namespaces (with the layout's labels only, so selectors see exactly those) and pods.

    Pods go round-robin over ``nodes`` in layout order within each namespace, shifted by one
    node per namespace: with 3 pods and 3 nodes every namespace spans every node."""
    objects: list[dict[str, Any]] = []
    for name, labels in layout.namespaces.items():
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels), "annotations": {ROLE_ANNOTATION: ROLE}},
            }
        )
    ns_index = {name: i for i, name in enumerate(layout.namespaces)}
    seen: dict[str, int] = {}
    for pod in layout.pods:
        slot = seen.get(pod.namespace, 0)
        seen[pod.namespace] = slot + 1
        node = nodes[(slot + ns_index[pod.namespace]) % len(nodes)] if nodes else None
        objects.append(pod_object(pod, image, node))
    return objects


def placement(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Which pod goes to which node, for display."""
    return [
        {"pod": f"{o['metadata']['namespace']}/{o['metadata']['name']}",
         "node": (o["spec"].get("nodeSelector") or {}).get(HOSTNAME_LABEL, "(scheduler)"),
         "containers": ", ".join(c["name"] for c in o["spec"]["containers"]),
         "ports": ", ".join(p["name"] for c in o["spec"]["containers"] for p in c["ports"])}
        for o in objects
        if o["kind"] == "Pod"
    ]


# --------------------------------------------------------------------------- cluster side


@dataclass
class Deployment:
    """A deployed layout: what was applied (and recorded) and the engine's view of it."""

    layout: Layout
    record: Path
    applied: list[Applied]
    cluster: Cluster
    nodes: dict[str, str] = field(default_factory=dict)  # pod key -> node name
    existing_policies: tuple[dict[str, Any], ...] = ()
    seconds: float = 0.0

    @property
    def created_namespaces(self) -> list[str]:
        return [a.name for a in self.applied if a.kind == "Namespace" and a.action == "created"]


def _pods_ready(keys: set[str], where: str = "") -> Callable[[list[dict]], tuple[bool, str]]:
    def predicate(items: list[dict]) -> tuple[bool, str]:
        ready, problems = 0, []
        for pod in items:
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            if key not in keys:
                continue
            status = pod.get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or ()}
            if status.get("phase") == "Running" and conditions.get("Ready") == "True" and status.get("podIP"):
                ready += 1
            else:
                waiting = [
                    (cs.get("state") or {}).get("waiting", {}).get("reason")
                    for cs in status.get("containerStatuses") or ()
                ]
                reason = next((w for w in waiting if w), status.get("phase", "Pending"))
                problems.append(f"{key}: {reason}")
        text = f"layout pods{where} Running+Ready: {ready}/{len(keys)}"
        return ready == len(keys), text + (f" (waiting: {', '.join(sorted(problems)[:4])})" if problems else "")

    return predicate


def deploy(
    kube: Kube,
    layout: Layout,
    image: str,
    record: Path,
    *,
    timeout: float = 180,
    progress: Progress | None = None,
) -> Deployment:
    """Apply the layout's namespaces and pods, wait until every pod serves, read it all back."""
    say = progress or (lambda _m: None)
    started = time.monotonic()
    nodes = schedulable_nodes(kube.api.sanitize_for_serialization(n) for n in kube.core.list_node().items)
    objects = workload_objects(layout, image, nodes)
    terminating = [n.metadata.name for n in kube.core.list_namespace().items
                   if n.metadata.name in layout.namespaces and n.metadata.deletion_timestamp]
    if terminating:
        say(f"namespace(s) {', '.join(terminating)} still terminating from an earlier layout; waiting")
        left = namespaces_gone(kube, terminating, timeout)
        if left:
            raise KubeError(f"namespace(s) {', '.join(left)} still terminating after {timeout:.0f}s; the layout "
                            f"cannot be deployed into them (kubectl get namespace {left[0]} -o yaml)")
    existing = {n.metadata.name for n in kube.core.list_namespace().items}
    # A namespace that exists already keeps its own labels: apply only the pods into it.
    objects = [o for o in objects if not (o["kind"] == "Namespace" and o["metadata"]["name"] in existing)]
    keys = {f"{p.namespace}/{p.name}" for p in layout.pods}
    try:
        applied = Applier(kube, progress=say).apply(objects, record=record)
        for namespace in layout.namespaces:
            watch_until(
                kube.core.list_namespaced_pod,
                _pods_ready({k for k in keys if k.startswith(f"{namespace}/")}, f" in {namespace}"),
                timeout,
                f"the layout pods in {namespace} to serve",
                say,
                namespace=namespace,
            )
    except BaseException as exc:  # an interrupt (SIGTERM/SIGINT in the kernel) too: nothing is left behind
        say(f"layout not deployed ({'interrupted' if isinstance(exc, KeyboardInterrupt) else 'pods did not become ready'}): "
            "removing what was created")
        rollback(kube, record, progress=say)
        raise
    cluster, where = observed_cluster(kube, layout)
    policies = existing_policies(kube, layout.namespaces)
    return Deployment(layout, record, applied, cluster, where, tuple(policies), time.monotonic() - started)


def observed_cluster(kube: Kube, layout: Layout) -> tuple[Cluster, dict[str, str]]:
    """The engine's model of the deployed layout (real labels and IPs), in layout order, and
    the node of every pod."""
    sanitize = kube.api.sanitize_for_serialization
    namespaces = [sanitize(kube.core.read_namespace(name)) for name in layout.namespaces]
    pods, nodes = [], {}
    for layout_pod in layout.pods:
        obj = sanitize(kube.core.read_namespaced_pod(layout_pod.name, layout_pod.namespace))
        pods.append(obj)
        nodes[layout_pod.key] = (obj.get("spec") or {}).get("nodeName", "")
    return Cluster.from_objects(namespaces, pods), nodes


def existing_policies(kube: Kube, namespaces: Iterable[str]) -> list[dict[str, Any]]:
    """NetworkPolicies already in the layout's namespaces (they shape every expectation)."""
    api = kube.resource("networking.k8s.io/v1", "NetworkPolicy")
    found = []
    for namespace in namespaces:
        for item in kube.dynamic.get(api, namespace=namespace).items:
            obj = item.to_dict()
            NetworkPolicy.from_dict(obj)  # fail early on anything the engine cannot model
            found.append(obj)
    return found


def remove(kube: Kube, deployment: Deployment, timeout: float = 180, progress: Progress | None = None) -> list[Applied]:
    """Delete what :func:`deploy` created (pods without grace, then the namespaces it created);
    wait until the pods are gone and the namespaces terminating (Kubernetes removes them
    :data:`~cni_runbook.kube.wait.NAMESPACE_DELETION_GRACE_S` later; :func:`deploy` waits for that
    when it needs a namespace again)."""
    return rollback(kube, deployment.record, timeout=timeout, progress=progress, namespaces_gone=False, pod_grace_s=0)
