"""The stage base and the stages' outcome logic without a cluster: lifecycle, blocked plans,
operator errors, attempts, the Target hand-over, and stages 03/04 outcomes from recorded results."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from cni_runbook import stages
from cni_runbook.checks import Check, Status, overall
from cni_runbook.errors import OperatorError
from cni_runbook.params import LAB_FILE
from cni_runbook.stages.base import Finding, Outcome, Plan, Stage, View
from cni_runbook.state import StageFailed, attempt_dir, next_attempt, open_stage


class Toy(Stage):
    """A stage for the base's tests: what plan and apply do is set per test."""

    touches_cluster = True

    def __init__(self, ctx, plan_fn=None, apply_fn=None):
        super().__init__(ctx)
        self.plan_fn, self.apply_fn, self.locked = plan_fn, apply_fn, []

    def plan(self, ctx):
        return self.plan_fn(ctx)

    def apply(self, ctx, plan):
        return self.apply_fn(ctx, plan)

    def cluster_lock(self):
        import contextlib

        @contextlib.contextmanager
        def lock():
            self.locked.append("held")
            yield

        return lock()


def ctx_for(tmp_path, plan=False, sets=()):
    return open_stage("02_cni_install", [str(LAB_FILE)], list(sets), tmp_path / "run", plan)


def test_check_and_status():
    c = Check("x", "passed", "ok", 1.23456, "node-1")
    assert c.status is Status.PASSED and c.status == "passed"
    assert c.as_dict() == {"name": "x", "status": "passed", "message": "ok", "time_s": 1.235, "target": "node-1"}
    assert Check.coerce({"name": "y", "status": "failed", "node": "n2"}).target == "n2"
    with pytest.raises(ValueError, match="status must be one of passed, failed, planned, skipped"):
        Check("x", "ok")
    assert overall([Check("a", "passed"), Check("b", "failed")]) is Status.FAILED
    assert overall([Check("a", "skipped")]) is Status.SKIPPED and overall([]) is Status.SKIPPED


def test_the_lifecycle_plan_apply_result(tmp_path):
    ctx = ctx_for(tmp_path)
    stage = Toy(ctx, lambda c: Plan(actions=[{"step": "a"}], views=[View("t", [{"a": 1}], section="plan")]),
                lambda c, p: Outcome(Status.PASSED, "done", [Check("c1", Status.PASSED, "fine", 0.5)], {"k": 1}))
    plan = stage.run_plan()
    assert yaml.safe_load((ctx.artifacts / "plan.yaml").read_text())["actions"] == [{"step": "a"}]
    outcome = stage.run_apply(plan)
    assert stage.locked == ["held"]  # the cluster lock hook is held around apply
    record = stage.finish(outcome)
    assert record["status"] == "passed" and record["checks"][0] == {"name": "c1", "status": "passed",
                                                                   "message": "fine", "time_s": 0.5}
    assert json.loads((ctx.artifacts / "result.json").read_text())["data"] == {"k": 1}
    assert 'name="c1"' in (ctx.artifacts / "junit.xml").read_text()


def test_plan_mode_stops_before_apply(tmp_path):
    stage = Toy(ctx_for(tmp_path, plan=True), lambda c: Plan(actions=[{}, {}]),
                lambda c, p: pytest.fail("apply in plan mode"))
    outcome = stage.run_apply(stage.run_plan())
    assert outcome.status == "planned" and outcome.summary == "2 actions planned; nothing was touched"
    assert stage.locked == []


def test_a_blocking_finding_fails_the_plan_naming_key_and_file(tmp_path):
    ctx = ctx_for(tmp_path, plan=True, sets=["cni.namespace=kube-system"])
    stage = Toy(ctx, lambda c: Plan(findings=[Finding("cni.namespace", "not allowed", expected="a new namespace"),
                                              Finding("cni.config", "just so", severity="warning")]))
    plan = stage.run_plan()
    assert [f.key for f in plan.blocking] == ["cni.namespace"]
    assert plan.findings[0].where == "--set cni.namespace" and plan.findings[1].where.startswith("params/defaults.yaml:")
    outcome = stage.run_apply(plan)
    assert outcome.status == "failed"
    assert outcome.summary == ("the plan found 1 problem(s) that would stop the apply: cni.namespace "
                               "(--set cni.namespace): not allowed (expected: a new namespace)")
    assert [c.target for c in outcome.checks] == ["cni.namespace"]
    recorded = yaml.safe_load((ctx.artifacts / "plan.yaml").read_text())["findings"]
    assert [f["severity"] for f in recorded] == ["error", "warning"]
    with pytest.raises(StageFailed):
        stage.finish(outcome)


def test_errors_while_planning_or_applying_become_failed_outcomes(tmp_path):
    def bad_plan(ctx):
        raise ValueError("cni.version: no such release")

    stage = Toy(ctx_for(tmp_path / "a"), bad_plan, None)
    outcome = stage.run_apply(stage.run_plan())
    assert outcome.status == "failed" and "cni.version: no such release" in outcome.summary

    def bad_apply(ctx, plan):
        raise OperatorError("the API server did not answer\nat https://x")

    stage = Toy(ctx_for(tmp_path / "b"), lambda c: Plan(), bad_apply)
    outcome = stage.run_apply(stage.run_plan())
    assert outcome.status == "failed" and outcome.summary == "the API server did not answer"
    assert outcome.data["error"].endswith("at https://x")


def test_the_attempt_number_is_one_place(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert next_attempt(run, "02_cni_install") == 1
    # attempt 1 died before it opened its stage: run.json has it, no folder exists
    (run / "run.json").write_text(json.dumps({"stages": [{"stage": "02_cni_install", "attempt": 1}]}))
    assert next_attempt(run, "02_cni_install") == 2
    ctx = open_stage("02_cni_install", [str(LAB_FILE)], [], run, True)
    assert ctx.artifacts == attempt_dir(run, "02_cni_install", 2) and ctx.artifacts.name == "02_cni_install.attempt2"
    assert next_attempt(run, "02_cni_install") == 3  # a folder counts as well as a record


def test_the_registry_names_a_class_for_every_stage():
    for spec in stages.STAGES:
        cls = stages.stage_class(spec.id)
        assert issubclass(cls, Stage)


def test_validation_outcome_from_recorded_results():
    from cni_runbook.stages.validation import ValidationStage
    from cni_runbook.validation import results

    rows = [{"test": "pod-to-pod/tcp/a->b", "family": "pod-to-pod", "src_pod": "a", "src_node": "n1", "target": "b",
             "dst_node": "n2", "protocol": "TCP", "result": "passed", "latency_ms": 3.0, "attempts": 1, "reason": ""},
            {"test": "dns/a", "family": "dns", "src_pod": "a", "src_node": "n1", "target": "kubernetes", "dst_node": "",
             "protocol": "UDP", "result": "failed", "latency_ms": 900.0, "attempts": 3, "reason": "timeout"}]
    run = results.SuiteResult(frame=results.frame_from_rows(rows), layout=None, timings={"total_s": 2.0})
    outcome = ValidationStage.outcome(run)
    assert outcome.status == "failed" and outcome.summary == "1 passed, 1 failed, 0 skipped; failed: dns/a (node n1): timeout"
    assert [(c.name, c.status.value, c.time_s) for c in outcome.checks] == [
        ("pod-to-pod/tcp/a->b", "passed", 0.003), ("dns/a", "failed", 0.9)]
    assert outcome.data["failed"] == 1 and {v.section for v in outcome.views} >= {"results", "failures"}
    rows[1]["result"] = "skipped"
    assert ValidationStage.outcome(results.SuiteResult(results.frame_from_rows(rows), None)).status == "passed"


def test_validation_matrices_are_one_figure_whose_log_names_only_failing_families():
    from cni_runbook.stages.show import render
    from cni_runbook.validation import results
    from cni_runbook.stages.validation import ValidationStage

    def row(family, dst, result):
        return {"test": f"{family}/n1->{dst}", "family": family, "src_pod": "a", "src_node": "n1", "target": dst,
                "dst_node": dst, "protocol": "TCP", "result": result, "latency_ms": 1.0, "attempts": 1, "reason": ""}

    rows = [row("pod-to-pod", "n2", "passed"), row("pod-to-pod", "n3", "passed"),
            row("mtu", "n2", "passed"), row("mtu", "n3", "failed")]
    outcome = ValidationStage.outcome(results.SuiteResult(results.frame_from_rows(rows), None))
    (matrices,) = [render(v) for v in outcome.views if v.section == "matrices"]
    assert matrices.png and matrices.png.startswith(b"\x89PNG")  # one figure for both families
    first, *rest = matrices.text.splitlines()
    assert first.startswith("connectivity matrices") and "1 of 2 with a cell below 1.00" in first
    assert "all cells 1.00 in pod-to-pod" in first and rest[0].startswith("mtu: 1 of 2 cells below 1.00")
    rows[3]["result"] = "passed"
    outcome = ValidationStage.outcome(results.SuiteResult(results.frame_from_rows(rows), None))
    (matrices,) = [render(v) for v in outcome.views if v.section == "matrices"]
    assert matrices.text.endswith("every cell 1.00 in all 2 (pod-to-pod, mtu)")


def test_policy_qos_outcome_merges_the_four_sources(tmp_path):
    from cni_runbook.policy import flow
    from cni_runbook.stages.policy_qos import PolicyQosStage

    ctx = open_stage("04_policy_qos", [str(LAB_FILE)], [], tmp_path / "run", False)
    stage = PolicyQosStage(ctx)
    stage.policy_run = flow.PolicyRun(layout=None, error="baseline: x/a -> y/b blocked - every pair must connect")
    stage.cni_audit = pd.DataFrame(columns=["pod", "status"])  # no CNI pod found
    outcome = stage.outcome(ctx.params)
    assert outcome.status == "failed"
    assert [(c.name, c.status.value) for c in outcome.checks] == [("policy baseline", "failed"),
                                                                  ("qos cni pod audit", "failed")]
    assert outcome.summary == ("baseline: x/a -> y/b blocked; failed: policy baseline; "
                               "qos cni pod audit (no CNI pods found to audit)")
