"""Which hosts stages 00 and 01 work on, how Ansible reaches them, and where secrets may live.

* provisioner ``kubespray``/``existing``: ``cluster.nodes`` with ``cluster.ssh``;
* provisioner ``lab``: the running lab instance's own nodes (``CNI_RUNBOOK_LAB_INDEX`` picks the
  instance: 10.99.<i>.11-13, key ``<lab state>/ssh/id_ed25519``). ``cluster.nodes``, when given,
  must name the same nodes with the same roles; their addresses are taken from the instance.

Credentials never enter the run folder (the runner scrubs every file there after each stage, which
would also destroy a kubeconfig a later stage needs): the Kubespray working inventory (Kubespray
writes ``credentials/`` and ``artifacts/admin.conf`` next to it) and the fetched admin kubeconfig
live in :func:`private_dir`, mode 0700, outside it; the run folder gets copies of the inventory
and group_vars and the kubeconfig's *path* in ``state.json``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni_runbook.kubespray.inventory import Host, render_inventory
from cni_runbook.params import secrets
from cni_runbook.target import TargetHost

# Ansible's SSH settings for both stages. Kubespray's own ansible.cfg also disables host key
# checking and known_hosts (UserKnownHostsFile=/dev/null); these replace its ssh_args.
# ControlPersist is short so no SSH master outlives a run by more than a few seconds.
SSH_ARGS = ("-o ControlMaster=auto -o ControlPersist=15s -o UserKnownHostsFile=/dev/null "
            "-o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -o LogLevel=ERROR")


def ansible_envvars() -> dict[str, str]:
    return {"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_SSH_ARGS": SSH_ARGS, "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False"}


class HostsError(ValueError):
    """The params do not describe hosts this stage can work on."""


@dataclass
class StageHosts:
    """The inventory hosts of a stage and where they came from."""

    hosts: list[Host]
    source: str  # e.g. "cluster.nodes" or "lab instance 5 (cnilab5)"
    notes: list[str] = field(default_factory=list)
    lab: Any = None  # the LabConfig when the provisioner is the lab

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def inventory(self) -> dict[str, Any]:
        return render_inventory(self.hosts)

    def table(self) -> list[dict[str, Any]]:
        return [{"name": h.name, "roles": ", ".join(h.groups), "ansible_host": h.ansible_host,
                 "ip": h.ip or "", "access_ip": h.access_ip or "", "ssh": f"{h.ansible_user or 'root'}@"
                 f"{h.ansible_host}:{h.ansible_port or 22}", "key": h.ansible_ssh_private_key_file or "(agent/default)"}
                for h in self.hosts]


def key_path(ref: str | None) -> str | None:
    """The file path of a key reference (``file:PATH`` or a path), user-expanded."""
    if not ref:
        return None
    path = secrets.reference_path(ref)
    if path is None:
        raise HostsError(f"cluster.ssh.key_file {ref!r}: an SSH key is given as a file path, not an env reference")
    return str(Path(path).expanduser())


def hosts_from_params(params: Any) -> list[Host]:
    """``cluster.nodes`` + ``cluster.ssh`` as inventory hosts (key PATH only)."""
    ssh = params.cluster.ssh
    key = key_path(ssh.key_file)
    return [Host(name=n.name, ansible_host=n.ansible_host, roles=tuple(n.roles),
                 ip=str(n.ip) if n.ip else None, access_ip=str(n.access_ip) if n.access_ip else None,
                 ansible_user=ssh.user, ansible_port=ssh.port, ansible_ssh_private_key_file=key)
            for n in params.cluster.nodes]


def stage_hosts(params: Any, lab_cfg: Any = None) -> StageHosts:
    """The hosts stage 00 checks and stage 01 provisions or verifies (see module docstring)."""
    if params.provisioner.kind != "lab":
        hosts = hosts_from_params(params)
        return StageHosts(hosts, "cluster.nodes" if hosts else "cluster.nodes (empty)")
    from . import lab

    cfg = lab.config(lab_cfg)
    hosts = lab.inventory(cfg)
    source = f"lab instance {cfg.index} ({cfg.name}, {cfg.network})"
    notes: list[str] = []
    if params.cluster.nodes:
        lab = {h.name: h for h in hosts}
        given = {n.name: n for n in params.cluster.nodes}
        if set(given) != set(lab):
            raise HostsError(f"provisioner 'lab': cluster.nodes name {', '.join(sorted(given))} but the lab's nodes are "
                             f"{', '.join(sorted(lab))}; leave cluster.nodes empty or list the lab's nodes")
        for name, node in given.items():
            if set(node.roles) != set(lab[name].groups):
                raise HostsError(f"provisioner 'lab': cluster.nodes {name} has roles {', '.join(node.roles)}; "
                                 f"the lab's {name} is {', '.join(lab[name].groups)}")
        moved = [f"{n} {given[n].ansible_host} -> {lab[n].ansible_host}" for n in given
                 if given[n].ansible_host != lab[n].ansible_host]
        if moved:
            notes.append(f"the lab instance {cfg.index} has its own addresses (CNI_RUNBOOK_LAB_INDEX): " + ", ".join(moved))
        if params.cluster.ssh.key_file:
            notes.append("cluster.ssh.key_file is not used with provisioner 'lab': the lab's own key is")
    return StageHosts(hosts, source, notes, cfg)


def target_hosts(hosts: list[Host]) -> tuple[TargetHost, ...]:
    """Inventory hosts as the Target's hosts (address, roles and SSH access; key paths only)."""
    return tuple(TargetHost(h.name, h.ansible_host, tuple(h.groups), h.ansible_user, h.ansible_port,
                            h.ansible_ssh_private_key_file) for h in hosts)


def private_dir(run_dir: Path | str, create: bool = True) -> Path:
    """A 0700 folder outside the run folder for this run's credentials (see module docstring).

    ``$CNI_RUNBOOK_PRIVATE_HOME`` (default ``$XDG_STATE_HOME/cni-runbook/runs``) ``/<run folder
    name>-<hash of its path>``.
    """
    run_dir = Path(run_dir).resolve()
    state_home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    base = Path(os.environ.get("CNI_RUNBOOK_PRIVATE_HOME") or state_home / "cni-runbook" / "runs")
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]
    path = base / f"{run_dir.name}-{digest}"
    if not create:  # plan mode: where it will be, without making it
        return path
    path.mkdir(parents=True, exist_ok=True)
    for p in (path, base):
        if p.stat().st_uid == os.getuid():
            p.chmod(0o700)
    return path
