"""Typed model of the cluster objects and Kubernetes NetworkPolicies the engine reasons about.

Everything here is built from plain Kubernetes object dicts (what ``kubectl get -o json`` or
the Python client's ``to_dict()`` / ``ApiClient().sanitize_for_serialization()`` return) and is
immutable, so compiled results can be cached safely.

Semantics follow the ``networking.k8s.io/v1`` NetworkPolicy documentation:

* A label selector is ``matchLabels`` AND ``matchExpressions``; an empty selector (``{}``)
  selects everything. Operators: ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``.
* A peer has ``podSelector`` and/or ``namespaceSelector``, or ``ipBlock`` alone.
* ``policyTypes`` defaults to ``["Ingress"]`` plus ``"Egress"`` when the policy has egress rules;
  the API server defaults an empty list (``policyTypes: []``) exactly like an absent one.
* ``ipBlock.except`` entries must be strict subsets of ``cidr`` (the API server rejects an
  ``except`` equal to or wider than its ``cidr``: "must be a strict subset of `cidr`").
* A policy needs ``metadata.namespace``; one read from a file without it is an error unless
  the caller states the namespace it is applied to (never a silent ``default``).
* A missing or empty ``from`` / ``to`` / ``ports`` list in a rule means "all".
* ``ports[].protocol`` defaults to TCP; ``port`` may be a number or a named container port;
  ``endPort`` turns a numeric port into an inclusive range.

Namespaces get the ``kubernetes.io/metadata.name`` label automatically, as the API server does
since Kubernetes 1.21.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _labels(mapping: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (mapping or {}).items()))


def normalize_protocol(protocol: str | None) -> str:
    """Upper-case a protocol name, defaulting to TCP; reject anything but TCP, UDP and SCTP."""
    value = (protocol or "TCP").upper()
    if value not in PROTOCOLS:
        raise ValueError(f"unsupported protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return value


#: An ICMP probe is (protocol "ICMP", port = type * 256 + code): ``ports`` entries of Kubernetes
#: rules never match it (they name TCP, UDP or SCTP), rules without ports do; Antrea's and
#: Calico's ICMP matches compare type and code. The echo request a ping sends is type 8 code 0.
ICMP = "ICMP"
PROBE_PROTOCOLS = (*PROTOCOLS, ICMP)


def icmp_port(icmp_type: int, icmp_code: int = 0) -> int:
    """The probe "port" of an ICMP message: ``type * 256 + code``."""
    if not (0 <= icmp_type <= 255 and 0 <= icmp_code <= 255):
        raise ValueError(f"ICMP type {icmp_type} / code {icmp_code}: expected 0-255 each")
    return icmp_type * 256 + icmp_code


ICMP_ECHO_REQUEST = icmp_port(8, 0)


def normalize_probe_protocol(protocol: str | None) -> str:
    """A probe's protocol: TCP (default), UDP, SCTP or ICMP."""
    value = (protocol or "TCP").upper()
    if value not in PROBE_PROTOCOLS:
        raise ValueError(f"unsupported probe protocol {protocol!r}; expected one of {', '.join(PROBE_PROTOCOLS)}")
    return value


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.operator not in SELECTOR_OPERATORS:
            raise ValueError(
                f"unknown matchExpressions operator {self.operator!r} for key {self.key!r}; "
                f"expected one of {', '.join(SELECTOR_OPERATORS)}"
            )
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} on key {self.key!r} needs a non-empty values list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} on key {self.key!r} must not have values")

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist

    def describe(self) -> str:
        if self.operator in ("In", "NotIn"):
            return f"{self.key} {self.operator.lower()} ({','.join(sorted(self.values))})"
        return self.key if self.operator == "Exists" else f"!{self.key}"


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches every object."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LabelSelector:
        data = data or {}
        expressions = tuple(
            Requirement(
                key=str(expr["key"]),
                operator=str(expr["operator"]),
                values=frozenset(str(v) for v in (expr.get("values") or ())),
            )
            for expr in (data.get("matchExpressions") or ())
        )
        return cls(match_labels=_labels(data.get("matchLabels")), match_expressions=expressions)

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def describe(self) -> str:
        """kubectl-style rendering, ``{}`` for the empty selector."""
        if self.is_empty:
            return "{}"
        parts = [f"{k}={v}" for k, v in self.match_labels] + [r.describe() for r in self.match_expressions]
        return ",".join(parts)


# --------------------------------------------------------------------------- cluster objects


@dataclass(frozen=True)
class ContainerPort:
    """A container port of a pod (``spec.containers[].ports[]``)."""

    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Namespace:
        meta = obj.get("metadata") or {}
        name = str(meta["name"])
        labels = dict(_labels(meta.get("labels")))
        labels.setdefault(NAMESPACE_NAME_LABEL, name)
        return cls(name=name, labels=labels)


@dataclass(frozen=True)
class Pod:
    """A pod as the policy engine sees it: identity, labels, IPs and container ports."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ips: tuple[IPAddress, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    service_account: str = "default"

    @property
    def key(self) -> str:
        """``namespace/name``, the row/column label used in truth tables."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Pod:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        raw_ips = [status.get("podIP")] + [entry.get("ip") for entry in status.get("podIPs") or ()]
        ips: list[IPAddress] = []
        for raw in raw_ips:
            if raw:
                ip = ipaddress.ip_address(raw)
                if ip not in ips:
                    ips.append(ip)
        ports = tuple(
            ContainerPort(
                port=int(p["containerPort"]),
                protocol=normalize_protocol(p.get("protocol")),
                name=p.get("name"),
            )
            for container in spec.get("containers") or ()
            for p in container.get("ports") or ()
        )
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta["name"]),
            labels=dict(_labels(meta.get("labels"))),
            ips=tuple(ips),
            ports=ports,
            service_account=str(spec.get("serviceAccountName") or "default"),
        )

    def named_port(self, name: str, protocol: str) -> int | None:
        """Resolve a named container port with the given protocol, or None."""
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


@dataclass(frozen=True)
class Cluster:
    """Namespaces and pods, in a stable order (the order of truth-table rows and columns)."""

    namespaces: Mapping[str, Namespace]
    pods: tuple[Pod, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for pod in self.pods:
            if pod.namespace not in self.namespaces:
                raise ValueError(f"pod {pod.key} is in unknown namespace {pod.namespace!r}")
            if pod.key in seen:
                raise ValueError(f"duplicate pod {pod.key}")
            seen.add(pod.key)

    @classmethod
    def from_objects(cls, namespaces: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> Cluster:
        """Build from Kubernetes Namespace and Pod object dicts."""
        ns = [Namespace.from_object(o) for o in namespaces]
        return cls(namespaces={n.name: n for n in ns}, pods=tuple(Pod.from_object(o) for o in pods))

    @property
    def pod_keys(self) -> list[str]:
        return [p.key for p in self.pods]

    @cached_property
    def index(self) -> dict[str, int]:
        """Position of each pod (by key) in :attr:`pods`."""
        return {p.key: i for i, p in enumerate(self.pods)}

    def pod(self, key: str) -> Pod:
        try:
            return self.pods[self.index[key]]
        except KeyError:
            raise KeyError(f"no pod {key!r} in the cluster") from None

    def pod_by_ip(self, ip: IPAddress) -> Pod | None:
        for pod in self.pods:
            if ip in pod.ips:
                return pod
        return None


# --------------------------------------------------------------------------- NetworkPolicy


@dataclass(frozen=True)
class IPBlock:
    """``ipBlock``: a CIDR minus ``except`` CIDRs.

    The engine matches ipBlocks against pod IPs exactly as listed in the pod status: for
    pod-to-pod traffic there is no NAT in between, so that is what the CNI sees. (The
    Kubernetes documentation leaves it to the implementation whether ipBlock applies to pod
    IPs; the upstream e2e suite expects it to, and so does this engine.)
    """

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IPBlock:
        cidr = ipaddress.ip_network(str(data["cidr"]), strict=False)
        excepts = tuple(ipaddress.ip_network(str(e), strict=False) for e in data.get("except") or ())
        for e in excepts:
            # API server validation (ValidateIPBlock): inside cidr and a longer prefix.
            if e.version != cidr.version or not e.subnet_of(cidr) or e.prefixlen <= cidr.prefixlen:
                raise ValueError(f"ipBlock except {e} must be a strict subset of cidr {cidr}")
        return cls(cidr=cidr, excepts=excepts)

    def contains(self, ip: IPAddress) -> bool:
        return ip in self.cidr and not any(ip in e for e in self.excepts)

    def describe(self) -> str:
        text = f"ipBlock {self.cidr}"
        return text + (f" except {', '.join(map(str, self.excepts))}" if self.excepts else "")


@dataclass(frozen=True)
class PortSpec:
    """One ``ports`` entry: protocol, a number or name (None = all ports), optional endPort."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PortSpec:
        protocol = normalize_protocol(data.get("protocol"))
        port: int | str | None = data.get("port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        end_port = data.get("endPort")
        if end_port is not None:
            if not isinstance(port, int):
                raise ValueError("endPort requires a numeric port")
            end_port = int(end_port)
            if end_port < port:
                raise ValueError(f"endPort {end_port} is smaller than port {port}")
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        return cls(protocol=protocol, port=port, end_port=end_port)

    @property
    def is_named(self) -> bool:
        return isinstance(self.port, str)

    def matches(self, port: int, protocol: str, destination: Pod | None) -> bool:
        """Does traffic to ``port``/``protocol`` on ``destination`` match this entry?

        Named ports are resolved against the destination pod's container ports (same name and
        protocol); they never match a non-pod destination.
        """
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if isinstance(self.port, str):
            return destination is not None and destination.named_port(self.port, protocol) == port
        if self.end_port is not None:
            return self.port <= port <= self.end_port
        return port == self.port

    def describe(self) -> str:
        if self.protocol == ICMP:
            if self.port is None:
                return "ICMP/any"
            kind = int(self.port) // 256
            return f"ICMP type {kind}" + ("" if self.end_port is not None else f" code {int(self.port) % 256}")
        if self.port is None:
            return f"{self.protocol}/any"
        if self.end_port is not None:
            return f"{self.protocol}/{self.port}-{self.end_port}"
        return f"{self.protocol}/{self.port}"


def ports_from_list(data: Sequence[Mapping[str, Any]] | None) -> tuple[PortSpec, ...]:
    return tuple(PortSpec.from_dict(p) for p in data or ())


@dataclass(frozen=True)
class Peer:
    """One ``from`` / ``to`` entry of a Kubernetes NetworkPolicy rule."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Peer:
        pod_sel = data.get("podSelector")
        ns_sel = data.get("namespaceSelector")
        block = data.get("ipBlock")
        if block is not None and (pod_sel is not None or ns_sel is not None):
            raise ValueError("a peer with ipBlock may not also set podSelector or namespaceSelector")
        if block is None and pod_sel is None and ns_sel is None:
            raise ValueError("a peer must set podSelector, namespaceSelector or ipBlock")
        return cls(
            pod_selector=None if pod_sel is None else LabelSelector.from_dict(pod_sel),
            namespace_selector=None if ns_sel is None else LabelSelector.from_dict(ns_sel),
            ip_block=None if block is None else IPBlock.from_dict(block),
        )

    def matches_pod(self, pod: Pod, policy_namespace: str, cluster: Cluster) -> bool:
        """Per the docs: podSelector alone = pods in the policy's namespace; namespaceSelector
        alone = all pods in matching namespaces; both = matching pods in matching namespaces;
        ipBlock = pods whose IP is inside the block."""
        if self.ip_block is not None:
            return any(self.ip_block.contains(ip) for ip in pod.ips)
        if self.namespace_selector is None:
            if pod.namespace != policy_namespace:
                return False
        elif not self.namespace_selector.matches(cluster.namespaces[pod.namespace].labels):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod.labels)

    def matches_ip(self, ip: IPAddress) -> bool:
        """A non-pod address is matched only by an ipBlock."""
        return self.ip_block is not None and self.ip_block.contains(ip)

    def describe(self, policy_namespace: str) -> str:
        if self.ip_block is not None:
            return self.ip_block.describe()
        parts = []
        if self.namespace_selector is not None:
            parts.append(f"namespaceSelector {self.namespace_selector.describe()}")
        else:
            parts.append(f"namespace {policy_namespace}")
        if self.pod_selector is not None:
            parts.append(f"podSelector {self.pod_selector.describe()}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule. ``peers`` / ``ports`` empty means all peers / all ports."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], peer_key: str) -> Rule:
        return cls(
            peers=tuple(Peer.from_dict(p) for p in data.get(peer_key) or ()),
            ports=ports_from_list(data.get("ports")),
        )

    def port_matches(self, port: int, protocol: str, destination: Pod | None) -> bool:
        return not self.ports or any(p.matches(port, protocol, destination) for p in self.ports)


@dataclass(frozen=True)
class NetworkPolicy:
    """A ``networking.k8s.io/v1`` NetworkPolicy."""

    name: str
    namespace: str
    pod_selector: LabelSelector = LabelSelector()
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    policy_types: frozenset[str] = frozenset({"Ingress"})

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], namespace: str | None = None) -> NetworkPolicy:
        """Parse a NetworkPolicy dict. ``namespace`` is the namespace the object is applied to
        when it has no ``metadata.namespace`` (as ``kubectl apply -n``); without either it is
        an error."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        egress = tuple(Rule.from_dict(r or {}, "to") for r in spec.get("egress") or ())
        types = spec.get("policyTypes")
        if not types:
            # Defaulting per the API reference: Ingress always, Egress if there are egress
            # rules. The API server treats an empty list like an absent field.
            types = ["Ingress"] + (["Egress"] if egress else [])
        for t in types:
            if t not in ("Ingress", "Egress"):
                raise ValueError(f"unknown policyType {t!r} in {meta.get('name')}")
        return cls(
            name=str(meta["name"]),
            namespace=object_namespace(obj, namespace, "NetworkPolicy"),
            pod_selector=LabelSelector.from_dict(spec.get("podSelector")),
            ingress=tuple(Rule.from_dict(r or {}, "from") for r in spec.get("ingress") or ()),
            egress=egress,
            policy_types=frozenset(types),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: Pod) -> bool:
        return pod.namespace == self.namespace and self.pod_selector.matches(pod.labels)

    def affects_ingress(self) -> bool:
        return "Ingress" in self.policy_types

    def affects_egress(self) -> bool:
        return "Egress" in self.policy_types


def object_namespace(obj: Mapping[str, Any], namespace: str | None, kind: str) -> str:
    """``metadata.namespace`` of a namespaced object, else the stated ``namespace``; neither
    is an error naming the object."""
    meta = obj.get("metadata") or {}
    value = meta.get("namespace") or namespace
    if not value:
        raise ValueError(
            f"{kind} {meta.get('name', '?')}: metadata.namespace is not set; set it in the file "
            "or state the namespace the policy is applied to"
        )
    return str(value)


def as_network_policy(policy: NetworkPolicy | Mapping[str, Any], namespace: str | None = None) -> NetworkPolicy:
    """Accept either a parsed :class:`NetworkPolicy` or a plain object dict."""
    return policy if isinstance(policy, NetworkPolicy) else NetworkPolicy.from_dict(policy, namespace)
