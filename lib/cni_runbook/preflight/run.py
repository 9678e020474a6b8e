"""Run the preflight playbook over SSH and evaluate the facts it gathers."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cni_runbook.ansible.runner import AnsibleResult, Progress, Redactor, run_playbook
from cni_runbook.preflight.checks import KCONFIG, PreflightReport, evaluate, modules_to_probe

REPORT_TASK = "preflight report"


def playbook_path() -> Path:
    """The fact-gathering playbook shipped with the package."""
    return Path(str(resources.files("cni_runbook.preflight") / "playbook.yml"))


@dataclass
class PreflightRun:
    ansible: AnsibleResult
    reports: dict[str, Mapping[str, Any]]  # host -> preflight_report
    report: PreflightReport


def collect_reports(result: AnsibleResult) -> tuple[dict[str, Mapping[str, Any]], dict[str, str]]:
    """(host -> preflight_report, host -> why no report) from a finished preflight run.

    Hosts are sorted by name: results arrive in whatever order the hosts answered, and
    the node x check matrix must not change from one run to the next because of that.
    """
    reports: dict[str, Mapping[str, Any]] = {}
    for host, task_result in result.results(REPORT_TASK).items():
        facts = task_result.res.get("ansible_facts") or {}
        if "preflight_report" in facts:
            reports[host] = facts["preflight_report"]
    missing: dict[str, str] = {}
    for failure in result.failures:
        if failure.host not in reports and failure.host not in missing:
            missing[failure.host] = f"{failure.kind} at '{failure.task}': {failure.message}"
    for host in result.progress.hosts:
        if host not in reports and host not in missing:
            missing[host] = f"no report (run {result.status})"
    if not reports and not missing:
        # The playbook never reached a host (syntax error, bad inventory, cancelled...).
        missing["(no host)"] = f"preflight run {result.status}, rc={result.rc}: see {result.artifact_dir / 'stdout'}"
    return dict(sorted(reports.items())), dict(sorted(missing.items()))


def run_preflight(
    inventory: str | Path | Mapping[str, Any],
    run_dir: Path | str,
    *,
    profile: str = "generic",
    waivers: Collection[str] = (),
    kube_proxy_mode: str | None = None,
    cluster_running: bool = False,
    become: bool = False,
    limit: str | None = None,
    envvars: Mapping[str, str] | None = None,
    timeout: int | None = 900,
    cancel_callback: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    redact: Redactor | None = None,
) -> PreflightRun:
    """Gather facts on every host of ``inventory`` and evaluate them for ``profile``.

    Every module any profile needs is probed, so one run can be evaluated again for another
    profile with :func:`cni_runbook.preflight.checks.evaluate` on ``PreflightRun.reports``.
    """
    modules = modules_to_probe()
    extravars = {
        "preflight_modules": modules,
        "preflight_kconfig": sorted({KCONFIG[m] for m in modules if m in KCONFIG}),
        "preflight_become": become,
    }
    result = run_playbook(
        playbook_path(),
        run_dir=run_dir,
        inventory=inventory,
        extravars=extravars,
        envvars=envvars,
        limit=limit,
        timeout=timeout,
        cancel_callback=cancel_callback,
        progress=progress,
        capture=[REPORT_TASK],
        redact=redact,
        name="preflight",
    )
    reports, missing = collect_reports(result)
    report = evaluate(reports, profile=profile, waivers=waivers, unreachable=missing, kube_proxy_mode=kube_proxy_mode,
                      cluster_running=cluster_running)
    return PreflightRun(result, reports, report)
