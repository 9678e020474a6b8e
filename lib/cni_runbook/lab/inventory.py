"""The lab's nodes as inventory hosts: what an operator would write for three real machines.

Each lab host runs its own sshd on port 22 of its address and accepts root with the lab's key
(``cfg.ssh_key``, a key PATH only). ``ansible_python_interpreter`` is pinned to the system
Python: root's login shell here puts pyenv shims first, and interpreter discovery would pick
one that does not work in a non-interactive session.
"""

from __future__ import annotations

from cni_runbook.kubespray.inventory import CONTROL_PLANE, ETCD, NODE, Host

from .config import LabConfig

PYTHON = "/usr/bin/python3"


def lab_roles(control_plane: bool) -> tuple[str, ...]:
    """Kubespray groups of a lab node: the control plane also holds etcd and, like Kubespray's
    sample inventory, runs pods (it is in kube_node too, so it is not tainted)."""
    return (CONTROL_PLANE, ETCD, NODE) if control_plane else (NODE,)


def lab_inventory(cfg: LabConfig | None = None) -> list[Host]:
    """One :class:`Host` per lab node of instance ``cfg`` (default: ``CNI_RUNBOOK_LAB_INDEX``)."""
    cfg = cfg or LabConfig()
    return [
        Host(
            name=node.name,
            ansible_host=str(node.ip),
            roles=lab_roles(node.control_plane),
            ip=str(node.ip),
            access_ip=str(node.ip),
            ansible_user="root",
            ansible_port=22,
            ansible_ssh_private_key_file=str(cfg.ssh_key),
            vars={"ansible_python_interpreter": PYTHON},
        )
        for node in cfg.nodes
    ]
