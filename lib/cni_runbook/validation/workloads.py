"""The test workloads of stage 03: one labelled namespace, pods pinned to every node.

Per node ``N`` (pods are pinned with ``nodeName`` and tolerate every taint, so
control-plane nodes take part too):

* ``echo-N``: ``agnhost netexec`` (HTTP/TCP 8080, UDP 8081), behind its own
  Service ``echo-N`` (so "pod-to-service intra/inter node" is deterministic) and
  behind the shared Services ``echo`` (ClusterIP) and ``echo-np`` (NodePort);
* ``client-N``: the agnhost image idling, the source of pod-network probes
  (``NET_RAW`` for ping: path-MTU and RTT probes);
* ``host-N``: the same with ``hostNetwork: true``: host-to-pod probes and the
  host baseline.

With perf on, two nodes A and B also get iperf3 servers: ``iperf-a1``, ``iperf-a2``
and ``iperf-b`` on the pod network, ``iperf-host-a`` / ``iperf-host-b`` on the
host network (port :data:`HOST_IPERF_PORT`).

Everything carries :data:`LABELS`; :func:`cleanup` deletes the namespace.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kube import Kube
from ..kube.apply import Applier
from ..kube.client import ApiException, KubeError, retry
from ..kube.wait import NAMESPACE_DELETION_GRACE_S, WaitTimeout, namespaces_gone, pods_running

Progress = Callable[[str], None]

PART_OF = "cni-runbook-validation"
LABELS = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "cni-runbook"}
SELECTOR = f"app.kubernetes.io/part-of={PART_OF}"
ECHO_HTTP_PORT = 8080
ECHO_UDP_PORT = 8081
SERVICE_PORT = 80
SERVICE_UDP_PORT = 81
IPERF_PORT = 5201
HOST_IPERF_PORT = 15201  # host-network iperf3 servers: away from a default iperf3 on the node


@dataclass(frozen=True)
class Images:
    probe: str  # agnhost with a shell and busybox tools (the lab's build, or e2e-test-images/agnhost)
    perf: str  # iperf3 (the binary on PATH as `iperf3`)


def images_for(params: Any, target: Any = None) -> Images:
    """The images to use: ``validation.images``; the target's own (the lab's builds) unless changed from the defaults."""
    v = params.validation
    probe, perf = v.images.probe, v.images.perf
    if target is not None:
        defaults = type(v.images)()
        probe = target.image("probe", probe) if probe == defaults.probe else probe
        perf = target.image("perf", perf) if perf == defaults.perf else perf
    return Images(probe, perf)


def slug(node: str, max_len: int = 40) -> str:
    """A DNS-label-safe, unique short form of a node name for pod and Service names."""
    base = re.sub(r"[^a-z0-9-]", "-", node.lower()).strip("-") or "node"
    if len(base) <= max_len and base == node:
        return base
    digest = hashlib.sha256(node.encode()).hexdigest()[:6]
    return f"{base[:max_len - 7].rstrip('-')}-{digest}"


@dataclass
class Layout:
    """Names of everything the suite deploys (pure data: the plan shows it)."""

    namespace: str
    nodes: list[str]
    images: Images
    perf_nodes: tuple[str, str] | None = None  # (A, B) or (A, A) on a single node; None: no perf

    def echo(self, node: str) -> str:
        return f"echo-{slug(node)}"

    def client(self, node: str) -> str:
        return f"client-{slug(node)}"

    def host(self, node: str) -> str:
        return f"host-{slug(node)}"

    def ref(self, pod: str) -> str:
        return f"{self.namespace}/{pod}"

    def pods(self) -> list[tuple[str, str, str]]:
        """(pod, node, role) of every pod."""
        out = []
        for node in self.nodes:
            out += [(self.echo(node), node, "echo"), (self.client(node), node, "client"),
                    (self.host(node), node, "host-client")]
        if self.perf_nodes:
            a, b = self.perf_nodes
            out += [("iperf-a1", a, "iperf"), ("iperf-a2", a, "iperf"), ("iperf-b", b, "iperf"),
                    ("iperf-host-a", a, "iperf-host")]
            if b != a:
                out.append(("iperf-host-b", b, "iperf-host"))
        return out


def pick_perf_nodes(nodes: list[dict]) -> tuple[str, str] | None:
    """Two nodes for perf, workers (no control-plane role label) first; one node gives (A, A)."""
    if not nodes:
        return None

    def is_cp(n):
        labels = n["metadata"].get("labels") or {}
        return "node-role.kubernetes.io/control-plane" in labels or "node-role.kubernetes.io/master" in labels

    ordered = sorted(nodes, key=lambda n: (is_cp(n), n["metadata"]["name"]))
    names = [n["metadata"]["name"] for n in ordered]
    return (names[0], names[1]) if len(names) > 1 else (names[0], names[0])


def _meta(name: str, namespace: str | None, extra: Mapping[str, str] | None = None) -> dict:
    md: dict[str, Any] = {"name": name, "labels": {**LABELS, **(extra or {})}}
    if namespace:
        md["namespace"] = namespace
    return md


def _pod(layout: Layout, name: str, node: str, role: str, image: str, command: list[str] | None = None,
         args: list[str] | None = None, host_network: bool = False, net_raw: bool = False,
         ready_port: int | None = None) -> dict:
    container: dict[str, Any] = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    if net_raw:
        container["securityContext"] = {"capabilities": {"add": ["NET_RAW"]}}
    if ready_port:
        container["readinessProbe"] = {"tcpSocket": {"port": ready_port}, "periodSeconds": 1,
                                       "failureThreshold": 30}
    spec: dict[str, Any] = {
        "nodeName": node,
        "tolerations": [{"operator": "Exists"}],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
    }
    if host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(name, layout.namespace, {"cni-runbook.io/role": role, "cni-runbook.io/node": slug(node),
                                                       "cni-runbook.io/pod": name}),
            "spec": spec}


def _service(layout: Layout, name: str, selector: dict, node_port: bool = False) -> dict:
    spec: dict[str, Any] = {
        "selector": selector,
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": ECHO_HTTP_PORT, "protocol": "TCP"},
                  {"name": "udp", "port": SERVICE_UDP_PORT, "targetPort": ECHO_UDP_PORT, "protocol": "UDP"}],
    }
    if node_port:
        spec["type"] = "NodePort"
        spec["ports"] = spec["ports"][:1]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, layout.namespace), "spec": spec}


def render(layout: Layout) -> list[dict]:
    """Every object of the suite, in apply order (namespace first)."""
    img = layout.images
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(layout.namespace, None)}
    objects: list[dict] = [ns]
    idle = ["/agnhost", "pause"]
    netexec = ["/agnhost", "netexec", f"--http-port={ECHO_HTTP_PORT}", f"--udp-port={ECHO_UDP_PORT}"]
    for node in layout.nodes:
        objects.append(_pod(layout, layout.echo(node), node, "echo", img.probe, command=netexec,
                            ready_port=ECHO_HTTP_PORT))
        objects.append(_pod(layout, layout.client(node), node, "client", img.probe, command=idle, net_raw=True))
        objects.append(_pod(layout, layout.host(node), node, "host-client", img.probe, command=idle,
                            host_network=True, net_raw=True))
        objects.append(_service(layout, layout.echo(node), {"cni-runbook.io/pod": layout.echo(node)}))
    objects.append(_service(layout, "echo", {"cni-runbook.io/role": "echo"}))
    objects.append(_service(layout, "echo-np", {"cni-runbook.io/role": "echo"}, node_port=True))
    for pod, node, role in layout.pods():
        if role == "iperf":
            objects.append(_pod(layout, pod, node, role, img.perf, command=["iperf3", "-s", "-p", str(IPERF_PORT)],
                                ready_port=IPERF_PORT))
        elif role == "iperf-host":
            objects.append(_pod(layout, pod, node, role, img.perf,
                                command=["iperf3", "-s", "-p", str(HOST_IPERF_PORT)], host_network=True,
                                ready_port=HOST_IPERF_PORT))
    return objects


# --------------------------------------------------------------------------- cluster side


@dataclass
class Deployed:
    """What the suite needs to know about the running workloads."""

    layout: Layout
    pods: dict[str, dict] = field(default_factory=dict)  # name -> {node, ip, host_ip, role}
    services: dict[str, dict] = field(default_factory=dict)  # name -> {ip, node_port}
    seconds: float = 0.0

    def pod_ip(self, name: str) -> str:
        return self.pods[name]["ip"]


def deploy(kube: Kube, layout: Layout, record: Path | None = None, timeout: float = 180,
           progress: Progress | None = None) -> Deployed:
    """Apply the workloads, wait until every pod is Running and Ready, read back addresses."""
    say = progress or (lambda _m: None)
    started = time.monotonic()
    objects = render(layout)
    existing = kube.get("v1", "Namespace", layout.namespace)
    if existing and existing["metadata"].get("deletionTimestamp"):
        say(f"namespace {layout.namespace} is still terminating from an earlier run; waiting")
        namespaces_gone(kube, [layout.namespace], timeout)
    elif existing and (existing["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") == PART_OF:
        # an earlier run's clean-up failed (or keep_workloads): start from a clean namespace
        say(f"namespace {layout.namespace} is left from an earlier run; removing it first")
        note = cleanup(kube, layout.namespace, wait=True, timeout=timeout, progress=say)
        if not note.endswith(" deleted") and not note.endswith("already gone"):
            raise KubeError(f"leftovers of an earlier run: {note}")
    say(f"applying {len(objects)} objects into namespace {layout.namespace}")
    Applier(kube, progress=None).apply(objects, record=record, rollback_on_error=False)
    n_pods = len(layout.pods())
    try:
        pods_running(kube, layout.namespace, SELECTOR, minimum=n_pods, timeout=timeout, progress=say)
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc}\n{describe_unready(kube, layout.namespace)}") from None
    deployed = Deployed(layout)
    for pod in kube.core.list_namespaced_pod(layout.namespace, label_selector=SELECTOR).items:
        labels = pod.metadata.labels or {}
        deployed.pods[pod.metadata.name] = {"node": pod.spec.node_name, "ip": pod.status.pod_ip,
                                            "host_ip": pod.status.host_ip, "role": labels.get("cni-runbook.io/role")}
    for svc in kube.core.list_namespaced_service(layout.namespace, label_selector=SELECTOR).items:
        node_port = next((p.node_port for p in svc.spec.ports or [] if p.node_port), None)
        deployed.services[svc.metadata.name] = {"ip": svc.spec.cluster_ip, "node_port": node_port}
    deployed.seconds = time.monotonic() - started
    return deployed


def describe_unready(kube: Kube, namespace: str) -> str:
    """One line per pod that is not Ready, with the most telling reason."""
    lines = []
    for pod in kube.core.list_namespaced_pod(namespace, label_selector=SELECTOR).items:
        conds = {c.type: c.status for c in pod.status.conditions or []}
        if conds.get("Ready") == "True":
            continue
        why = pod.status.phase or "Pending"
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason:
                why = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
        lines.append(f"- {pod.metadata.name} on {pod.spec.node_name}: {why}")
    return "pods not ready:\n" + "\n".join(lines) if lines else "every pod is ready"


def _wait_pods_gone(kube: Kube, namespace: str, timeout: float) -> int:
    """Wait until the suite's pods in ``namespace`` are gone; how many are left (0: all gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = len(kube.core.list_namespaced_pod(namespace, label_selector=SELECTOR).items)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def cleanup(kube: Kube, namespace: str, wait: bool = True, timeout: float = 120,
            progress: Progress | None = None, namespace_gone: bool = True) -> str:
    """Delete the test namespace (and with it every workload); say what happened.

    ``wait``: until the suite's pods are gone and, with ``namespace_gone``, until the namespace
    itself is (which Kubernetes starts only :data:`NAMESPACE_DELETION_GRACE_S` after the request,
    however empty the namespace: stage 03 does not wait for that, and its next deploy waits for a
    namespace still terminating)."""
    say = progress or (lambda _m: None)
    deadline = time.monotonic() + min(timeout, 30)  # across a short API server outage
    try:
        ns = retry(lambda: kube.get("v1", "Namespace", namespace), deadline=deadline, what=f"reading namespace {namespace}")
        if ns is None:
            return f"namespace {namespace} is already gone"
        labels = ns["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/part-of") != PART_OF:
            return f"namespace {namespace} was not created by this suite (label missing); left alone"
        def delete() -> None:
            try:
                # The suite's pods first, without grace (their objects go at once; the kubelets
                # stop the containers in the background): the namespace controller then has no
                # pods to wait for, which took most of the clean-up's time.
                kube.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0,
                                                           label_selector=SELECTOR)
                kube.core.delete_namespace(namespace, grace_period_seconds=0, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:  # gone already (an earlier try got through)
                    raise

        retry(delete, deadline=deadline, what=f"deleting namespace {namespace}")
    except KubeError as exc:
        return (f"cleanup failed, left behind: namespace {namespace} and its workloads ({exc}); the next stage 03 "
                f"run removes them, or: kubectl delete namespace {namespace}")
    say(f"deleting namespace {namespace}")
    if not wait:
        return f"namespace {namespace} deletion started"
    if not namespace_gone:
        left = _wait_pods_gone(kube, namespace, timeout)
        if left:
            return f"namespace {namespace}: {left} pod(s) still there after {timeout:.0f}s (deletion continues in the cluster)"
        return (f"namespace {namespace}: its pods are deleted and the namespace's deletion requested (Kubernetes "
                f"removes it {NAMESPACE_DELETION_GRACE_S} s after the request)")
    if not namespaces_gone(kube, [namespace], timeout):
        return f"namespace {namespace} deleted"
    return f"namespace {namespace} still terminating after {timeout:.0f}s (deletion continues in the cluster)"


def list_nodes(kube: Kube) -> list[dict]:
    return [n.to_dict() for n in kube.core.list_node().items]


def node_addresses(node: Mapping[str, Any]) -> dict[str, str]:
    """{type: address} of a node (from a to_dict() of the client, snake_case keys)."""
    status = node.get("status") or {}
    return {a["type"]: a["address"] for a in status.get("addresses") or []}


def ready_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    names = []
    for n in nodes:
        conds = {c["type"]: c["status"] for c in (n.get("status") or {}).get("conditions") or []}
        if conds.get("Ready") == "True":
            names.append(n["metadata"]["name"])
    return sorted(names)


__all__ = ["Images", "Layout", "Deployed", "images_for", "render", "deploy", "cleanup",
           "pick_perf_nodes", "list_nodes", "node_addresses", "ready_nodes", "slug", "LABELS", "SELECTOR"]
