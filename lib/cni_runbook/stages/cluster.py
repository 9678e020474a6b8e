"""Stage 01: a Kubernetes cluster without a CNI, from one of three provisioners, verified.

:class:`ClusterStage` on the stage base; it hands a :class:`~cni_runbook.target.Target` on.

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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from cni_runbook.checks import Check, Status
from cni_runbook.display import live_ansible
from cni_runbook.errors import OperatorError
from cni_runbook.kubespray import Finding as KubesprayFinding
from cni_runbook.kubespray import KubesprayRun, findings_frame, inventory_yaml
from cni_runbook.kubespray.validate import ERROR
from cni_runbook.kubespray.vars import GROUP_VARS_FILE, group_vars_yaml
from cni_runbook.params import secrets
from cni_runbook.provision.hosts import StageHosts, stage_hosts, target_hosts
from cni_runbook.provision.kubespray_job import KubesprayJob
from cni_runbook.provision.verify import CHECKS, Verification, verify_cluster
from cni_runbook.target import Target

from .base import Finding, Outcome, Plan, Stage, View

Say = Callable[[str], None]
VERIFY_BUDGET_S = 180  # api_timeout + settle_timeout of the verification, kept out of Ansible's time
KUBESPRAY_KEYS = ("network_plugin", "kube_service_addresses", "kube_pods_subnet", "kube_network_node_prefix",
                  "kube_proxy_mode", "kube_proxy_remove", "kube_version", "dir", "version")


def params_key(finding: KubesprayFinding) -> str:
    """The params key an operator wrote for a Kubespray finding's key (not the rendered group_vars)."""
    key = finding.key
    if key.startswith(("cluster.", "kubespray.", "provisioner.")):
        return key
    if key == "kubespray_dir":
        return "kubespray.dir"
    if key == "ansible-core":
        return "kubespray.dir"  # the checkout's requirements.txt decides the ansible-core wanted
    if key == "kube_network_plugin":
        return "kubespray.network_plugin"
    if key in KUBESPRAY_KEYS:
        return f"kubespray.{key}"
    return f"kubespray.extra_vars.{key}"


class ClusterStage(Stage):
    """Stage 01 (see module docstring). ``lab_cfg``: the lab instance, when not the default one."""

    static_plan = True  # `cni-runbook params` runs this plan

    def __init__(self, ctx: Any, lab_cfg: Any = None) -> None:
        super().__init__(ctx)
        self.lab_cfg = lab_cfg
        self.kind = ctx.params.provisioner.kind
        self.hosts: StageHosts | None = None
        self.job: KubesprayJob | None = None
        self.findings: list[KubesprayFinding] = []
        self.kubespray: KubesprayRun | None = None
        self.kubeconfig: Path | None = None
        self.verification: Verification | None = None
        self.error: str | None = None

    @property
    def expected_nodes(self) -> list[str]:
        return self.hosts.names if self.hosts else []

    # -- plan ----------------------------------------------------------------------------------
    def plan(self, ctx: Any) -> Plan:
        """Render (kubespray: inventory, group_vars, findings) into the artifacts."""
        params = ctx.params
        self.hosts = stage_hosts(params, self.lab_cfg)  # HostsError (a ValueError): a blocking finding
        plan = Plan()
        if self.kind == "lab":
            cfg = self.hosts.lab
            plan.actions += [
                {"step": "hosts", "target": self.hosts.source, "detail": "bare hosts: namespaces + sshd (if down)"},
                {"step": "cluster", "target": cfg.api_server,
                 "detail": "control plane, kubelets, kube-proxy, CoreDNS; no CNI (a no-op when already up)"},
                {"step": "state", "target": "kubeconfig", "detail": str(cfg.admin_kubeconfig)},
            ]
        elif self.kind == "kubespray":
            self._plan_kubespray(ctx, plan)
        else:
            plan.actions.append({"step": "state", "target": "kubeconfig",
                                 "detail": f"{params.provisioner.kubeconfig}"
                                 + (f" (context {params.provisioner.context})" if params.provisioner.context else "")})
        expected = ", ".join(self.expected_nodes) or "every registered node"
        plan.actions.append({"step": "verify", "target": expected,
                             "detail": "API reachable, nodes registered with a podCIDR, NotReady (cni plugin not "
                                       "initialized), CoreDNS Pending"})
        plan.views.insert(0, View(f"{ctx.stage.id}: {len(plan.actions)} planned actions", plan.actions,
                                  section="plan"))
        plan.views += [View("note", note, "text", "plan") for note in self.hosts.notes]
        plan.summary = (f"provisioner {self.kind} planned for {len(self.expected_nodes)} nodes; nothing was touched"
                        + (f"; {len(self.findings)} warning(s)" if self.findings else ""))
        return plan

    def _plan_kubespray(self, ctx: Any, plan: Plan) -> None:
        hosts = self.hosts.hosts
        try:
            self.job = KubesprayJob(ctx.params, hosts, ctx.run_dir, ctx.redactor.text)
        except ValueError as exc:  # a managed key set through extra_vars
            plan.findings.append(Finding("kubespray.extra_vars", str(exc)))
            plan.actions.append({"step": "stop", "target": "kubespray.extra_vars", "detail": str(exc)})
            return
        job = self.job
        ctx.write_artifact("kubespray/inventory.yml", job.inventory)  # data: .yml artifacts are YAML-dumped
        ctx.write_artifact(f"kubespray/{GROUP_VARS_FILE}", job.group_vars)
        self.findings = job.validate()
        ctx.write_artifact("kubespray/findings.csv", findings_frame(self.findings))
        plan.artifacts += ["kubespray/inventory.yml", f"kubespray/{GROUP_VARS_FILE}", "kubespray/findings.csv"]
        plan.findings += [Finding(params_key(f), f"{f.message} (rendered as {f.file}: {f.key} = {f.value!r})",
                                  expected=f.expected, severity=f.severity) for f in self.findings]
        groups = sorted({g for h in hosts for g in h.groups})
        gv = job.group_vars
        errors = sum(f.severity == ERROR for f in self.findings)
        plan.actions += [
            {"step": "render", "target": "inventory.yml", "detail": f"{len(hosts)} hosts in {', '.join(groups)} "
                                                                    f"(+ k8s_cluster)"},
            {"step": "render", "target": str(GROUP_VARS_FILE),
             "detail": f"kube_network_plugin={gv['kube_network_plugin']}, services {gv['kube_service_addresses']}, "
                       f"pods {gv['kube_pods_subnet']}/{gv['kube_network_node_prefix']}, "
                       f"kube_proxy_mode={gv['kube_proxy_mode']}, kube_proxy_remove={gv['kube_proxy_remove']}"},
            {"step": "validate", "target": "inventory, variables, controller, traps",
             "detail": f"{errors} error(s), {len(self.findings) - errors} warning(s)"
                       + ("; errors stop the stage before Ansible starts" if errors else "")},
            {"step": "run", "target": f"{ctx.params.kubespray.dir}/cluster.yml",
             "detail": f"Kubespray {job.version} via ansible-runner"
                       f"{' with --become' if job.become else ''}"
                       f"{' --skip-tags network (stage 02 applies the CNI through custom_cni)' if job.cluster_skip_tags else ''}"
                       f"; fetch artifacts/admin.conf"},
        ]
        plan.views += [
            View(f"inventory ({self.hosts.source})", inventory_yaml(job.inventory), "file", "rendered"),
            View(str(GROUP_VARS_FILE), group_vars_yaml(job.group_vars), "file", "rendered"),
            View("validation before Kubespray starts", findings_frame(self.findings), "findings", "rendered"),
        ]

    @property
    def become(self) -> bool:
        return self.job.become if self.job else self.ctx.params.cluster.ssh.user != "root"

    @property
    def validation_errors(self) -> list[KubesprayFinding]:
        return [f for f in self.findings if f.severity == ERROR]

    def planned(self, ctx: Any, plan: Plan) -> Outcome:
        checks = self._validation_checks()
        return Outcome(Status.PLANNED, plan.summary, checks, self.data(),
                       [View("provisioning", "plan mode: nothing provisioned", "text", "provision"),
                        View("verification", [], section="verify")])

    # -- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: Any, plan: Plan) -> Outcome:
        views = []
        try:
            self.provision(say=print)
        except OperatorError as exc:
            self.error = str(exc)
        if self.kubespray is not None:
            views.append(View("PLAY RECAP per host", self.recap().reset_index(), section="provision"))
            views.append(View("failed tasks", self.failed_tasks(), section="provision"))
        if self.kubeconfig is not None:
            self.verify()
            views.append(View(self.verification.summary(), self.verification.frame().rename(columns={"name": "check"}),
                              section="verify"))
            views.append(View(f"nodes ({self.verification.server})", self.verification.nodes, section="verify"))
        return self.outcome(views)

    def provision(self, progress: Any = None, say: Say = print) -> Path:
        """Bring the cluster up (or take it as given); hand its Target to later stages."""
        if self.kind == "lab":
            from cni_runbook.provision import lab

            params = self.ctx.params
            target = params.lifecycle.target  # stage 05's CNI after an upgrade or a replacement
            self.kubeconfig = lab.cluster_up(self.hosts.lab, say, cni_profile=params.cni.profile,
                                             also=(target.profile,) if target is not None else ())
            target = lab.target(self.hosts.lab)
        elif self.kind == "kubespray":
            self.kubeconfig = self._provision_kubespray(progress, say)
            target = Target(kubeconfig=str(self.kubeconfig), provisioner="kubespray",
                            hosts=target_hosts(self.hosts.hosts))
        else:
            self.kubeconfig = self._provision_existing()
            target = Target(kubeconfig=str(self.kubeconfig), context=self.ctx.params.provisioner.context,
                            provisioner="existing", hosts=target_hosts(self.hosts.hosts))
        self.ctx.put_target(target)
        say(f"kubeconfig handed to later stages: {self.kubeconfig}")
        return self.kubeconfig

    def _provision_existing(self) -> Path:
        ref = self.ctx.params.provisioner.kubeconfig
        path = Path(secrets.reference_path(ref) or "").expanduser()
        if not path.is_file():
            raise OperatorError(f"provisioner.kubeconfig {path} does not exist")
        return path

    def _provision_kubespray(self, progress: Any, say: Say) -> Path:
        params, job = self.ctx.params, self.job
        files = job.write_inventory()
        budget = params.run.timeouts.for_stage(self.ctx.stage.id)
        timeout = max(120, budget - VERIFY_BUDGET_S - 30)
        say(f"cluster.yml of {params.kubespray.dir} on {len(self.hosts.hosts)} hosts, timeout {timeout}s")
        if progress is None:
            with live_ansible("cluster.yml") as live:
                self.kubespray = job.run(files.inventory, skip_tags=job.cluster_skip_tags, progress=live.progress,
                                         timeout=timeout)
        else:
            self.kubespray = job.run(files.inventory, skip_tags=job.cluster_skip_tags, progress=progress,
                                     timeout=timeout)
        result = self.kubespray.ansible
        self.ctx.write_artifact("kubespray/ansible.yaml", {
            "playbook": "cluster.yml", "kubespray_dir": str(params.kubespray.dir), "status": result.status,
            "rc": result.rc, "duration_s": round(result.duration_s, 1),
            "artifacts": str(result.private_data_dir.relative_to(self.ctx.run_dir))})
        self.ctx.write_artifact("kubespray/recap.csv", result.recap().reset_index())
        self.ctx.write_artifact("kubespray/failed_tasks.csv", result.failed_tasks())
        if not self.kubespray.ok:
            first = result.failures[0] if result.failures else None
            raise OperatorError(f"cluster.yml {result.status} (rc={result.rc})"
                                + (f": {first.kind} {first.host}: {first.task}: "
                                   f"{(first.message or '').splitlines()[0][:200]}" if first else ""))
        return self.kubespray.admin_conf

    def recap(self) -> pd.DataFrame:
        return self.kubespray.ansible.recap() if self.kubespray else pd.DataFrame()

    def failed_tasks(self) -> pd.DataFrame:
        return self.kubespray.ansible.failed_tasks() if self.kubespray else pd.DataFrame()

    def verify(self, say: Say = print) -> Verification:
        context = self.ctx.params.provisioner.context if self.kind == "existing" else None
        self.verification = verify_cluster(self.kubeconfig, self.expected_nodes, context=context,
                                           api_timeout=60, settle_timeout=VERIFY_BUDGET_S - 60, say=say)
        self.ctx.write_artifact("nodes.csv", self.verification.nodes)
        self.ctx.write_artifact("verification.csv", self.verification.frame())
        return self.verification

    # -- outcome --------------------------------------------------------------------------------
    def _validation_checks(self) -> list[Check]:
        if self.kind != "kubespray" or (not self.findings and self.ctx.plan):
            return []
        errors = self.validation_errors
        return [Check("kubespray_validation", Status.FAILED if errors else Status.PASSED,
                      "; ".join(str(f) for f in errors) or f"{len(self.findings)} warning(s)")]

    def outcome(self, views: list[View] | None = None) -> Outcome:
        """The applied outcome from what provision and verify left (no cluster needed to compute it)."""
        checks = self._validation_checks()
        if self.kubespray is not None:
            checks.append(Check("kubespray_cluster_yml", Status.PASSED if self.kubespray.ok else Status.FAILED,
                                self.kubespray.ansible.summary()))
        if self.verification is not None:
            checks += self.verification.checks
        else:
            checks.append(Check("provision", Status.FAILED, self.error or "not provisioned"))
            checks += [Check(name, Status.SKIPPED, "not verified: provisioning failed") for name in CHECKS]
        ok = not self.error and self.verification is not None and self.verification.ok
        return Outcome(Status.PASSED if ok else Status.FAILED, self.summary(), checks, self.data(), views or [])

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.verification is None:
            return "the cluster was not verified"
        return f"provisioner {self.kind}: {self.verification.summary()}"

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
