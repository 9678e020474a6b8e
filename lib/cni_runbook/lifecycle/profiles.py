"""What the lifecycle stage knows of each CNI: data, no logic beyond lookup.

For each CNI family: the image whose tag is the installed version, the workloads in rollout
order (Antrea: the controller before the agents, docs/versioning.md), whether it enforces
Kubernetes NetworkPolicy, and what it leaves on every node when it is removed (conflists in
/etc/cni/net.d, binaries it copied to /opt/cni/bin, interfaces, iptables chains and ipsets
(name prefixes), state files, routes to the other nodes' pod CIDRs).

The families: ``antrea``; ``kube-router`` (the lab CNI, profile ``lab``); ``flannel``; a
``generic`` CNI knows nothing of itself and takes its facts from the params
(``lifecycle.leftovers``, ``lifecycle.enforces_network_policy``). Shared standard CNI plugins
(bridge, host-local, loopback, portmap, bandwidth) are not a CNI's leftovers: Kubespray installs
them for every CNI and the next one needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

SHARED_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "bandwidth", "tuning", "firewall")


@dataclass(frozen=True)
class Leftovers:
    """What a CNI leaves on a node (see the module docstring)."""

    conflists: tuple[str, ...] = ()
    binaries: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()  # exact names; a trailing '*' is a prefix
    iptables_chains: tuple[str, ...] = ()  # chain name prefixes
    ipsets: tuple[str, ...] = ()  # set name prefixes
    files: tuple[str, ...] = ()  # state files/directories
    pod_cidr_routes: bool = True  # routes to the other nodes' pod CIDRs (via a tunnel or a node address)

    def as_rows(self) -> list[dict[str, str]]:
        rows = [{"what": "conflist", "name": n} for n in self.conflists]
        rows += [{"what": "binary", "name": n} for n in self.binaries]
        rows += [{"what": "interface", "name": n} for n in self.interfaces]
        rows += [{"what": "iptables chain", "name": n + "*"} for n in self.iptables_chains]
        rows += [{"what": "ipset", "name": n + "*"} for n in self.ipsets]
        rows += [{"what": "file", "name": n} for n in self.files]
        if self.pod_cidr_routes:
            rows.append({"what": "routes", "name": "to the other nodes' pod CIDRs"})
        return rows


@dataclass(frozen=True)
class CniFacts:
    """One CNI family's facts (see the module docstring)."""

    family: str
    version_images: tuple[str, ...]  # image names (last path element) whose tag is the CNI's version
    rollout_order: tuple[str, ...]  # workload names, first rolled out first
    enforces_network_policy: bool
    leftovers: Leftovers
    labels: dict[str, str] = field(default_factory=dict)  # labels its own pods carry
    source: str = ""


FACTS: dict[str, CniFacts] = {
    "antrea": CniFacts(
        "antrea", ("antrea-controller-ubuntu", "antrea-agent-ubuntu", "antrea-controller", "antrea-agent"), ("antrea-controller", "antrea-agent"), True,
        Leftovers(conflists=("/etc/cni/net.d/10-antrea.conflist",), binaries=("/opt/cni/bin/antrea",),
                  interfaces=("antrea-gw0", "antrea-tun0", "genev_sys_6081", "vxlan_sys_4789", "ovs-system", "br-int"),
                  iptables_chains=("ANTREA-",), ipsets=("ANTREA-",), files=("/var/run/antrea", "/var/run/openvswitch")),
        {"app": "antrea"}, "antrea-io/antrea build/yamls/antrea.yml; docs/versioning.md"),
    "kube-router": CniFacts(
        "kube-router", ("kube-router",), ("kube-router",), True,
        Leftovers(conflists=("/etc/cni/net.d/10-kuberouter.conflist",),
                  interfaces=("kube-bridge", "kube-dummy-if", "tun-*"),
                  iptables_chains=("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-"),
                  ipsets=("kube-router-", "KUBE-SRC-", "KUBE-DST-"), files=("/var/lib/kube-router",)),
        {"k8s-app": "kube-router"}, "cni_runbook/lab/manifests/kube-router.yaml (kube-router v2.1.0)"),
    "flannel": CniFacts(
        "flannel", ("flannel",), ("kube-flannel-ds",), False,
        Leftovers(conflists=("/etc/cni/net.d/10-flannel.conflist",), binaries=("/opt/cni/bin/flannel",),
                  interfaces=("flannel.1", "cni0"), iptables_chains=("FLANNEL-",),
                  files=("/run/flannel",)),
        {"app": "flannel"}, "flannel-io/flannel Documentation/kube-flannel.yml (v0.28)"),
    "generic": CniFacts("generic", (), (), False, Leftovers(pod_cidr_routes=False), {}, "lifecycle params"),
}

#: params profile -> CNI family (the lab profile ships kube-router).
PROFILE_FAMILY = {"antrea": "antrea", "lab": "kube-router", "flannel": "flannel", "generic": "generic"}


def family(profile: str) -> str:
    return PROFILE_FAMILY.get(profile, "generic")


def facts(profile: str, *, leftovers: Any = None, enforces_network_policy: bool | None = None) -> CniFacts:
    """The facts of ``profile``'s CNI; ``leftovers`` / ``enforces_network_policy`` from the params
    override (a generic CNI has only these)."""
    found = FACTS[family(profile)]
    if leftovers:
        get = leftovers.get if isinstance(leftovers, dict) else lambda k, d=None: getattr(leftovers, k, d)
        found = replace(found, leftovers=Leftovers(
            conflists=tuple(get("conflists", ()) or ()), binaries=tuple(get("binaries", ()) or ()),
            interfaces=tuple(get("interfaces", ()) or ()), iptables_chains=tuple(get("iptables_chains", ()) or ()),
            ipsets=tuple(get("ipsets", ()) or ()), files=tuple(get("files", ()) or ()),
            pod_cidr_routes=bool(get("pod_cidr_routes", True))))
    if enforces_network_policy is not None:
        found = replace(found, enforces_network_policy=bool(enforces_network_policy))
    return found


__all__ = ["FACTS", "PROFILE_FAMILY", "SHARED_PLUGINS", "CniFacts", "Leftovers", "facts", "family"]
