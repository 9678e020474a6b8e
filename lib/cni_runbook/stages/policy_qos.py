"""Stage 04: NetworkPolicy truth tables, bandwidth QoS, the CNI pods' QoS audit, Antrea Egress shaping.

:class:`PolicyQosStage` on the stage base:

* ``plan`` - the truth-table layout (``layout.yaml``) and its placement, every policy set
  (``policies/<set>.yaml``) with its expected matrices from the pure-Python engine and its
  predicted impact (the connections applying it would cut or open, grouped by namespace/app with
  the responsible rule: ``predicted-impact.csv``), the QoS pods
  (``qos-pods.yaml``) and planned measurements, the Antrea Egress CR (``antrea-egress.yaml``)
  with its gate checks; an unreadable policy file is a blocking finding; nothing touched;
* ``apply`` - the policy run (baseline, each set, enforcement latency, clean-up; each set's
  impact predicted over the deployed pods compared with the cuts/openings the verification
  observed, one ``impact <set>`` check each: ``impact-vs-observed.csv``), the bandwidth
  measurements, the CNI pod audit, all against the Target's cluster; the checks of the four
  sources merged into one list (Antrea's only when ``qos.antrea_egress`` asks for shaping).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cni_runbook import display
from cni_runbook.checks import Check, Status
from cni_runbook.cni.profiles import policy_enforcement
from cni_runbook.kube import leftovers
from cni_runbook.policy import flow, impact, results, sets, tables, workloads
from cni_runbook.policy import plan as policy_plan
from cni_runbook.qos import antrea as qos_antrea
from cni_runbook.qos import audit, bandwidth

from . import registry
from .base import Finding, Outcome, Plan, Stage, View


def failing(check: Check, said: str = "") -> str:
    """A failed check for the summary: its name and what its message says is at fault (unless
    ``said``, the summary so far, says it already)."""
    if not check.message or check.message.split(" - ")[0] in said:
        return check.name
    return f"{check.name} ({check.message})"


#: the marks of what stage 04 creates (kube/leftovers.py): the truth-table layout, the test
#: policies of each set, the QoS namespace and pods
LEFTOVER_ROLES = (workloads.ROLE, workloads.TEST_POLICY_ROLE, bandwidth.ROLE)
PLAN_IMPACT_ROWS = 50  # rows of each set's predicted impact the plan shows (predicted-impact.csv has all)


class PolicyQosStage(Stage):
    """Stage 04 (see module docstring)."""

    static_plan = True  # `cni-runbook params` runs this plan

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.target: Any = None
        self.planned_sets: list[policy_plan.PlannedSet] = []
        self.antrea_checks: pd.DataFrame | None = None
        self.policy_run: flow.PolicyRun | None = None
        self.bandwidth_run: Any = None
        self.cni_audit: pd.DataFrame | None = None
        self.leftovers: list[str] = []  # what an earlier, interrupted run left and this one removed first
        self.impact_checks: list[impact.ImpactCheck] = []  # each set's predicted impact vs the observation

    # -- plan ----------------------------------------------------------------------------------
    def plan(self, ctx: Any) -> Plan:
        from cni_runbook.provision import targets

        params = ctx.params
        self.target = targets.resolve(params, ctx.get, require_up=not ctx.plan)
        actions = registry.outline(ctx.stage.id, params)
        plan = Plan(actions=actions, views=[View(f"{ctx.stage.id}: {len(actions)} planned actions", actions,
                                                  section="plan")])
        try:
            layout, _model, self.planned_sets = policy_plan.plan(params.policy)
        except sets.PolicyFileError as exc:
            plan.findings.append(Finding("policy.files", str(exc)))
            return plan
        objects = workloads.workload_objects(layout, workloads.probe_image(params, self.target))
        ctx.write_artifact("layout.yaml", {"apiVersion": "v1", "kind": "List", "items": objects})
        caption = (f"layout: {len(layout.namespaces)} namespaces, {len(layout.pods)} pods, ports "
                   f"{', '.join(map(str, layout.ports))} over {', '.join(layout.protocols)}")
        plan.views.append(View(caption, workloads.placement(objects), section="layout",
                               brief=f"{caption} ({', '.join(layout.namespaces)}; pods in the notebook)"))
        for item in self.planned_sets:
            ctx.write_artifact(f"policies/{item.policy_set.name}.yaml",
                               {"apiVersion": "v1", "kind": "List", "items": list(item.policy_set.policies)})
        plan.views.append(View(f"{len(self.planned_sets)} policy sets", [i.row() for i in self.planned_sets],
                               section="sets"))
        if self.planned_sets:  # every set's first expected truth table, side by side (wrapping)
            plan.views.append(View("expected truth tables", display.side_by_side([
                tables.styled_matrix(expected, f"{item.policy_set.name}: expected {label}")
                for item in self.planned_sets for label, expected in [next(iter(item.expected.items()))]]),
                "object", "sets"))
        for item in self.planned_sets:
            groups = len(item.impact.grouped())
            caption = f"{item.policy_set.name}: predicted impact, {item.impact.summary}"
            plan.views.append(View(caption + (f" (first {PLAN_IMPACT_ROWS} of {groups} groups)"
                                              if groups > PLAN_IMPACT_ROWS else ""),
                                   impact.plan_frame(item.impact, limit=PLAN_IMPACT_ROWS), section="sets",
                                   brief=caption))  # the log: one line per set; the groups in the notebook
        predicted = [{"set": item.policy_set.name, **row} for item in self.planned_sets
                     for row in item.impact.grouped().to_dict("records")]
        ctx.write_artifact("predicted-impact.csv", pd.DataFrame(predicted, columns=["set", *impact.GROUPED_COLUMNS]))
        plan.views += self._plan_qos(ctx)
        plan.artifacts += ["layout.yaml", "policies/", "predicted-impact.csv"]
        plan.summary = (f"{len(actions)} actions planned, {len(self.planned_sets)} policy sets rendered; "
                        "nothing was touched")
        return plan

    def _plan_qos(self, ctx: Any) -> list[View]:
        params, views = ctx.params, []
        qos = params.qos
        if qos.enabled:
            bw = qos.bandwidth
            pair = bandwidth.pair_objects(qos.namespace, bandwidth.iperf3_image(params, self.target), bw.ingress,
                                          bw.egress)
            ctx.write_artifact("qos-pods.yaml", {"apiVersion": "v1", "kind": "List", "items": pair})
            views.append(View(f"planned iperf3 measurements, tolerance {qos.tolerance_pct}%",
                              bandwidth.plan_measurements(bw.ingress, bw.egress), section="qos"))
        else:
            views.append(View("qos.enabled is false: no bandwidth check", [], section="qos"))
        if params.cni.profile == "antrea":
            egress, self.antrea_checks = qos_antrea.egress_plan(qos, params.cni)
            ctx.write_artifact("antrea-egress.yaml", egress)
            views.append(View("Egress bandwidth shaping: gates and settings", self.antrea_checks, section="antrea"))
        else:
            views.append(View(f"profile {params.cni.profile}: no Antrea Egress shaping", [], section="antrea"))
        return views

    def planned(self, ctx: Any, plan: Plan) -> Outcome:
        return Outcome(Status.PLANNED, plan.summary, data={"sets": len(self.planned_sets)}, views=[
            View("plan mode: nothing deployed, nothing probed", [], section="policy"),
            View("plan mode: the audit reads the CNI's pods from the cluster", [], section="audit"),
            *[v for v in plan.views if v.section == "qos"]])

    # -- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: Any, plan: Plan) -> Outcome:
        from cni_runbook.kube import Kube

        params = ctx.params
        kube = Kube.from_kubeconfig(self.target.kubeconfig, self.target.context)
        try:  # an earlier run stopped hard left its objects: they go before anything is applied
            self.leftovers = [f.ref for f in leftovers.remove(kube, LEFTOVER_ROLES, progress=print)]
        except Exception:
            kube.close()
            raise
        if self.leftovers:
            ctx.write_artifact("leftovers-removed.json", {"removed": self.leftovers})
        # a CNI without NetworkPolicy enforcement (flannel) is said so before anything is probed
        self.enforcement = policy_enforcement(params.cni.profile, params.policy.accept_no_enforcement)
        ctx.write_artifact("policy-enforcement.json", self.enforcement.record())
        print(self.enforcement.message)
        try:
            if self.enforcement.probe:
                self.policy_run = flow.run(kube, params.policy, workloads.probe_image(params, self.target),
                                             ctx.artifacts / "records", progress=print)
                run = self.policy_run
                ctx.write_artifact("policy-results.json", {
                    "baseline": run.baseline.record() if run.baseline else None,
                    "sets": [r.record() for r in run.results], "kept": run.kept, "removed": run.removed,
                    "error": run.error})
                ctx.write_artifact("policy-summary.csv", results.summary_frame(run.results))
                self.impact_checks = run.impact_checks()
                ctx.write_artifact("impact-vs-observed.csv", pd.concat(
                    [c.frame().assign(set=c.name) for c in self.impact_checks] or [pd.DataFrame()]))
            if params.qos.enabled:
                self.bandwidth_run = bandwidth.measure(kube, params.qos, bandwidth.iperf3_image(params, self.target),
                                                       ctx.artifacts / "records" / "qos.jsonl", progress=print)
                ctx.write_artifact("qos-measurements.csv", pd.DataFrame(self.bandwidth_run.measurements()))
            self.cni_audit = audit.audit_pods(audit.cni_pods(kube, params.cni.namespace, params.cni.profile))
            ctx.write_artifact("cni-pod-audit.csv", self.cni_audit)
        finally:
            kube.close()
        return self.outcome(params)

    def outcome(self, params: Any) -> Outcome:
        """The applied outcome from the four sources' results (no cluster needed to compute it)."""
        run = self.policy_run
        enforcement = getattr(self, "enforcement", None) or policy_enforcement(params.cni.profile,
                                                                              params.policy.accept_no_enforcement)
        checks = [Check.coerce(c) for c in enforcement.checks(run)]
        checks += [Check.coerce(c.check()) for c in self.impact_checks]
        bw_checks = self.bandwidth_run.checks if self.bandwidth_run else []
        checks += [Check.coerce(c.check()) for c in bw_checks]
        if self.cni_audit is not None:
            checks.append(Check.coerce(audit.audit_check(self.cni_audit)))
        if self.antrea_checks is not None and params.qos.antrea_egress.model_dump(exclude_none=True):
            checks += [Check(f"antrea {r['check']}", r["status"], r["fix"] or str(r["value"]))
                       for r in self.antrea_checks.to_dict("records")]
        if self.leftovers:
            checks.insert(0, Check("leftovers of earlier runs", Status.PASSED,
                                   f"removed before applying: {', '.join(self.leftovers)}"))
        failed = [c for c in checks if c.status == Status.FAILED]
        summary = enforcement.summary(run) + (f"; {bandwidth.summarize(bw_checks)}" if self.bandwidth_run else "")
        summary += f"; failed: {'; '.join(failing(c, summary) for c in failed)}" if failed else ""
        if self.leftovers:
            summary = (f"removed {len(self.leftovers)} leftover(s) of an earlier, interrupted run first "
                       f"({', '.join(self.leftovers)}); {summary}")
        data = {"sets": len(run.results), "kept": run.kept, "removed": run.removed} if run else {"sets": 0}
        data["leftovers_removed"] = self.leftovers
        return Outcome(Status.FAILED if failed else Status.PASSED, summary, checks, data, self._views(enforcement))

    def _views(self, enforcement: Any = None) -> list[View]:
        run = self.policy_run
        views = [View("NetworkPolicy enforcement of this CNI", [enforcement.row()], section="policy")] if enforcement else []
        if run is None:
            views.append(View("truth tables not run: " + enforcement.message.split(". ")[0], [], section="policy"))
        else:
            placed = run.placement()
            spread = {}
            for row in placed:
                spread[row["node"]] = spread.get(row["node"], 0) + 1
            views += [View("layout pods as deployed", placed, section="policy",
                           brief=f"layout pods as deployed: {len(placed)} on {len(spread)} nodes ("
                                 + ", ".join(f"{n} {c}" for n, c in sorted(spread.items())) + "; IPs in the notebook)"),
                      View(run.summary if not run.error else run.error, results.summary_frame(run.results),
                           section="policy")]
        if run is not None and run.results:
            views.append(View("enforcement", display.plot_enforcement(results.summary_frame(run.results)), "object",
                              "policy"))
        for c in self.impact_checks:
            check = c.check()
            caption = f"impact {c.name}: {check['message']}"
            views.append(View(caption, c.frame() if c.compared else [], section="policy",
                              brief=caption if check["status"] != "failed" else None))  # the table when they disagree
        if run is not None and run.results:
            views.append(View("share", display.heatmap(results.correct_share(run.results),
                                                       caption="share of pairs as expected (1.0 = all)"),
                              "object", "matrices"))
        for r in (run.results if run is not None else []):
            for m in r.matrices:  # expected, observed and diff side by side
                diff = tables.styled_matrix(m.comparison.diff, f"{r.name} {m.label}: {m.comparison.summary}", diff=True)
                views.append(View(f"{r.name} {m.label}", display.side_by_side([
                    tables.styled_matrix(m.expected, f"{r.name} {m.label}: expected"),
                    tables.styled_matrix(m.observed, f"{r.name} {m.label}: observed"), diff], text=diff.text),
                    "object", "matrices",
                    brief="" if m.comparison.ok else None))  # an all-agreeing diff: the summary table says so
            if r.incorrect:
                views.append(View(f"{r.name}: mismatches and the rules that decide them", r.mismatches(),
                                  section="matrices"))
        if self.bandwidth_run is None:
            views.append(View("qos.enabled is false: no bandwidth check", [], section="qos"))
        else:
            views += [View("iperf3 measurements", self.bandwidth_run.measurements(), section="qos"),
                      View(bandwidth.summarize(self.bandwidth_run.checks), [c.row() for c in self.bandwidth_run.checks],
                           section="qos"),
                      View("bandwidth", display.plot_bandwidth([c.row() for c in self.bandwidth_run.checks]), "object",
                           "qos")]
        if self.cni_audit is not None:
            views.append(View(audit.audit_check(self.cni_audit)["message"], self.cni_audit, section="audit"))
        return views
