"""What the stage-05 notebook shows and records as its result: views of a plan and of an apply.

:func:`plan_views` / :func:`apply_views` return ``(caption, object)`` pairs (tables via
:func:`cni_runbook.display.table`, texts as :func:`~cni_runbook.display.file_block`);
:func:`show` displays them; :func:`result_args` maps a plan (and an apply) to the arguments of
``ctx.result``: skipped (no target), planned, failed (refused, or the apply failed) or passed.
"""

from __future__ import annotations

from typing import Any

from .. import display
from .replace import ReplacementPlan
from .upgrade import UpgradePlan


def plan_views(lp) -> list[tuple[str, Any]]:
    if lp.plan is None:
        return [("stage 05", display.table([{"status": "skipped", "why": lp.skipped}], caption="nothing to do"))]
    p = lp.plan
    out: list[tuple[str, Any]] = []
    head = [{"mode": lp.mode, "summary": p.summary(), "Kubernetes": f"{lp.kube_version or '?'} ({lp.kube_from})",
             "cluster read": "yes" if lp.cluster_read else "no"}]
    out.append(("plan", display.table(head, caption=f"stage 05: {lp.mode}")))
    if isinstance(p, UpgradePlan):
        out.append(("versions", display.table(p.versions_table(), caption="versions")))
    out.append(("compatibility", display.table(p.checks_table(), caption="compatibility, with the rule's source")))
    if p.refusals:
        out.append(("refused", display.table([{"refused because": r} for r in p.refusals], caption="REFUSED")))
    notes = [*lp.notes, *p.notes]
    if notes:
        out.append(("notes", display.table([{"note": n} for n in notes], caption="notes")))
    if isinstance(p, UpgradePlan):
        diff = p.diff
        shown = diff[diff["change"] != "unchanged"] if len(diff) else diff
        counts = ", ".join(f"{n} {c}" for c, n in diff["change"].value_counts().items()) if len(diff) else "no objects"
        out.append(("object diff", display.table(shown, caption=f"object diff installed -> target ({counts}; "
                                                  "unchanged objects hidden)")))
    if isinstance(p, ReplacementPlan):
        out.append(("policies", display.table(p.policies_table(), caption=p.policies.describe())))
        out.append(("remove", display.table(p.remove_table(), caption=f"{p.current.family}: API objects to delete")))
        out.append(("leftovers", display.table(p.leftovers_table(), caption=f"{p.current.family}: what is cleaned on every node")))
        out.append(("kubespray", display.file_block(p.kubespray.get("diff", ""), caption="Kubespray group_vars for a later "
                                                    "run (so it does not reinstall the old CNI)", language="diff")))
    out.append(("steps", display.table(p.steps, caption=f"{len(p.steps)} ordered steps")))
    return out


def apply_views(result) -> list[tuple[str, Any]]:
    if result is None:
        return [("apply", display.table([{"apply": "plan mode: nothing applied"}]))]
    return result.views()


def show(views: list[tuple[str, Any]]) -> None:
    from IPython.display import display as ipy_display

    for _, obj in views:
        ipy_display(obj)


def result_args(lp, result=None, *, plan: bool) -> dict[str, Any]:
    """``ctx.result`` keyword arguments for this plan and apply (module docstring)."""
    data = lp.record()
    if lp.plan is None:
        return {"status": "skipped", "summary": lp.skipped, "data": data}
    checks = lp.checks()
    if not lp.ok:
        return {"status": "failed", "summary": "refused: " + "; ".join(lp.refusals), "checks": checks, "data": data}
    if plan or result is None:
        return {"status": "planned", "summary": lp.summary() + "; nothing was touched", "checks": checks, "data": data}
    checks += result.checks()
    data["apply"] = result.record()
    return {"status": "passed" if result.ok else "failed", "summary": result.summary(), "checks": checks, "data": data}


__all__ = ["apply_views", "plan_views", "result_args", "show"]
