"""The cluster the stages after 01 work on, as plain values: a :class:`Target`.

Stage 01 (any provisioner: Kubespray, the embedded lab, an existing cluster) produces a Target
and hands it on through the run state (``state.json`` key ``target``). Stages 02-04 and the
modules they call (cni, kube, validation, policy, qos) take these values and never ask which
provisioner made them, so the lab stays one provisioner among others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_KEY = "target"


@dataclass(frozen=True)
class TargetHost:
    """One node, and how Ansible/SSH reaches it."""

    name: str
    address: str
    roles: tuple[str, ...] = ()
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_key_file: str | None = None  # a path; the key itself never enters the run state


@dataclass(frozen=True)
class Target:
    """Where the cluster is and how to reach it (JSON-serialisable, no secrets: paths only)."""

    kubeconfig: str | None = None
    context: str | None = None
    provisioner: str = ""
    hosts: tuple[TargetHost, ...] = ()
    image_registry: str | None = None  # a registry/mirror the nodes pull from, when there is one
    images: dict[str, str] = field(default_factory=dict)  # role -> image ref: probe, perf, iperf3

    @property
    def kubeconfig_path(self) -> Path | None:
        return Path(self.kubeconfig) if self.kubeconfig else None

    def image(self, role: str, default: str) -> str:
        """The image for ``role`` (``probe``, ``perf``): the target's own when it has one, else ``default``."""
        return self.images.get(role) or default

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hosts"] = [asdict(h) for h in self.hosts]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Target | None:
        if not data:
            return None
        hosts = tuple(TargetHost(**{**h, "roles": tuple(h.get("roles") or ())}) for h in data.get("hosts") or ())
        return cls(kubeconfig=data.get("kubeconfig"), context=data.get("context"),
                   provisioner=data.get("provisioner") or "", hosts=hosts,
                   image_registry=data.get("image_registry"), images=dict(data.get("images") or {}))
