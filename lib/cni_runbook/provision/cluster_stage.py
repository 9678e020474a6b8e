"""Stage 01: a Kubernetes cluster without a CNI, from one of three provisioners, verified.

* ``lab`` - the embedded lab instance (``CNI_RUNBOOK_LAB_INDEX``) is brought up: bare hosts, then
  Kubernetes (what Kubespray does with ``kube_network_plugin: none``); its kubeconfig path is
  handed on.
* ``kubespray`` - the YAML inventory and ``group_vars/all/cni-runbook.yml`` are rendered from the
  params and validated before Ansible starts (a mirror of Kubespray's validate_inventory, the
  controller side and known traps: any error stops here, before a host is touched); then
  ``cluster.yml`` of ``kubespray.dir`` runs through ansible-runner in a fresh private data dir in
  the run folder (events redacted), and ``artifacts/admin.conf`` is fetched.
* ``existing`` - ``provisioner.kubeconfig`` is used as it is.

Then :func:`cni_runbook.provision.verify.verify_cluster`: API reachable, every inventory node
registered, NotReady because no CNI is initialised, CoreDNS Pending.

The kubeconfig's *path* goes to the run state (``ctx.put("kubeconfig", path)``); its contents
are never printed, and it never lies inside the run folder (see :mod:`.hosts`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cni_runbook.kubespray import (
    ClusterVars,
    Finding,
    InventoryFiles,
    KubesprayRun,
    detect_kubespray_version,
    findings_frame,
    inventory_yaml,
    render_group_vars,
    render_inventory,
    run_kubespray,
    trap_warnings,
    validate_controller,
    validate_inventory,
    write_inventory_dir,
)
from cni_runbook.kubespray.validate import ERROR
from cni_runbook.kubespray.vars import GROUP_VARS_FILE, group_vars_yaml
from cni_runbook.params import secrets

from .hosts import HostsError, StageHosts, ansible_envvars, private_dir, stage_hosts
from .verify import CHECKS, SKIPPED, Check, Verification, verify_cluster

Say = Callable[[str], None]
VERIFY_BUDGET_S = 180  # api_timeout + settle_timeout of the verification, kept out of Ansible's time


def cluster_vars(params: Any) -> ClusterVars:
    ks = params.kubespray
    return ClusterVars(kube_network_plugin=ks.network_plugin, kube_service_addresses=str(ks.kube_service_addresses),
                       kube_pods_subnet=str(ks.kube_pods_subnet), kube_network_node_prefix=ks.kube_network_node_prefix,
                       kube_proxy_mode=ks.kube_proxy_mode, kube_proxy_remove=ks.kube_proxy_remove,
                       kubeconfig_localhost=True)


def kubespray_extras(params: Any) -> dict[str, Any]:
    """Operator extras, plus kube_version written the way Kubespray v2.31 wants it (no 'v')."""
    extras = dict(params.kubespray.extra_vars)
    if params.kubespray.kube_version:
        extras["kube_version"] = params.kubespray.kube_version.lstrip("v")
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


class ClusterStage:
    """Stage 01 for one :class:`~cni_runbook.state.StageContext` (see module docstring)."""

    def __init__(self, ctx: Any, lab_cfg: Any = None) -> None:
        self.ctx = ctx
        self.kind = ctx.params.provisioner.kind
        self.error: str | None = None
        self.hosts: StageHosts | None = None
        try:
            self.hosts = stage_hosts(ctx.params, lab_cfg)
        except HostsError as exc:
            self.error = str(exc)
        self.group_vars: dict[str, Any] = {}
        self.findings: list[Finding] = []
        self.kubespray: KubesprayRun | None = None
        self.kubeconfig: Path | None = None
        self.verification: Verification | None = None

    # -- plan ----------------------------------------------------------------------------------
    @property
    def expected_nodes(self) -> list[str]:
        return self.hosts.names if self.hosts else []

    def plan(self) -> list[dict[str, str]]:
        """Render (kubespray: inventory, group_vars, findings) into the artifacts; write plan.yaml."""
        params = self.ctx.params
        actions: list[dict[str, str]] = []
        if self.error:
            actions.append({"step": "stop", "target": "params", "detail": self.error})
        elif self.kind == "lab":
            cfg = self.hosts.lab
            actions += [
                {"step": "hosts", "target": self.hosts.source, "detail": "bare hosts: namespaces + sshd (if down)"},
                {"step": "cluster", "target": cfg.api_server,
                 "detail": "control plane, kubelets, kube-proxy, CoreDNS; no CNI (a no-op when already up)"},
                {"step": "state", "target": "kubeconfig", "detail": str(cfg.admin_kubeconfig)},
            ]
        elif self.kind == "kubespray":
            actions += self._plan_kubespray()
        else:
            actions.append({"step": "state", "target": "kubeconfig",
                            "detail": f"{params.provisioner.kubeconfig}"
                                      + (f" (context {params.provisioner.context})" if params.provisioner.context else "")})
        if not self.error:
            expected = ", ".join(self.expected_nodes) or "every registered node"
            actions.append({"step": "verify", "target": expected,
                            "detail": "API reachable, nodes registered with a podCIDR, NotReady (cni plugin not "
                                      "initialized), CoreDNS Pending"})
        self.ctx.record_plan(actions)
        return actions

    def _plan_kubespray(self) -> list[dict[str, str]]:
        params, ks = self.ctx.params, self.ctx.params.kubespray
        hosts = self.hosts.hosts
        try:
            self.group_vars = render_group_vars(cluster_vars(params), kubespray_extras(params))
        except ValueError as exc:
            self.error = str(exc)
            return [{"step": "stop", "target": "kubespray.extra_vars", "detail": self.error}]
        self.ctx.write_artifact("kubespray/inventory.yml", render_inventory(hosts))  # data: .yml artifacts are YAML-dumped
        self.ctx.write_artifact(f"kubespray/{GROUP_VARS_FILE}", self.group_vars)
        self.findings = validate_kubespray(hosts, self.group_vars, params)
        self.ctx.write_artifact("kubespray/findings.csv", findings_frame(self.findings))
        groups = sorted({g for h in hosts for g in h.groups})
        gv = self.group_vars
        errors = sum(f.severity == ERROR for f in self.findings)
        return [
            {"step": "render", "target": "inventory.yml", "detail": f"{len(hosts)} hosts in {', '.join(groups)} "
                                                                    f"(+ k8s_cluster)"},
            {"step": "render", "target": str(GROUP_VARS_FILE),
             "detail": f"kube_network_plugin={gv['kube_network_plugin']}, services {gv['kube_service_addresses']}, "
                       f"pods {gv['kube_pods_subnet']}/{gv['kube_network_node_prefix']}, "
                       f"kube_proxy_mode={gv['kube_proxy_mode']}, kube_proxy_remove={gv['kube_proxy_remove']}"},
            {"step": "validate", "target": "inventory, variables, controller, traps",
             "detail": f"{errors} error(s), {len(self.findings) - errors} warning(s)"
                       + ("; errors stop the stage before Ansible starts" if errors else "")},
            {"step": "run", "target": f"{ks.dir}/cluster.yml",
             "detail": f"Kubespray {detect_kubespray_version(ks.dir) or ks.version} via ansible-runner"
                       f"{' with --become' if self.become else ''}; fetch artifacts/admin.conf"},
        ]

    @property
    def become(self) -> bool:
        """Kubespray runs with --become unless Ansible logs in as root (no sudo needed, or present)."""
        return self.ctx.params.cluster.ssh.user != "root"

    @property
    def inventory_text(self) -> str:
        return inventory_yaml(render_inventory(self.hosts.hosts)) if self.hosts and self.hosts.hosts else ""

    @property
    def group_vars_text(self) -> str:
        return group_vars_yaml(self.group_vars) if self.group_vars else ""

    def findings_frame(self) -> pd.DataFrame:
        return findings_frame(self.findings)

    @property
    def validation_errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    # -- provision ------------------------------------------------------------------------------
    def provision(self, progress: Any = None, say: Say = print) -> Path | None:
        """Bring the cluster up (or take it as given); hand its kubeconfig path to later stages."""
        if self.ctx.plan or self.error:
            return None
        if self.kind == "lab":
            self.kubeconfig = self._provision_lab(say)
        elif self.kind == "kubespray":
            self.kubeconfig = self._provision_kubespray(progress, say)
        else:
            self.kubeconfig = self._provision_existing()
        if self.kubeconfig is not None:
            self.ctx.put("kubeconfig", str(self.kubeconfig))
            if self.ctx.params.provisioner.context and self.kind == "existing":
                self.ctx.put("kube_context", self.ctx.params.provisioner.context)
            say(f"kubeconfig handed to later stages: {self.kubeconfig}")
        return self.kubeconfig

    def _provision_lab(self, say: Say) -> Path | None:
        from cni_runbook.lab import cluster
        from cni_runbook.lab.sysutil import LabError

        cfg = self.hosts.lab
        try:
            say(cluster.up(cfg, progress=say, timeout=180))
        except (LabError, TimeoutError, OSError) as exc:
            self.error = f"lab instance {cfg.index} did not come up: {exc}"
            return None
        return Path(cfg.admin_kubeconfig)

    def _provision_existing(self) -> Path | None:
        ref = self.ctx.params.provisioner.kubeconfig
        path = Path(secrets.reference_path(ref) or "").expanduser()
        if not path.is_file():
            self.error = f"provisioner.kubeconfig {path} does not exist"
            return None
        return path

    def _provision_kubespray(self, progress: Any, say: Say) -> Path | None:
        params = self.ctx.params
        if self.validation_errors:
            self.error = (f"{len(self.validation_errors)} validation error(s) before Kubespray starts; no host was "
                          f"touched: " + "; ".join(f"{f.key}: {f.message}" for f in self.validation_errors[:5]))
            return None
        work = private_dir(self.ctx.run_dir)
        inv_dir = work / "kubespray-inventory"
        if inv_dir.exists():  # an earlier attempt of this run: start from what the params say now
            shutil.rmtree(inv_dir)
        files: InventoryFiles = write_inventory_dir(inv_dir, self.hosts.hosts, cluster_vars(params),
                                                    kubespray_extras(params))
        budget = params.run.timeouts.for_stage(self.ctx.stage.id)
        timeout = max(120, budget - VERIFY_BUDGET_S - 30)
        say(f"cluster.yml of {params.kubespray.dir} on {len(self.hosts.hosts)} hosts, timeout {timeout}s")
        become_file = self._become_vars(work) if self.become else None
        try:
            self.kubespray = run_kubespray(
                params.kubespray.dir, files.inventory, self.ctx.run_dir, become=self.become,
                extravars_files=[become_file] if become_file else [], envvars=ansible_envvars(),
                timeout=timeout, progress=progress, redact=self.ctx.redactor.text, state_dir=work)
        finally:
            if become_file:
                become_file.unlink(missing_ok=True)
        result = self.kubespray.ansible
        self.ctx.write_artifact("kubespray/ansible.yaml", {
            "playbook": "cluster.yml", "kubespray_dir": str(params.kubespray.dir), "status": result.status,
            "rc": result.rc, "duration_s": round(result.duration_s, 1),
            "artifacts": str(result.private_data_dir.relative_to(self.ctx.run_dir))})
        self.ctx.write_artifact("kubespray/recap.csv", result.recap().reset_index())
        self.ctx.write_artifact("kubespray/failed_tasks.csv", result.failed_tasks())
        if not self.kubespray.ok:
            first = result.failures[0] if result.failures else None
            self.error = (f"cluster.yml {result.status} (rc={result.rc})"
                          + (f": {first.kind} {first.host}: {first.task}: {(first.message or '').splitlines()[0][:200]}"
                             if first else ""))
            return None
        return self.kubespray.admin_conf

    def _become_vars(self, work: Path) -> Path | None:
        """The become password in a 0600 vars file outside the run folder, removed after the run."""
        ref = self.ctx.params.cluster.ssh.become_password
        if not ref:
            return None
        password = secrets.resolve(ref).rstrip("\n")
        fd, name = tempfile.mkstemp(prefix="become-", suffix=".yml", dir=work)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(yaml.safe_dump({"ansible_become_password": password}))
        return Path(name)

    def recap(self) -> pd.DataFrame:
        return self.kubespray.ansible.recap() if self.kubespray else pd.DataFrame()

    def failed_tasks(self) -> pd.DataFrame:
        return self.kubespray.ansible.failed_tasks() if self.kubespray else pd.DataFrame()

    # -- verify ---------------------------------------------------------------------------------
    def verify(self, say: Say = print) -> Verification | None:
        if self.ctx.plan or self.kubeconfig is None:
            return None
        context = self.ctx.params.provisioner.context if self.kind == "existing" else None
        self.verification = verify_cluster(self.kubeconfig, self.expected_nodes, context=context,
                                           api_timeout=60, settle_timeout=VERIFY_BUDGET_S - 60, say=say)
        self.ctx.write_artifact("nodes.csv", self.verification.nodes)
        self.ctx.write_artifact("verification.csv", self.verification.frame())
        return self.verification

    # -- result ---------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        if self.ctx.plan:
            return "failed" if self.error else "planned"
        return "passed" if not self.error and self.verification is not None and self.verification.ok else "failed"

    def summary(self) -> str:
        if self.ctx.plan:
            if self.error:
                return self.error
            errors = len(self.validation_errors)
            note = f"; {errors} validation error(s) would stop the apply" if errors else ""
            return f"provisioner {self.kind} planned for {len(self.expected_nodes)} nodes; nothing was touched{note}"
        if self.error:
            return self.error
        if self.verification is None:
            return "the cluster was not verified"
        return f"provisioner {self.kind}: {self.verification.summary()}"

    def checks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.kind == "kubespray" and (self.findings or not self.ctx.plan):
            errors = self.validation_errors
            out.append({"name": "kubespray_validation", "status": "failed" if errors else "passed",
                        "message": "; ".join(str(f) for f in errors) or f"{len(self.findings)} warning(s)"})
            if self.kubespray is not None:
                out.append({"name": "kubespray_cluster_yml", "status": "passed" if self.kubespray.ok else "failed",
                            "message": self.kubespray.ansible.summary()})
        if self.ctx.plan:
            return out
        if self.verification is not None:
            out += [c.as_dict() for c in self.verification.checks]
        else:
            out.append(Check("provision", "failed", self.error or "not provisioned").as_dict())
            out += [Check(name, SKIPPED, "not verified: provisioning failed").as_dict() for name in CHECKS]
        return out

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"provisioner": self.kind, "expected_nodes": self.expected_nodes}
        if self.hosts is not None:
            out["host_source"] = self.hosts.source
            if self.hosts.notes:
                out["notes"] = self.hosts.notes
        if self.kubeconfig is not None:
            out["kubeconfig"] = str(self.kubeconfig)  # a path; the content stays in that file
        if self.kubespray is not None:
            out["kubespray"] = {"status": self.kubespray.ansible.status, "rc": self.kubespray.ansible.rc,
                                "artifacts": str(self.kubespray.ansible.private_data_dir.relative_to(self.ctx.run_dir))}
        if self.verification is not None:
            out["server"] = self.verification.server
            out["version"] = self.verification.version
        return out
