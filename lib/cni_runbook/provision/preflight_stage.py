"""Stage 00: preflight every inventory host over SSH before anything is installed.

:class:`PreflightStage` holds what the notebook shows between ``open_stage`` and ``ctx.result``:

* :meth:`~PreflightStage.plan` - the hosts (from ``cluster.nodes`` or the lab instance), the
  preflight inventory and, per host, the checks of the chosen profile (``cluster.preflight.profile``,
  else ``cni.profile``) and the waivers; all written to the artifacts, nothing touched;
* :meth:`~PreflightStage.run` - the lab hosts are brought up when the provisioner is the lab
  (hosts only: preflight runs before anything is installed), then the fact-gathering playbook of
  :mod:`cni_runbook.preflight` runs through ansible-runner against every host; the evaluation
  is written to the artifacts (rows, matrix, heatmap);
* :meth:`~PreflightStage.checks` / :meth:`~PreflightStage.summary` / :attr:`~PreflightStage.status`
  - what ``ctx.result`` records. A failing check fails the stage unless waived by name; waived
  checks are recorded as ``skipped`` with the waiver, and listed in the result data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cni_runbook.preflight import PROFILES, STATUS_COLORS, PreflightReport, PreflightRun, check_names, run_preflight
from cni_runbook.preflight.checks import FAIL, PASS, WAIVED, WARN

from .hosts import StageHosts, ansible_envvars, stage_hosts

Say = Callable[[str], None]
PREFLIGHT_TIMEOUT_S = 900


class PreflightSetupError(ValueError):
    """Params that stage 00 cannot run with (unknown waiver, no hosts...)."""


@dataclass
class PreflightPlan:
    hosts: StageHosts
    profile: str
    waivers: list[str]
    actions: list[dict[str, str]]


def preflight_profile(params: Any) -> str:
    return params.cluster.preflight.profile or params.cni.profile


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


def _lab_hosts_up(cfg: Any, mode: str, say: Say) -> str:
    """Bare lab hosts for the preflight; what the lab was: down, hosts, rebuilt or cluster (reused).

    A lab whose cluster already runs (an earlier run, or `lab up`, left it for exploring) is
    rebuilt from bare hosts (``provisioner.lab_running: rebuild``, the default: the runbook
    starts from a cluster without a CNI every time) or kept (``reuse``: its own components then
    hold the Kubernetes ports, which the port checks recognise as this cluster's).
    """
    from cni_runbook.lab import cluster

    phase = cluster.phase(cfg)
    if phase == "cluster" and mode == "rebuild":
        say(f"lab instance {cfg.index} already runs Kubernetes (left by an earlier run): rebuilding it from "
            "bare hosts (provisioner.lab_running: rebuild; `reuse` keeps it)")
        say(cluster.down(cfg, progress=say))
        phase = "rebuilt"
    elif phase == "cluster":
        say(f"lab instance {cfg.index} already runs Kubernetes: reusing it (provisioner.lab_running: reuse); "
            "ports held by its own components are reported as this cluster's")
        return phase
    if phase in ("down", "rebuilt"):
        say(f"lab instance {cfg.index}: bringing up its bare hosts")
        say(cluster.up(cfg, hosts_only=True, progress=say))
    return phase


class PreflightStage:
    """Stage 00 for one :class:`~cni_runbook.state.StageContext` (see module docstring)."""

    def __init__(self, ctx: Any, lab_cfg: Any = None) -> None:
        self.ctx = ctx
        self.setup_error: str | None = None
        try:
            self.plan_data: PreflightPlan | None = plan_preflight(ctx.params, lab_cfg)
        except ValueError as exc:  # HostsError, PreflightSetupError: say it in the result
            self.plan_data, self.setup_error = None, str(exc)
        self.run_data: PreflightRun | None = None
        self.lab_phase: str | None = None

    # -- plan ----------------------------------------------------------------------------------
    @property
    def hosts(self) -> StageHosts:
        if self.plan_data is None:
            raise PreflightSetupError(self.setup_error or "no plan")
        return self.plan_data.hosts

    def plan(self) -> list[dict[str, str]]:
        """Write inventory.yml and plan.yaml; return the actions."""
        if self.plan_data is None:
            actions = [{"step": "stop", "target": "params", "detail": self.setup_error or ""}]
            self.ctx.record_plan(actions)
            return actions
        p = self.plan_data
        if p.hosts.hosts:
            self.ctx.write_artifact("inventory.yml", p.hosts.inventory())
        self.ctx.record_plan(p.actions)
        return p.actions

    def hosts_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.hosts.table())

    # -- run -----------------------------------------------------------------------------------
    def run(self, progress: Any = None, say: Say = print, timeout: int | None = None) -> PreflightRun | None:
        """Gather and evaluate (nothing in plan mode, or when the params cannot be used)."""
        if self.ctx.plan or self.plan_data is None or not self.plan_data.hosts.hosts:
            return None
        p = self.plan_data
        if p.hosts.lab is not None:
            self.lab_phase = _lab_hosts_up(p.hosts.lab, self.ctx.params.provisioner.lab_running, say)
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

    def matrix_view(self) -> Any:
        """The node x check matrix coloured by status (checks down, nodes across), or None."""
        from cni_runbook import display

        if self.report is None:
            return None
        return display.status_matrix(self.report.matrix(), STATUS_COLORS, caption=self.report.summary())

    def heatmap(self) -> Any:
        """The node x check heatmap (matplotlib Figure), also saved as heatmap.png in the artifacts."""
        from cni_runbook import display

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

    # -- result --------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        if self.setup_error:
            return "failed"
        if self.ctx.plan:
            return "planned"
        if self.plan_data is not None and not self.plan_data.hosts.hosts:
            return "skipped"
        return "passed" if self.report is not None and self.report.ok else "failed"

    def summary(self) -> str:
        if self.setup_error:
            return self.setup_error
        p = self.plan_data
        assert p is not None
        if self.ctx.plan:
            return (f"preflight planned ({p.profile}) for {len(p.hosts.hosts)} hosts from {p.hosts.source}; "
                    f"nothing was touched")
        if not p.hosts.hosts:
            return "no hosts to preflight: cluster.nodes is empty (an existing cluster's nodes are not checked)"
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

    def checks(self) -> list[dict[str, Any]]:
        """One JUnit case per node and check: pass/warn -> passed, fail -> failed, waived -> skipped."""
        if self.report is None:
            return []
        mapping = {PASS: "passed", WARN: "passed", FAIL: "failed", WAIVED: "skipped"}
        out = []
        for r in self.report.rows:
            message = f"{r.status}: seen {r.seen}; required {r.required}"
            if r.status == WAIVED:
                message += f" (waived by cluster.preflight.waivers: {r.waived_by})"
            out.append({"name": f"{r.node}/{r.check}", "status": mapping[r.status], "message": message})
        return out

    def data(self) -> dict[str, Any]:
        """The audit record's data: profile, waivers asked for and the rows they waived."""
        if self.plan_data is None:
            return {"error": self.setup_error}
        p = self.plan_data
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
