"""Test layouts: which namespaces and pods a truth table covers.

The default is the layout of the upstream netpol e2e suite and cyclonus: namespaces ``x``,
``y``, ``z``, each with pods ``a``, ``b``, ``c``. Pods carry the label ``pod=<name>``,
namespaces ``ns=<name>`` (plus ``kubernetes.io/metadata.name``, added by the API server),
and every pod serves each port on each protocol through a container port named
``serve-<port>-<protocol>`` (e.g. ``serve-80-tcp``), as upstream does.

An operator can describe their own layout as a dict (from the run parameters)::

    {"ports": [80, 81], "protocols": ["TCP", "UDP"],
     "namespaces": {
        "shop": {"labels": {"team": "web"},
                 "pods": {"front": {"labels": {"app": "front"}},
                          "db": {"labels": {"app": "db"},
                                 "ports": [{"name": "pg", "port": 5432}]}}},
        "ops": {"pods": ["probe"]}}}

Pods listed by name only get ``pod=<name>``; pods without ``ports`` get the layout-wide
serve ports. ``Layout.namespace_objects()`` / ``pod_objects()`` render plain Kubernetes
object dicts (the deployer in stage 04 applies them; :meth:`Layout.cluster` feeds the engine).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import Cluster, ContainerPort, normalize_protocol

DEFAULT_NAMESPACES = ("x", "y", "z")
DEFAULT_PODS = ("a", "b", "c")
DEFAULT_PORTS = (80, 81)
DEFAULT_PROTOCOLS = ("TCP", "UDP", "SCTP")
DEFAULT_POD_CIDR = "10.244.0.0/16"


def serve_port_name(port: int, protocol: str) -> str:
    """Upstream's container port name, e.g. ``serve-80-tcp``."""
    return f"serve-{port}-{protocol.lower()}"


def serve_ports(ports: Iterable[int], protocols: Iterable[str]) -> tuple[ContainerPort, ...]:
    return tuple(
        ContainerPort(port=p, protocol=normalize_protocol(proto), name=serve_port_name(p, normalize_protocol(proto)))
        for p in ports
        for proto in protocols
    )


@dataclass(frozen=True)
class LayoutPod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ports: tuple[ContainerPort, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Layout:
    """Namespaces (with labels) and pods (with labels and container ports)."""

    namespaces: Mapping[str, Mapping[str, str]]
    pods: tuple[LayoutPod, ...]
    pod_cidr: str = DEFAULT_POD_CIDR
    ports: tuple[int, ...] = field(default=DEFAULT_PORTS)
    protocols: tuple[str, ...] = field(default=DEFAULT_PROTOCOLS)

    def namespace_objects(self) -> list[dict[str, Any]]:
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
            for name, labels in self.namespaces.items()
        ]

    def pod_objects(self, with_ips: bool = True) -> list[dict[str, Any]]:
        """Pod dicts; with ``with_ips`` each gets a synthetic ``status.podIP`` from ``pod_cidr``
        (for offline expectations; on a real cluster use the pods the API server returns)."""
        hosts = ipaddress.ip_network(self.pod_cidr).hosts()
        objects = []
        for pod in self.pods:
            obj: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)},
                "spec": {
                    "containers": [
                        {
                            "name": f"cont-{p.port}-{p.protocol.lower()}",
                            "ports": [{"name": p.name, "containerPort": p.port, "protocol": p.protocol}],
                        }
                        for p in pod.ports
                    ]
                },
            }
            if with_ips:
                obj["status"] = {"podIP": str(next(hosts))}
            objects.append(obj)
        return objects

    def cluster(self) -> Cluster:
        """The engine's view of this layout, with synthetic pod IPs."""
        return Cluster.from_objects(self.namespace_objects(), self.pod_objects())


def default_layout(
    namespaces: Sequence[str] = DEFAULT_NAMESPACES,
    pods: Sequence[str] = DEFAULT_PODS,
    ports: Sequence[int] = DEFAULT_PORTS,
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    pod_cidr: str = DEFAULT_POD_CIDR,
) -> Layout:
    """The x/y/z by a/b/c truth-table layout (names configurable)."""
    container_ports = serve_ports(ports, protocols)
    return Layout(
        namespaces={ns: {"ns": ns} for ns in namespaces},
        pods=tuple(LayoutPod(ns, name, {"pod": name}, container_ports) for ns in namespaces for name in pods),
        pod_cidr=pod_cidr,
        ports=tuple(ports),
        protocols=tuple(normalize_protocol(p) for p in protocols),
    )


def layout_from_dict(data: Mapping[str, Any]) -> Layout:
    """An operator-defined layout (see the module docstring for the format)."""
    ports = tuple(int(p) for p in data.get("ports") or DEFAULT_PORTS)
    protocols = tuple(normalize_protocol(p) for p in data.get("protocols") or ("TCP",))
    default_ports = serve_ports(ports, protocols)
    raw_namespaces = data.get("namespaces")
    if not raw_namespaces:
        raise ValueError("layout needs at least one namespace under 'namespaces'")
    namespaces: dict[str, dict[str, str]] = {}
    pods: list[LayoutPod] = []
    for ns_name, ns_spec in raw_namespaces.items():
        ns_spec = ns_spec or {}
        namespaces[str(ns_name)] = {str(k): str(v) for k, v in (ns_spec.get("labels") or {}).items()}
        raw_pods = ns_spec.get("pods") or ()
        items = list(raw_pods.items()) if isinstance(raw_pods, Mapping) else [(name, {}) for name in raw_pods]
        if not items:
            raise ValueError(f"namespace {ns_name!r} in the layout has no pods")
        for pod_name, pod_spec in items:
            pod_spec = pod_spec or {}
            labels = {str(k): str(v) for k, v in (pod_spec.get("labels") or {"pod": pod_name}).items()}
            if "ports" in pod_spec:
                container_ports = tuple(
                    ContainerPort(
                        port=int(p["port"]),
                        protocol=normalize_protocol(p.get("protocol")),
                        name=p.get("name") or serve_port_name(int(p["port"]), normalize_protocol(p.get("protocol"))),
                    )
                    for p in pod_spec["ports"]
                )
            else:
                container_ports = default_ports
            pods.append(LayoutPod(str(ns_name), str(pod_name), labels, container_ports))
    return Layout(
        namespaces=namespaces,
        pods=tuple(pods),
        pod_cidr=str(data.get("pod_cidr") or DEFAULT_POD_CIDR),
        ports=ports,
        protocols=protocols,
    )
