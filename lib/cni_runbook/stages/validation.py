"""Stage 03: prove the network (pod-to-pod, pod-to-service, DNS, MTU, optional perf).

:class:`ValidationStage` on the stage base:

* ``plan`` - the suite configuration from the params and the Target's images (the lab's own
  builds on the lab), the test plan (``test-plan.csv``: every test, selected or not), the probe
  workloads (``workloads.yaml``), the thresholds; nothing touched;
* ``apply`` - :func:`cni_runbook.validation.suite.run_suite` against the Target's cluster; the
  status is the suite's own (:attr:`~cni_runbook.validation.results.SuiteResult.status`), one
  check per test.
"""

from __future__ import annotations

from typing import Any

from cni_runbook import display
from cni_runbook.checks import Status
from cni_runbook.validation import results, suite, workloads

from . import registry
from .base import Outcome, Plan, Stage, View


class ValidationStage(Stage):
    """Stage 03 (see module docstring)."""

    static_plan = True  # `cni-runbook params` runs this plan

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.target: Any = None
        self.cfg: suite.SuiteConfig | None = None
        self.run: results.SuiteResult | None = None

    # -- plan ----------------------------------------------------------------------------------
    def plan(self, ctx: Any) -> Plan:
        from cni_runbook.provision import targets

        self.target = targets.resolve(ctx.params, ctx.get, require_up=not ctx.plan)
        cfg = self.cfg = suite.SuiteConfig.from_params(ctx.params, workloads.images_for(ctx.params, self.target))
        nodes = [h.name for h in self.target.hosts] or [n.name for n in ctx.params.cluster.nodes]
        test_plan = suite.plan_frame(cfg, nodes)
        ctx.write_artifact("test-plan.csv", test_plan)
        selected = test_plan[test_plan["selected"]]
        layout = workloads.Layout(cfg.namespace, sorted(nodes) or ["<node>"], cfg.images,
                                  ("<node A>", "<node B>") if cfg.perf else None)
        ctx.write_artifact("workloads.yaml", workloads.render(layout))
        actions = registry.outline(ctx.stage.id, ctx.params)
        for action in actions:  # the images the Target runs (the lab: its own builds), not the params' defaults
            if action["step"] == "deploy":
                action["detail"] = f"probe pods ({cfg.images.probe}) on every node"
            elif action["step"] == "perf":
                action["target"] = cfg.images.perf
        families = selected.groupby("family", sort=False).size()
        pods = suite.pods_frame(layout)
        roles = pods.groupby("role", sort=False).size()
        thresholds = self.thresholds()
        chosen = f"{len(selected)} of {len(test_plan)} tests selected (tests ~ /{cfg.tests}/, skip /{cfg.skip or ''}/)"
        # batch logs get one line per table (the notebook and the report show the tables)
        views = [
            View(f"{ctx.stage.id}: {len(actions)} planned actions", actions, section="plan"),
            View(chosen, families.reset_index(name="tests"), section="tests",
                 brief=f"{chosen}: " + ", ".join(f"{f} {n}" for f, n in families.items())),
            View(f"pods in namespace {cfg.namespace}", pods, section="tests",
                 brief=f"{len(pods)} pods in namespace {cfg.namespace}: "
                       + ", ".join(f"{n} {r}" for r, n in roles.items())),
            View("thresholds and settings", thresholds, section="tests",
                 brief="settings: " + ", ".join(f"{t['setting']} {t['value']}" for t in thresholds)),
        ]
        return Plan(actions=actions, views=views, artifacts=["test-plan.csv", "workloads.yaml"],
                    data={"tests": int(len(selected))},
                    summary=f"{len(selected)} tests planned on {len(nodes) or 'the'} nodes; nothing was touched")

    def thresholds(self) -> list[dict[str, str]]:
        cfg = self.cfg
        settings = {"probe timeout s": cfg.probe_timeout_s, "attempts": cfg.attempts, "max DNS ms": cfg.max_dns_ms,
                    "MTU": cfg.mtu or "read from the pods", "CNI agent": cfg.cni_agent or "(none)",
                    "perf": cfg.perf, "min throughput Mbit/s": cfg.perf_config.min_throughput_mbps,
                    "pod vs host tolerance %": cfg.perf_config.tolerance_pct,
                    "max RTT p99 ms": cfg.perf_config.max_rtt_ms, "max loss %": cfg.perf_config.max_loss_pct,
                    "keep workloads": cfg.keep_workloads}
        return [{"setting": k, "value": str(v)} for k, v in settings.items()]

    def planned(self, ctx: Any, plan: Plan) -> Outcome:
        return Outcome(Status.PLANNED, plan.summary, data=plan.data, views=[
            View("results by family", [], section="results"),
            View("failed tests", [], section="failures")])

    # -- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: Any, plan: Plan) -> Outcome:
        from cni_runbook.kube import Kube

        kube = Kube.from_kubeconfig(self.target.kubeconfig, self.target.context)
        try:
            self.run = suite.run_suite(kube, self.cfg, progress=print, record=ctx.artifacts / "applied.jsonl")
        finally:
            kube.close()
        ctx.write_artifact("results.csv", self.run.frame)
        ctx.write_artifact("topology.json", self.run.topology)
        print(self.run.timing_line(), "|", self.run.cleanup)  # the summary heads the results table
        return self.outcome(self.run, self.cfg)

    @staticmethod
    def outcome(run: results.SuiteResult, cfg: suite.SuiteConfig | None = None) -> Outcome:
        """The outcome of a suite run (no cluster needed): the suite's status, one check per test, views."""
        frame = run.frame
        views = [View(results.summary_line(frame), results.family_table(frame), section="results")]
        families = results.matrix_families(frame)
        if families:  # small multiples in one figure; the log names only a family with a failing cell
            views.append(View("connectivity matrices",
                              display.heatmaps({f: results.matrix(frame, f) for f in families},
                                               "connectivity matrices (share of passing tests, node to node)"),
                              "object", "matrices"))
        failed = results.failures(frame)
        views.append(View(f"{len(failed)} failed tests", failed if len(failed) else [{"result": "no test failed"}],
                          section="failures", brief=None if len(failed) else "0 failed tests"))
        perf = frame[frame["family"] == "perf"]
        if len(perf):
            # the log gets the table only when a measurement failed (the two plot lines below give the figures)
            views.append(View("performance", perf[["test", "src_pod", "target", "result", "value", "unit", "reason"]],
                              section="failures", brief=None if (perf["result"] == "failed").any() else ""))
            pc = cfg.perf_config if cfg is not None else None
            views += [View("throughput", display.plot_throughput(perf, pc.tolerance_pct if pc else 30.0,
                                                                 pc.min_throughput_mbps if pc else None),
                           "object", "failures"),
                      View("latency", display.plot_latency(perf, pc.max_rtt_ms if pc else None), "object", "failures")]
        return Outcome(Status.of(run.status), results.summary_line(frame), results.checks(frame),
                       {**run.counts, "timings": run.timings, "cleanup": run.cleanup}, views)
