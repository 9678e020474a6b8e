"""The stage registry (names, selection) and each stage's plan outline for the example sites."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_runbook import stages
from cni_runbook.params import load_params

EXAMPLES = Path(__file__).resolve().parents[2] / "params" / "examples"


@pytest.mark.parametrize("ref", ["02_cni_install", "02", "2", "cni_install"])
def test_stage_references(ref):
    assert stages.get(ref).id == "02_cni_install"


def test_selection_keeps_runbook_order_and_all_means_all():
    assert [s.id for s in stages.select(["04", "00"])] == ["00_preflight", "04_policy_qos"]
    assert stages.select(["all"]) == list(stages.STAGES)
    with pytest.raises(KeyError):
        stages.select(["06"])


def test_output_names():
    assert [s.output_name for s in stages.STAGES][:2] == ["00-preflight.ipynb", "01-cluster_no_cni.ipynb"]


def test_kubespray_site_outline():
    p = load_params([EXAMPLES / "kubespray-antrea.yaml"]).params
    pre = stages.outline("00", p)
    assert sum(a["step"] == "reach" for a in pre) == 5
    assert pre[0]["detail"] == "ssh ansible@192.0.2.11:22, gather facts"
    cluster = {a["target"]: a["detail"] for a in stages.outline("01", p)}
    assert "kube_network_plugin=none" in cluster["group_vars"] and "kube_proxy_remove=True" in cluster["group_vars"]
    assert cluster["/srv/kubespray/cluster.yml"] == "Kubespray v2.31.0"
    cni = stages.outline("02", p)
    assert cni[0]["detail"] == "the antrea profile's own manifests (v2.7.0)"
    assert cni[1] == {"step": "render", "target": "config", "detail": "override antrea-agent.conf"}
    policy = stages.outline("04", p)
    assert [a["step"] for a in policy] == ["scenario", "apply", "qos"]


def test_custom_cni_and_helm_outlines():
    custom = stages.outline("02", load_params([EXAMPLES / "kubespray-custom-cni.yaml"], static_checks=False).params)
    assert custom[0]["detail"].endswith("params/examples/manifests/antrea.yml")
    assert custom[-3]["target"] == "kubespray"  # then the wait, then the compatibility check
    helm = stages.outline("02", load_params([EXAMPLES / "existing-helm.yaml"]).params)
    assert helm[0]["detail"] == "helm chart example-cni 1.2.3 from https://charts.example.org/cni"
    dry = stages.outline("02", load_params([EXAMPLES / "existing-helm.yaml"], ["cni.server_dry_run=true"]).params)
    assert dry[-2]["detail"] == "server-side dry-run"
    assert dry[-1]["target"] == "compatibility"


def test_validation_outline_follows_perf_switch():
    p = load_params([], ["validation.perf=false", "validation.skip=perf-.*"]).params
    steps = stages.outline("03", p)
    assert [a["step"] for a in steps] == ["deploy", "test", "cleanup"]
    assert "skip /perf-.*/" in steps[1]["target"]
