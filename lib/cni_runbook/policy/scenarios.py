"""Built-in policy scenarios of stage 04, generated for a given cluster layout.

Each scenario is a list of plain ``networking.k8s.io/v1`` NetworkPolicy dicts (ready for
server-side apply) plus the (port, protocol) pairs worth probing. They are written against a
*target* namespace (default: the first namespace of the layout, ``x``) and a *peer* namespace
(default: the second, ``y``):

=============================  ==============================================================
default-deny-ingress           every pod in the target namespace rejects all ingress
default-deny-egress-allow-dns  target pods may only send DNS (UDP and TCP 53), anywhere
namespace-isolation            in every namespace: ingress only from the same namespace
allow-from-labelled-namespace  target pods accept ingress only from namespaces carrying the
                               peer namespace's label
ip-block                       target pods may send anywhere except the peer namespace's pod
                               IPs (0.0.0.0/0 with one ``except`` per peer pod IP)
named-port                     target pods accept ingress only on the named port of the
                               second probe port (``serve-81-tcp``): port 80 is blocked
=============================  ==============================================================
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import NAMESPACE_NAME_LABEL, Cluster, normalize_protocol


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    policies: tuple[Mapping[str, Any], ...]
    probes: tuple[tuple[int, str], ...]  # (port, protocol) pairs to probe


def network_policy(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy object dict, labelled as created by the runbook."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "cni-runbook"}},
        "spec": dict(spec),
    }


def _namespace_label(cluster: Cluster, namespace: str) -> tuple[str, str]:
    """A label identifying ``namespace``: an operator/layout label if it has one, else the
    automatic ``kubernetes.io/metadata.name``."""
    labels = cluster.namespaces[namespace].labels
    for key in sorted(labels):
        if key != NAMESPACE_NAME_LABEL:
            return key, labels[key]
    return NAMESPACE_NAME_LABEL, namespace


def _named_port(cluster: Cluster, namespace: str, port: int, protocol: str) -> str:
    names = set()
    for pod in cluster.pods:
        if pod.namespace == namespace:
            names |= {p.name for p in pod.ports if p.port == port and p.protocol == protocol and p.name}
    if len(names) != 1:
        raise ValueError(
            f"named-port scenario needs exactly one container port name for {protocol}/{port} "
            f"in namespace {namespace}, found {sorted(names) or 'none'}"
        )
    return names.pop()


def builtin_scenarios(
    cluster: Cluster,
    target: str | None = None,
    peer: str | None = None,
    ports: Sequence[int] = (80, 81),
    protocol: str = "TCP",
    dns_port: int = 53,
) -> list[Scenario]:
    """The six built-in scenarios for ``cluster`` (see the module docstring).

    ``ports`` are the probe ports (the named-port scenario allows only the second one).
    The ip-block scenario needs pod IPs in the cluster model.
    """
    protocol = normalize_protocol(protocol)
    namespaces = list(cluster.namespaces)
    if len(namespaces) < 2:
        raise ValueError("built-in scenarios need at least two namespaces")
    target = target or namespaces[0]
    peer = peer or next(n for n in namespaces if n != target)
    for ns in (target, peer):
        if ns not in cluster.namespaces:
            raise ValueError(f"unknown namespace {ns!r}")
    if len(ports) < 2:
        raise ValueError("built-in scenarios need two probe ports")
    probes = tuple((p, protocol) for p in ports)
    everyone: dict[str, Any] = {"namespaceSelector": {}}

    deny_ingress = network_policy("default-deny-ingress", target, {"podSelector": {}, "policyTypes": ["Ingress"]})

    deny_egress = network_policy(
        "default-deny-egress-allow-dns",
        target,
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": dns_port}, {"protocol": "TCP", "port": dns_port}]}],
        },
    )

    isolation = tuple(
        network_policy(
            "namespace-isolation",
            ns,
            {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]},
        )
        for ns in namespaces
    )

    key, value = _namespace_label(cluster, peer)
    from_labelled = network_policy(
        "allow-from-labelled-namespace",
        target,
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {key: value}}}]}],
        },
    )

    peer_ips = [ip for pod in cluster.pods if pod.namespace == peer for ip in pod.ips]
    if not peer_ips:
        raise ValueError(f"ip-block scenario: pods of namespace {peer} have no IPs in the model")
    blocks = []
    for version, everything in ((4, "0.0.0.0/0"), (6, "::/0")):
        excepts = [str(ipaddress.ip_network(ip)) for ip in peer_ips if ip.version == version]
        if excepts:
            blocks.append({"ipBlock": {"cidr": everything, "except": excepts}})
    ip_block = network_policy(
        "egress-except-peer-ips", target, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": blocks}]}
    )

    allowed_port = ports[1]
    named = network_policy(
        "allow-named-port",
        target,
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [everyone],
                    "ports": [{"protocol": protocol, "port": _named_port(cluster, target, allowed_port, protocol)}],
                }
            ],
        },
    )

    return [
        Scenario("default-deny-ingress", f"all ingress to pods in {target} is denied", (deny_ingress,), probes),
        Scenario(
            "default-deny-egress-allow-dns",
            f"pods in {target} may only send DNS (port {dns_port}); everything else they send is denied",
            (deny_egress,),
            probes,
        ),
        Scenario("namespace-isolation", "every namespace accepts ingress only from itself", isolation, probes),
        Scenario(
            "allow-from-labelled-namespace",
            f"pods in {target} accept ingress only from namespaces labelled {key}={value}",
            (from_labelled,),
            probes,
        ),
        Scenario(
            "ip-block",
            f"pods in {target} may send anywhere except the pod IPs of {peer} (ipBlock except)",
            (ip_block,),
            probes,
        ),
        Scenario(
            "named-port",
            f"pods in {target} accept ingress only on the named port for {protocol}/{allowed_port}",
            (named,),
            probes,
        ),
    ]
