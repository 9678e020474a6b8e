"""Stage 05 (CNI lifecycle) against the real local lab.

- an upgrade of the lab CNI to a broken target (images from a repository the lab registry does
  not have): the rollout times out, the recorded previous objects are restored, the network
  validates again; `cni-runbook rollback RUN` restores that recorded version on request;
- Antrea v2.5.3 -> v2.7.0 from the real manifests, planned (diff, skew, compatibility with the
  live server's version) and applied as a server-side dry-run: nothing is persisted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_runbook.lab import cluster
from cni_runbook.lifecycle import stage as lifecycle_stage
from cni_runbook.state import open_stage

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "params" / "lab.yaml"
EXAMPLES = ROOT / "params" / "examples"
QUICK = ["validation.tests=pod-to-pod/", "validation.perf=false",  # a short before/after: pod-to-pod only,
         "policy.scenarios=[default-deny-ingress]"]  # and one truth table


@pytest.fixture(scope="module")
def kube(lab):
    cfg = lab.with_cni()
    # an earlier module may have installed the lab CNI another way (kubectl through the Kubespray
    # double): apply it again through the runbook's engine, so this run's field manager owns it
    # and stage 05 reads the installation as the runbook's own
    cluster.install_cni(cfg, progress=print)
    k = lab.kube()
    yield k
    k.close()


def _ctx(tmp_path, example: str, *extra: str):
    return open_stage("05_cni_lifecycle", [str(LAB), str(EXAMPLES / example)], [*QUICK, *extra], tmp_path / "run", False)


def _agent_images(kube) -> list[str]:
    ds = kube.get("apps/v1", "DaemonSet", "kube-router", "kube-system")
    spec = ds["spec"]["template"]["spec"]
    return [c["image"] for c in spec["initContainers"] + spec["containers"]]


def test_broken_upgrade_times_out_rolls_back_and_validates_again(kube, tmp_path):
    before = _agent_images(kube)
    ctx = _ctx(tmp_path, "lab-upgrade-broken.yaml", "lifecycle.rollout_timeout_s=45")
    plan = lifecycle_stage.plan_stage(ctx)
    assert plan.ok, plan.refusals
    assert plan.cluster_read and plan.plan.current_version == "v2.1.0"
    assert plan.plan.installed.made_by == "cni-runbook"
    changed = plan.plan.diff[plan.plan.diff["change"] == "changed"]
    assert list(changed["kind"]) == ["DaemonSet"] and "image" in changed.iloc[0]["paths"]

    result = lifecycle_stage.apply_stage(ctx, plan, progress=print)
    assert not result.ok and result.rolled_back, result.steps_table()
    steps = result.steps_table().set_index("step")
    assert steps.loc["rollout DaemonSet kube-system/kube-router", "status"] == "failed"
    assert steps.loc["before: validation", "status"] == "passed"
    assert steps.loc["after rollback: validation", "status"] == "passed", steps.loc["after rollback: validation", "detail"]
    assert _agent_images(kube) == before  # back on the recorded objects
    assert set(result.after["validation"]["result"]) == {"passed"}
    assert (ctx.artifacts / "previous-objects.json").is_file()

    from cni_runbook.lifecycle.rollback import rollback_upgrade_run

    detail, work = rollback_upgrade_run(ctx.run_dir, timeout=120)
    assert "restored kube-router v2.1.0" in detail and (work / "rollback.json").is_file()
    assert _agent_images(kube) == before


def test_antrea_upgrade_planned_and_applied_as_a_server_side_dry_run(kube, tmp_path):
    ctx = _ctx(tmp_path, "lab-upgrade-antrea-dry-run.yaml")
    plan = lifecycle_stage.plan_stage(ctx)
    assert plan.ok, plan.refusals
    assert plan.kube_from == lifecycle_stage.KUBE_FROM_SERVER and plan.kube_version.startswith("v1.35")
    assert {c.status for c in plan.plan.checks} == {"supported"}
    assert plan.plan.current_version == "v2.5.3" and plan.plan.target_version == "v2.7.0"
    result = lifecycle_stage.apply_stage(ctx, plan, progress=print)
    assert result.ok and result.dry_run, result.steps_table()
    assert len(result.applied) == 47
    assert kube.get("apps/v1", "DaemonSet", "antrea-agent", "kube-system") is None  # nothing persisted
