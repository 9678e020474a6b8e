"""The lab's fixed facts, in one place.

The Kubernetes version is pinned here and only here: v1.35.4, the version
Kubespray v2.31 deploys. It runs on this machine's cgroup v1 hierarchy with
``failCgroupV1: false`` in the kubelet configuration (1.35 refuses cgroup v1
otherwise), so no other version was needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

K8S_VERSION = "v1.35.4"
#: The etcd server the k8s.io/kubernetes v1.35.4 module graph pins (go.etcd.io/etcd/server/v3).
ETCD_VERSION = "v3.6.5"
REGISTRY_NAME = "registry.cnilab.local:5000"


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def cache_dir() -> Path:
    """Build cache shared by every lab (binaries, images, registry storage)."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "cni-runbook"


def lab_index() -> int:
    """Which lab instance this process addresses (``CNI_RUNBOOK_LAB_INDEX``, default 0).

    Instances use disjoint names and addresses (bridge ``cnilab<i>``, network
    10.99.<i>.0/24, state folder ``lab<i>``), so several labs can run side by side.
    """
    raw = os.environ.get("CNI_RUNBOOK_LAB_INDEX", "0")
    if not raw.isdigit() or not 0 <= int(raw) <= 9:
        raise ValueError(f"CNI_RUNBOOK_LAB_INDEX must be a digit 0-9, got {raw!r}")
    return int(raw)


def default_state_dir(index: int = 0) -> Path:
    """Where a running lab keeps its certificates, configs, logs and node folders."""
    override = os.environ.get("CNI_RUNBOOK_LAB_STATE")
    if override:
        return Path(override)
    return _xdg("XDG_STATE_HOME", ".local/state") / "cni-runbook" / ("lab" if index == 0 else f"lab{index}")


@dataclass(frozen=True)
class Node:
    name: str
    ip: IPv4Address
    control_plane: bool = False
    lab: str = "cnilab0"

    @property
    def netns(self) -> str:
        return f"{self.lab}-{self.name}"

    @property
    def host_veth(self) -> str:
        # Interface names are limited to 15 characters: "c0-lab-cp1".
        return f"c{self.lab.removeprefix('cnilab')}-{self.name}"[:15]


NODE_NAMES = (("lab-cp1", True), ("lab-w1", False), ("lab-w2", False))


@dataclass(frozen=True)
class LabConfig:
    """Addresses and names of one lab instance. Matches Kubespray's defaults where it can."""

    index: int = field(default_factory=lab_index)
    service_cidr: IPv4Network = IPv4Network("10.233.0.0/18")
    pod_cidr: IPv4Network = IPv4Network("10.233.64.0/18")
    node_prefix: int = 24
    cluster_dns: IPv4Address = IPv4Address("10.233.0.3")
    cluster_domain: str = "cluster.local"
    registry_port: int = 5000
    state_dir: Path = None  # type: ignore[assignment]  # set in __post_init__

    def __post_init__(self) -> None:
        if self.state_dir is None:
            object.__setattr__(self, "state_dir", default_state_dir(self.index))

    @property
    def name(self) -> str:
        return f"cnilab{self.index}"

    @property
    def bridge(self) -> str:
        return self.name

    @property
    def network(self) -> IPv4Network:
        return IPv4Network(f"10.99.{self.index}.0/24")

    @property
    def gateway(self) -> IPv4Address:
        return self.network.network_address + 1

    @property
    def nodes(self) -> tuple[Node, ...]:
        base = self.network.network_address
        return tuple(Node(n, base + 11 + i, cp, self.name) for i, (n, cp) in enumerate(NODE_NAMES))

    @property
    def cgroup_parent(self) -> str:
        return self.name

    @property
    def control_plane(self) -> Node:
        return next(n for n in self.nodes if n.control_plane)

    @property
    def api_server(self) -> str:
        return f"https://{self.control_plane.ip}:6443"

    @property
    def kubernetes_service_ip(self) -> IPv4Address:
        return self.service_cidr.network_address + 1

    @property
    def registry_addr(self) -> str:
        return f"{self.gateway}:{self.registry_port}"

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no lab node named {name!r}; nodes are {[n.name for n in self.nodes]}")

    # --- paths -----------------------------------------------------------------
    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def ns_dir(self) -> Path:
        return self.state_dir / "ns"

    def node_dir(self, node: Node) -> Path:
        return self.state_dir / "nodes" / node.name

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.conf"

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"


def build_dir() -> Path:
    return cache_dir() / "build" / f"k8s-{K8S_VERSION}" / "bin"
