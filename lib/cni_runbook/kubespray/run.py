"""Run a Kubespray playbook (cluster.yml by default) and collect the admin kubeconfig.

The playbook runs through :mod:`cni_runbook.ansible` with ``project_dir`` = the checkout (so its
ansible.cfg applies), ``inventory`` = the rendered inventory file (its folder holds the
group_vars, and Kubespray writes ``artifacts/admin.conf`` next to it), extra-vars files as
``-e @file``. The kubeconfig is then copied into the run's state dir with mode 0600; its
contents are never printed or logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni_runbook.ansible.runner import AnsibleResult, Progress, Redactor, run_playbook
from cni_runbook.kubespray.inventory import Host, write_inventory
from cni_runbook.kubespray.vars import ClusterVars, render_group_vars, write_group_vars

ADMIN_CONF = Path("artifacts") / "admin.conf"


@dataclass(frozen=True)
class InventoryFiles:
    inventory: Path
    group_vars: Path
    group_vars_data: Mapping[str, Any]

    @property
    def inventory_dir(self) -> Path:
        return self.inventory.parent


@dataclass
class KubesprayRun:
    ansible: AnsibleResult
    inventory: Path
    admin_conf: Path | None

    @property
    def ok(self) -> bool:
        return self.ansible.ok and self.admin_conf is not None


def write_inventory_dir(
    dest: Path | str,
    hosts: Sequence[Host | Mapping[str, Any]],
    cluster: ClusterVars | Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
    *,
    allow_override: Sequence[str] | bool = (),
) -> InventoryFiles:
    """Write ``<dest>/inventory.yml`` and ``<dest>/group_vars/all/cni-runbook.yml``."""
    dest = Path(dest)
    data = render_group_vars(cluster, extras, allow_override=allow_override)
    inventory = write_inventory(hosts, dest / "inventory.yml")
    return InventoryFiles(inventory, write_group_vars(data, dest), data)


def admin_conf_path(inventory: Path | str) -> Path:
    """Where Kubespray (kubeconfig_localhost: true) writes the admin kubeconfig."""
    return Path(inventory).resolve().parent / ADMIN_CONF


def fetch_admin_conf(inventory: Path | str, state_dir: Path | str, name: str = "admin.conf") -> Path:
    """Copy ``<inventory_dir>/artifacts/admin.conf`` to ``<state_dir>/<name>`` with mode 0600."""
    source = admin_conf_path(inventory)
    if not source.is_file():
        raise FileNotFoundError(
            f"{source} was not written: is kubeconfig_localhost true, and did the run reach the kubernetes/client role?"
        )
    target = Path(state_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file already existed with wider permissions
        os.write(fd, data)
    finally:
        os.close(fd)
    return target


def run_kubespray(
    kubespray_dir: Path | str,
    inventory: Path | str,
    run_dir: Path | str,
    *,
    playbook: str = "cluster.yml",
    extravars_files: Sequence[Path | str] = (),
    extravars: Mapping[str, Any] | None = None,
    become: bool = True,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    envvars: Mapping[str, str] | None = None,
    timeout: int | None = None,
    idle_timeout: int | None = None,
    cancel_callback: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    redact: Redactor | None = None,
    state_dir: Path | str | None = None,
    fetch_kubeconfig: bool = True,
) -> KubesprayRun:
    """Run ``playbook`` of the checkout against ``inventory`` in a fresh private data dir.

    ``become`` adds ``--become --become-user=root`` as Kubespray's docs do; ``skip_tags`` adds
    ``--skip-tags`` (stage 01 skips ``network`` when the CNI comes later through custom_cni). When the run
    succeeds and ``fetch_kubeconfig`` is set, admin.conf is copied into ``state_dir``
    (default: ``<run_dir>/state``) with mode 0600.
    """
    root = Path(kubespray_dir).resolve()
    inventory = Path(inventory).resolve()
    cmdline = ["--become", "--become-user=root"] if become else []
    if skip_tags:
        cmdline += ["--skip-tags", skip_tags]
    result = run_playbook(
        playbook,
        project_dir=root,
        run_dir=run_dir,
        inventory=inventory,
        extravars=extravars,
        extravars_files=list(extravars_files),
        envvars=envvars,
        cmdline=cmdline,
        limit=limit,
        tags=tags,
        timeout=timeout,
        idle_timeout=idle_timeout,
        cancel_callback=cancel_callback,
        progress=progress,
        redact=redact,
        name=f"kubespray-{Path(playbook).stem}",
    )
    admin_conf = None
    if result.ok and fetch_kubeconfig:
        admin_conf = fetch_admin_conf(inventory, Path(state_dir) if state_dir else Path(run_dir) / "state")
    return KubesprayRun(result, inventory, admin_conf)
