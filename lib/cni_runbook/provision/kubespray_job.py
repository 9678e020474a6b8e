"""One Kubespray job for stage 01 and stage 02's ``kubespray_custom_cni`` route alike.

From the params and the inventory hosts it renders the inventory and
``group_vars/all/cni-runbook.yml`` (managed keys, ``kube_version`` without its leading ``v`` as
Kubespray v2.31 wants it, the operator's ``kubespray.extra_vars``), validates them (a mirror of
Kubespray's validate_inventory, the controller, known traps), writes the working inventory into
the run's private 0700 folder (Kubespray writes ``credentials/`` and ``artifacts/admin.conf``
next to it: never into the run folder), and runs a playbook through ansible-runner with the
project's Ansible environment, ``--become`` unless Ansible logs in as root, and the become
password (when ``cluster.ssh.become_password`` is set) in a 0600 vars file that is removed
after the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cni_runbook.kubespray import (
    ClusterVars,
    Finding,
    Host,
    InventoryFiles,
    KubesprayRun,
    detect_kubespray_version,
    render_group_vars,
    render_inventory,
    run_kubespray,
    trap_warnings,
    validate_controller,
    validate_inventory,
    write_inventory_dir,
)
from cni_runbook.kubespray.validate import ERROR
from cni_runbook.kubespray.vars import GROUP_VARS_FILE
from cni_runbook.params import secrets

from .hosts import ansible_envvars, private_dir

Say = Callable[[str], None]
INVENTORY_DIR = "kubespray-inventory"


def cluster_vars(params: Any, network_plugin: str | None = None) -> ClusterVars:
    ks = params.kubespray
    return ClusterVars(kube_network_plugin=network_plugin or ks.network_plugin,
                       kube_service_addresses=str(ks.kube_service_addresses),
                       kube_pods_subnet=str(ks.kube_pods_subnet), kube_network_node_prefix=ks.kube_network_node_prefix,
                       kube_proxy_mode=ks.kube_proxy_mode, kube_proxy_remove=ks.kube_proxy_remove,
                       kubeconfig_localhost=True)


def kube_version(value: str | None) -> str | None:
    """``kube_version`` the way Kubespray v2.31 wants it: no leading ``v``."""
    return value.lstrip("v") if value else value


def kubespray_extras(params: Any) -> dict[str, Any]:
    """Operator extras, plus kube_version written the way Kubespray v2.31 wants it (no 'v')."""
    extras = dict(params.kubespray.extra_vars)
    if "kube_version" in extras:
        extras["kube_version"] = kube_version(str(extras["kube_version"]))
    if params.kubespray.kube_version:
        extras["kube_version"] = kube_version(params.kubespray.kube_version)
    return extras


def validate_kubespray(hosts: list[Any], group_vars: dict[str, Any], params: Any) -> list[Finding]:
    """Inventory + variables + controller + traps, errors first; keys name the params paths."""
    ks = params.kubespray
    where = dict(hosts_file="params", vars_file=str(GROUP_VARS_FILE))
    findings = validate_inventory(hosts, group_vars, hosts_key="cluster.nodes", **where)
    findings += validate_controller(ks.dir)
    version = detect_kubespray_version(ks.dir) or ks.version
    findings += trap_warnings(hosts, group_vars, kubespray_version=version, hosts_key="cluster.nodes", **where)
    return sorted(findings, key=lambda f: f.severity != ERROR)


class KubesprayJob:
    """Render, validate and run Kubespray for one stage (see module docstring)."""

    def __init__(self, params: Any, hosts: Sequence[Host], run_dir: Path | str, redact: Any = None,
                 network_plugin: str | None = None, extra_vars: Mapping[str, Any] | None = None) -> None:
        self.params = params
        self.hosts = list(hosts)
        self.run_dir = Path(run_dir)
        self.redact = redact
        self.vars = cluster_vars(params, network_plugin)
        self.extras = {**kubespray_extras(params), **dict(extra_vars or {})}
        self.group_vars = render_group_vars(self.vars, self.extras)  # ManagedKeyOverride: a ValueError

    # -- render / validate ---------------------------------------------------------------------
    @property
    def inventory(self) -> dict[str, Any]:
        return render_inventory(self.hosts)

    @property
    def become(self) -> bool:
        """Kubespray runs with --become unless Ansible logs in as root (no sudo needed, or present)."""
        return self.params.cluster.ssh.user != "root"

    @property
    def version(self) -> str:
        return detect_kubespray_version(self.params.kubespray.dir) or self.params.kubespray.version

    @property
    def cluster_skip_tags(self) -> str | None:
        """Stage 01's ``cluster.yml`` skips Kubespray's network step when the CNI comes later through
        ``custom_cni`` (stage 02 runs that step with the rendered manifests)."""
        return "network" if self.vars.kube_network_plugin == "custom_cni" and not self.has_manifests else None

    @property
    def has_manifests(self) -> bool:
        return bool(self.group_vars.get("custom_cni_manifests") or self.group_vars.get("custom_cni_chart_release_name"))

    def validate(self) -> list[Finding]:
        """The findings; stage 01's custom_cni run (network step skipped) needs no manifests yet."""
        findings = validate_kubespray(self.hosts, self.group_vars, self.params)
        if self.cluster_skip_tags:
            findings = [f for f in findings if f.rule != "custom_cni"]
        return findings

    # -- the working inventory, in the private folder -----------------------------------------
    @property
    def work_dir(self) -> Path:
        return private_dir(self.run_dir)

    @property
    def inventory_dir(self) -> Path:
        """Where the working inventory will be (not created until :meth:`write_inventory`)."""
        return private_dir(self.run_dir, create=False) / INVENTORY_DIR

    def write_inventory(self, extra_files: Mapping[str, str] | None = None) -> InventoryFiles:
        """The working inventory in ``<private>/kubespray-inventory`` (an earlier attempt's is replaced)."""
        inv_dir = self.work_dir / INVENTORY_DIR
        if inv_dir.exists():  # an earlier attempt of this run: start from what the params say now
            shutil.rmtree(inv_dir)
        files = write_inventory_dir(inv_dir, self.hosts, self.vars, self.extras)
        for name, text in (extra_files or {}).items():
            path = inv_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return files

    # -- run -----------------------------------------------------------------------------------
    def run(self, inventory: Path, *, playbook: str = "cluster.yml", tags: str | None = None,
            skip_tags: str | None = None, extravars: Mapping[str, Any] | None = None, progress: Any = None, timeout: int | None = None,
            idle_timeout: int | None = None, fetch_kubeconfig: bool = True) -> KubesprayRun:
        """Run ``playbook`` with the project's Ansible environment, become and become password."""
        work = self.work_dir
        become_file = self._become_vars(work) if self.become else None
        try:
            return run_kubespray(
                self.params.kubespray.dir, inventory, self.run_dir, playbook=playbook, tags=tags, skip_tags=skip_tags,
                become=self.become, extravars_files=[become_file] if become_file else [], extravars=extravars,
                envvars=ansible_envvars(), timeout=timeout, idle_timeout=idle_timeout, progress=progress,
                redact=self.redact, state_dir=work, fetch_kubeconfig=fetch_kubeconfig)
        finally:
            if become_file:
                become_file.unlink(missing_ok=True)

    def _become_vars(self, work: Path) -> Path | None:
        """The become password in a 0600 vars file outside the run folder, removed after the run."""
        ref = self.params.cluster.ssh.become_password
        if not ref:
            return None
        password = secrets.resolve(ref).rstrip("\n")
        fd, name = tempfile.mkstemp(prefix="become-", suffix=".yml", dir=work)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(yaml.safe_dump({"ansible_become_password": password}))
        return Path(name)


__all__ = ["INVENTORY_DIR", "KubesprayJob", "cluster_vars", "kube_version", "kubespray_extras",
           "validate_kubespray"]
