"""Stage 00: preflight every inventory host over SSH before anything is installed.

:class:`PreflightStage` on the stage base (:mod:`cni_runbook.stages.base`):

* ``plan`` - the hosts (from ``cluster.nodes`` or the lab instance), the preflight inventory and,
  per host, the checks of the chosen profile (``cluster.preflight.profile``, else ``cni.profile``)
  and the waivers; an unknown waiver or unusable hosts are a blocking finding; nothing touched;
* ``apply`` - the lab hosts are brought up when the provisioner is the lab (hosts only:
  preflight runs before anything is installed), then the fact-gathering playbook of
  :mod:`cni_runbook.preflight` runs through ansible-runner against every host; the evaluation
  is written to the artifacts (rows, matrix, heatmap). A failing check fails the stage unless
  waived by name; waived checks are recorded as ``skipped`` with the waiver, and listed in the
  result data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cni_runbook import display
from cni_runbook.checks import Check, Status
from cni_runbook.display import live_ansible
from cni_runbook.preflight import PROFILES, STATUS_COLORS, PreflightReport, PreflightRun, check_names, run_preflight
from cni_runbook.preflight.checks import FAIL, PASS, WAIVED, WARN
from cni_runbook.provision.hosts import StageHosts, ansible_envvars, stage_hosts

from .base import Outcome, Plan, Stage, View

Say = Callable[[str], None]
PREFLIGHT_TIMEOUT_S = 900


class PreflightSetupError(ValueError):
    """Params that stage 00 cannot run with (unknown waiver, no hosts...)."""

    key = "cluster.preflight.waivers"


@dataclass
class PreflightPlan:
    hosts: StageHosts
    profile: str
    waivers: list[str]
    actions: list[dict[str, str]]


def preflight_profile(params: Any) -> str:
    """``cluster.preflight.profile``, else ``cni.profile`` when preflight knows it, else ``generic``."""
    chosen = params.cluster.preflight.profile or params.cni.profile
    return chosen if chosen in PROFILES else "generic"


def applicable_checks(profile: str, groups: tuple[str, ...]) -> list[str]:
    """The checks ``profile`` runs on a host of ``groups`` (ports apply per group)."""
    spec = PROFILES[profile]
    skip = {p.name for p in spec.ports if p.groups and not set(p.groups) & set(groups)}
    return [c for c in check_names(profile) if c not in skip]


def plan_preflight(params: Any, lab_cfg: Any = None) -> PreflightPlan:
    hosts = stage_hosts(params, lab_cfg)
    profile = preflight_profile(params)
    waivers = list(params.cluster.preflight.waivers)
    unknown = sorted(set(waivers) - set(check_names(profile)))
    if unknown:
        raise PreflightSetupError(f"cluster.preflight.waivers: unknown check(s) {', '.join(unknown)} for profile "
                                  f"{profile}; waivable checks: {', '.join(check_names(profile))}")
    ssh_user = params.cluster.ssh.user
    actions: list[dict[str, str]] = []
    if hosts.lab is not None:
        actions.append({"step": "hosts", "target": hosts.source,
                        "detail": "bring up the lab's bare hosts (namespaces + sshd) if they are down"})
    for host in hosts.hosts:
        actions.append({"step": "reach", "target": host.name,
                        "detail": f"ssh {host.ansible_user or ssh_user}@{host.ansible_host}:{host.ansible_port or 22}, "
                                  f"gather facts (read-only playbook, no become)"})
        actions.append({"step": "check", "target": host.name,
                        "detail": f"profile {profile}: " + ", ".join(applicable_checks(profile, host.groups))})
    if waivers:
        actions.append({"step": "waive", "target": ", ".join(waivers),
                        "detail": "a failure of these checks is recorded as waived, not failed"})
    return PreflightPlan(hosts, profile, waivers, actions)


class PreflightStage(Stage):
    """Stage 00 (see module docstring). ``lab_cfg``: the lab instance, when not the default one."""

    static_plan = True  # `cni-runbook params` runs this plan

    def __init__(self, ctx: Any, lab_cfg: Any = None) -> None:
        super().__init__(ctx)
        self.lab_cfg = lab_cfg
        self.plan_data: PreflightPlan | None = None
        self.run_data: PreflightRun | None = None
        self.lab_phase: str | None = None

    # -- plan ----------------------------------------------------------------------------------
    def plan(self, ctx: Any) -> Plan:
        """The hosts, the preflight inventory (``inventory.yml``) and the checks per host."""
        p = self.plan_data = plan_preflight(ctx.params, self.lab_cfg)  # ValueError -> a blocking finding
        artifacts = []
        if p.hosts.hosts:
            ctx.write_artifact("inventory.yml", p.hosts.inventory())
            artifacts.append("inventory.yml")
        views = [View(f"{ctx.stage.id}: {len(p.actions)} planned actions", p.actions, section="plan")]
        views += [View("note", note, "text", "hosts") for note in p.hosts.notes]
        views.append(View(f"inventory hosts ({p.hosts.source})", p.hosts.table(), section="hosts"))
        return Plan(actions=p.actions, views=views, artifacts=artifacts,
                    summary=f"preflight planned ({p.profile}) for {len(p.hosts.hosts)} hosts from {p.hosts.source}; "
                            f"nothing was touched")

    def planned(self, ctx: Any, plan: Plan) -> Outcome:
        return Outcome(Status.PLANNED, plan.summary, data=self.data(), views=[
            View("node x check matrix", [], section="matrix"),
            View("failures, waivers and warnings", [], section="problems")])

    # -- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: Any, plan: Plan) -> Outcome:
        p = self.plan_data
        assert p is not None
        if not p.hosts.hosts:
            return Outcome(Status.SKIPPED, "no hosts to preflight: cluster.nodes is empty (an existing cluster's "
                                           "nodes are not checked)", data=self.data())
        with live_ansible("preflight") as live:
            self.gather(progress=live.progress)
        return self.outcome()

    def gather(self, progress: Any = None, say: Say = print, timeout: int | None = None) -> PreflightRun:
        """Bring the lab's bare hosts up (provisioner lab), gather facts on every host, evaluate."""
        p = self.plan_data
        assert p is not None
        if p.hosts.lab is not None:
            from cni_runbook.provision import lab

            self.lab_phase = lab.hosts_up(p.hosts.lab, self.ctx.params.provisioner.lab_running, say)
        budget = self.ctx.params.run.timeouts.for_stage(self.ctx.stage.id)
        timeout = timeout or max(60, min(PREFLIGHT_TIMEOUT_S, budget - 30))
        say(f"preflight ({p.profile}) on {len(p.hosts.hosts)} hosts from {p.hosts.source}, timeout {timeout}s")
        self.run_data = run_preflight(
            p.hosts.inventory(), self.ctx.run_dir, profile=p.profile, waivers=p.waivers,
            kube_proxy_mode=self.ctx.params.kubespray.kube_proxy_mode, cluster_running=self.lab_phase == "cluster",
            become=False,
            envvars=ansible_envvars(), timeout=timeout, progress=progress, redact=self.ctx.redactor.text)
        report = self.run_data.report
        self.ctx.write_artifact("preflight.csv", report.frame())
        self.ctx.write_artifact("matrix.csv", report.matrix().reset_index())
        self.ctx.write_artifact("ansible.yaml", {
            "playbook": "cni_runbook/preflight/playbook.yml", "status": self.run_data.ansible.status,
            "rc": self.run_data.ansible.rc, "duration_s": round(self.run_data.ansible.duration_s, 1),
            "artifacts": str(self.run_data.ansible.private_data_dir.relative_to(self.ctx.run_dir)),
        })
        return self.run_data

    @property
    def report(self) -> PreflightReport | None:
        return self.run_data.report if self.run_data else None

    def heatmap(self) -> Any:
        """The node x check heatmap (an embedded PNG; ``.figure`` the Figure), also saved as heatmap.png in the artifacts."""
        if self.report is None or self.report.matrix().empty:
            return None
        return display.status_heatmap(self.report.matrix(), STATUS_COLORS,
                                      title=f"preflight ({self.report.profile})",
                                      path=self.ctx.artifacts / "heatmap.png")

    def problems(self) -> pd.DataFrame:
        """Every row that is not a plain pass: failures, waived failures, warnings."""
        if self.report is None:
            return pd.DataFrame(columns=["node", "check", "status", "seen", "required", "waived_by"])
        frame = self.report.frame()
        order = {FAIL: 0, WAIVED: 1, WARN: 2}
        frame = frame[frame["status"] != PASS].copy()
        return frame.sort_values("status", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)

    # -- outcome -------------------------------------------------------------------------------
    def outcome(self) -> Outcome:
        """The outcome of a gathered preflight: status, summary, one check per node and check, views."""
        views = []
        if self.report is not None:
            views.append(View(self.report.summary(), display.status_matrix(self.report.matrix(), STATUS_COLORS,
                                                                           caption=self.report.summary()),
                              "object", "matrix"))
            views.append(View("heatmap", self.heatmap(), "object", "matrix"))
            views.append(View("failures, waivers and warnings", self.problems(), section="problems"))
        ok = self.report is not None and self.report.ok
        return Outcome(Status.PASSED if ok else Status.FAILED, self.summary(), self.checks(), self.data(), views)

    def summary(self) -> str:
        if self.run_data is None:
            return "the preflight did not run"
        report, ansible = self.run_data.report, self.run_data.ansible
        text = report.summary()
        if not ansible.ok and not report.failures:
            text += f"; ansible run {ansible.status} (rc={ansible.rc})"
        if report.waived:
            text += "; waived: " + ", ".join(f"{r.node}/{r.check}" for r in report.waived)
        if report.failures:
            text += " (waive a check by name in cluster.preflight.waivers to go on)"
        return text

    def checks(self) -> list[Check]:
        """One JUnit case per node and check: pass/warn -> passed, fail -> failed, waived -> skipped."""
        if self.report is None:
            return []
        mapping = {PASS: Status.PASSED, WARN: Status.PASSED, FAIL: Status.FAILED, WAIVED: Status.SKIPPED}
        out = []
        for r in self.report.rows:
            message = f"{r.status}: seen {r.seen}; required {r.required}"
            if r.status == WAIVED:
                message += f" (waived by cluster.preflight.waivers: {r.waived_by})"
            out.append(Check(f"{r.node}/{r.check}", mapping[r.status], message, target=r.node))
        return out

    def data(self) -> dict[str, Any]:
        """The audit record's data: profile, waivers asked for and the rows they waived."""
        p = self.plan_data
        if p is None:
            return {}
        out: dict[str, Any] = {"profile": p.profile, "hosts": p.hosts.names, "host_source": p.hosts.source,
                               "waivers": p.waivers}
        if p.hosts.notes:
            out["notes"] = p.hosts.notes
        if self.report is not None:
            out["waived"] = [{"node": r.node, "check": r.check, "seen": r.seen, "required": r.required}
                             for r in self.report.waived]
            out["counts"] = {s: sum(r.status == s for r in self.report.rows) for s in (PASS, WARN, FAIL, WAIVED)}
        if self.run_data is not None:
            out["ansible"] = {"status": self.run_data.ansible.status, "rc": self.run_data.ansible.rc,
                              "artifacts": str(self.run_data.ansible.private_data_dir.relative_to(self.ctx.run_dir))}
        if self.lab_phase:
            out["lab_phase"] = self.lab_phase
        return out
