"""Every validation rule, each with the message an operator reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_runbook.kubespray import (
    ValidationFailed,
    ansible_core_requirement,
    findings_frame,
    raise_for_errors,
    render_group_vars,
    trap_warnings,
    validate_all,
    validate_controller,
    validate_inventory,
)

DOUBLE = Path(__file__).resolve().parents[1] / "doubles" / "kubespray"


def host(name: str, roles: list[str], n: int) -> dict:
    return {"name": name, "ansible_host": f"192.0.2.{n}", "ip": f"10.0.0.{n}", "access_ip": f"10.0.0.{n}", "roles": roles}


GOOD = [host("cp1", ["control_plane", "etcd"], 1), host("w1", ["worker"], 2), host("w2", ["worker"], 3)]


def rules(findings, severity: str = "error") -> list[str]:
    return [f.rule for f in findings if f.severity == severity]


def only(findings, rule: str):
    [finding] = [f for f in findings if f.rule == rule]
    return finding


def test_a_good_inventory_has_no_findings() -> None:
    assert validate_inventory(GOOD, render_group_vars()) == []


def test_empty_control_plane() -> None:
    f = only(validate_inventory([host("w1", ["worker", "etcd"], 2)], render_group_vars()), "control_plane_empty")
    assert f.severity == "error" and f.message == "the kube_control_plane group is empty"
    assert f.file == "params.yaml" and f.key == "hosts[*].roles"


def test_even_etcd_count() -> None:
    hosts = [host("cp1", ["control_plane", "etcd"], 1), host("cp2", ["control_plane", "etcd"], 2), host("w1", ["worker"], 3)]
    f = only(validate_inventory(hosts, render_group_vars()), "etcd_odd")
    assert f.value == 2 and f.expected == "an odd number of etcd hosts (1, 3, 5)"
    assert "Kubespray stops on 'even number of etcd hosts'" in f.message


def test_empty_etcd_is_an_error_unless_kubeadm_etcd() -> None:
    hosts = [host("cp1", ["control_plane"], 1), host("w1", ["worker"], 2)]
    assert "etcd_empty" in rules(validate_inventory(hosts, render_group_vars()))
    kubeadm = validate_inventory(hosts, {**render_group_vars(), "etcd_deployment_type": "kubeadm"})
    assert rules(kubeadm) == []


def test_duplicate_hosts_and_addresses() -> None:
    findings = validate_inventory([*GOOD, host("w1", ["worker"], 9)], render_group_vars())
    f = only(findings, "duplicate_host")
    assert f.key == "hosts[3].name" and f.value == "w1"
    assert f.message == "duplicate host 'w1' (also hosts[1]); each inventory host must appear once"
    same_ip = [GOOD[0], {**GOOD[1], "ip": "10.0.0.1"}]
    f = only(validate_inventory(same_ip, render_group_vars()), "duplicate_address")
    assert f.message == "'w1' and 'cp1' share ip 10.0.0.1" and f.key == "hosts[1].ip"
    same_ssh = [GOOD[0], {**GOOD[1], "ansible_host": "192.0.2.1"}]
    f = only(validate_inventory(same_ssh, render_group_vars()), "duplicate_endpoint")
    assert f.severity == "warning" and f.value == "192.0.2.1:22"


def test_bad_hostname_roles_and_addresses() -> None:
    findings = validate_inventory(
        [{**GOOD[0], "name": "CP_1"}, {**GOOD[1], "roles": ["router"]}, {**GOOD[2], "access_ip": "10.0.0.300"}],
        render_group_vars(),
    )
    assert only(findings, "hostname").value == "CP_1"
    assert "unknown role 'router'" in only(findings, "host_roles").message
    f = only(findings, "host_address")
    assert f.key == "hosts[2].access_ip" and f.message == "access_ip of 'w2' is not an IP address"


def test_overlapping_cidrs() -> None:
    gv = render_group_vars({"kube_service_addresses": "10.233.0.0/16", "kube_pods_subnet": "10.233.64.0/18"})
    f = only(validate_inventory(GOOD, gv), "cidr_overlap")
    assert f.key == "kube_pods_subnet" and f.file == "group_vars/all/cni-runbook.yml"
    assert f.message == "kube_pods_subnet overlaps kube_service_addresses"
    assert f.expected == "a range disjoint from kube_service_addresses 10.233.0.0/16"


def test_invalid_cidrs() -> None:
    gv = render_group_vars({"kube_service_addresses": "10.233.0.1/18", "kube_pods_subnet": "banana"})
    findings = [f for f in validate_inventory(GOOD, gv) if f.rule == "cidr"]
    assert [f.key for f in findings] == ["kube_service_addresses", "kube_pods_subnet"]
    assert findings[0].message == "kube_service_addresses = '10.233.0.1/18' is not a valid network range; did you mean 10.233.0.0/18?"
    assert findings[1].message == "kube_pods_subnet = 'banana' is not a valid network range"


def test_node_prefix_capacity() -> None:
    hosts = [host("cp1", ["control_plane", "etcd"], 1), *[host(f"w{i}", ["worker"], 10 + i) for i in range(4)]]
    gv = render_group_vars({"kube_pods_subnet": "10.233.64.0/22", "kube_network_node_prefix": 24})
    f = only(validate_inventory(hosts, gv), "node_capacity")
    assert f.value == 24 and f.expected == ">= 5 node subnets (one per k8s_cluster host)"
    assert f.message.startswith("10.233.64.0/22 split into /24 gives 4 node subnet(s) for 5 nodes")
    gv = render_group_vars({"kube_pods_subnet": "10.233.64.0/22", "kube_network_node_prefix": 20})
    assert only(validate_inventory(hosts, gv), "node_prefix").expected == "between 22 (the kube_pods_subnet prefix) and 32"


def test_kubelet_max_pods_against_node_prefix() -> None:
    gv = {**render_group_vars({"kube_network_plugin": "cni", "kube_network_node_prefix": 25}), "kubelet_max_pods": 200}
    f = only(validate_inventory(GOOD, gv), "max_pods")
    assert f.severity == "error" and f.expected == "<= 126 for a /25"
    assert f.message == "do not schedule more pods on a node than inet addresses are available"
    gv["kube_network_plugin"] = "none"
    f = only(validate_inventory(GOOD, gv), "max_pods")
    assert f.severity == "warning" and "Kubespray skips this check for 'none'" in f.message
    assert "max_pods" not in rules(validate_inventory(GOOD, {**gv, "kubelet_max_pods": 110}), "warning")


def test_unknown_and_non_runbook_plugins_and_other_choices() -> None:
    gv = {**render_group_vars(), "kube_network_plugin": "weave", "dns_mode": "kube-dns",
          "kube_proxy_mode": "userspace", "container_manager": "podman"}
    findings = validate_inventory(GOOD, gv)
    by_key = {f.key: f for f in findings if f.rule == "allowed_value"}
    assert set(by_key) == {"kube_network_plugin", "dns_mode", "kube_proxy_mode", "container_manager"}
    assert by_key["kube_network_plugin"].message == "kube_network_plugin 'weave' is not supported by Kubespray v2.31"
    assert "custom_cni | none" in by_key["kube_network_plugin"].expected
    assert by_key["dns_mode"].expected == "coredns | coredns_dual | manual | none"
    calico = validate_inventory(GOOD, {**render_group_vars(), "kube_network_plugin": "calico"})
    assert only(calico, "runbook_plugin").message.startswith("this runbook installs the CNI itself")
    assert validate_inventory(GOOD, {**render_group_vars(), "kube_network_plugin": "calico"}, runbook_rules=False) == []


def test_string_booleans() -> None:
    gv = {**render_group_vars(), "kube_proxy_remove": "true", "download_run_once": "yes"}
    findings = [f for f in validate_inventory(GOOD, gv) if f.rule == "boolean"]
    assert [f.key for f in findings] == ["download_run_once", "kube_proxy_remove"]
    assert findings[1].message == ("kube_proxy_remove must be a real boolean, not str 'true'; "
                                   "Kubespray treats a string as truthy")
    assert findings[1].expected == "true or false (a YAML boolean)"


def test_kubeconfig_localhost_must_be_true() -> None:
    f = only(validate_inventory(GOOD, {**render_group_vars(), "kubeconfig_localhost": False}), "kubeconfig_localhost")
    assert "artifacts/admin.conf" in f.message and f.expected == "true"


def test_kube_version_minimum_and_format() -> None:
    old = only(validate_inventory(GOOD, {**render_group_vars(), "kube_version": "1.32.9"}), "kube_version")
    assert old.expected == ">= 1.33.0" and old.value == "1.32.9"
    vee = only(validate_inventory(GOOD, {**render_group_vars(), "kube_version": "v1.35.4"}), "kube_version")
    assert vee.expected == "1.35.4"
    assert validate_inventory(GOOD, {**render_group_vars(), "kube_version": "1.35.4"}) == []


def test_removed_variable_and_custom_cni_without_manifests() -> None:
    gv = {**render_group_vars({"kube_network_plugin": "custom_cni"}), "kubelet_static_pod_path": "/etc/k"}
    findings = validate_inventory(GOOD, gv)
    assert only(findings, "removed_var").message == "kubelet_static_pod_path was removed in Kubespray v2.31.0"
    assert "custom_cni_manifests should not be empty" in only(findings, "custom_cni").message


def test_trap_ha_control_plane_without_cni() -> None:
    hosts = [host(f"cp{i}", ["control_plane", "etcd"], i) for i in range(1, 4)]
    f = only(trap_warnings(hosts, render_group_vars(), kubespray_version="2.31.0"), "trap_ha_no_cni")
    assert f.severity == "warning" and "PR 13280" in f.message and f.value == 3
    assert trap_warnings(hosts, render_group_vars(), kubespray_version="2.32.0") == []
    assert trap_warnings(GOOD, render_group_vars(), kubespray_version="2.31.0") == []
    custom = render_group_vars({"kube_network_plugin": "custom_cni"}, {"custom_cni_manifests": []})
    assert trap_warnings(hosts, custom, kubespray_version="2.31.0") == []


def test_trap_server_certificate_rotation_with_none() -> None:
    gv = {**render_group_vars(), "kubelet_rotate_server_certificates": True}
    f = only(trap_warnings(GOOD, gv), "trap_rotate_server_certs")
    assert "issue 10320" in f.message
    assert trap_warnings(GOOD, {**gv, "kube_network_plugin": "cni"}) == []


def test_trap_jinja_in_custom_manifests(tmp_path: Path) -> None:
    (tmp_path / "plain.yml").write_text("kind: ConfigMap\ndata:\n  a: b\n")
    (tmp_path / "templated.yml").write_text("kind: ConfigMap\ndata:\n  tpl: '{{ .Values.x }}'\n")
    gv = render_group_vars({"kube_network_plugin": "custom_cni"},
                           {"custom_cni_manifests": ["plain.yml", "templated.yml", "missing.yml"]})
    findings = trap_warnings(GOOD, gv, manifests_dir=tmp_path)
    jinja = only(findings, "trap_jinja_in_manifest")
    assert jinja.file == str(tmp_path / "templated.yml") and jinja.key == "line 3"
    assert "Kubespray renders custom_cni_manifests with Ansible 'template'" in jinja.message
    missing = only(findings, "custom_cni_manifest")
    assert missing.severity == "error" and missing.key == "custom_cni_manifests[2]"


def test_controller_against_the_double_and_a_wrong_ansible(tmp_path: Path) -> None:
    spec, source = ansible_core_requirement(DOUBLE)
    assert str(spec) == "<2.19.0,>=2.18.0" and source.endswith("requirements.txt")
    assert validate_controller(DOUBLE) == []  # the venv pins ansible==11.13.0 (ansible-core 2.18.x)
    [f] = validate_controller(DOUBLE, ansible_core_version="2.19.4")
    assert f.rule == "ansible_core" and f.value == "2.19.4" and f.expected == "ansible-core<2.19.0,>=2.18.0"
    assert f.file.endswith("requirements.txt")
    empty = tmp_path / "not-kubespray"
    empty.mkdir()
    f = only(validate_controller(empty, ansible_core_version="2.18.1"), "kubespray_playbook")
    assert f.message == f"{empty} has no cluster.yml: not a Kubespray checkout (or the wrong folder)"
    assert only(validate_controller(tmp_path / "nope"), "kubespray_dir").message == "kubespray_dir does not exist"


def test_controller_prefers_the_checkouts_ansible_version_playbook(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "ansible_version.yml").write_text(
        "- hosts: all\n  vars:\n    minimal_ansible_version: 2.17.3\n    maximal_ansible_version: 2.18.0\n"
    )
    (tmp_path / "cluster.yml").write_text("[]\n")
    spec, source = ansible_core_requirement(tmp_path)
    assert str(spec) == "<2.18.0,>=2.17.3" and source.endswith("ansible_version.yml")
    assert only(validate_controller(tmp_path, ansible_core_version="2.18.19"), "ansible_core").expected == "ansible-core<2.18.0,>=2.17.3"


def test_validate_all_orders_errors_first_and_raises() -> None:
    gv = {**render_group_vars(), "kubelet_rotate_server_certificates": True, "kube_proxy_remove": "false"}
    findings = validate_all(GOOD, gv, kubespray_dir=DOUBLE)
    assert [f.severity for f in findings] == ["error", "warning"]
    frame = findings_frame(findings)
    assert list(frame.columns) == ["severity", "rule", "file", "key", "value", "expected", "message"]
    with pytest.raises(ValidationFailed, match=r"1 error\(s\) before Kubespray starts:\n  error: group_vars/all/cni-runbook.yml: kube_proxy_remove = 'false'"):
        raise_for_errors(findings)
    assert raise_for_errors(validate_all(GOOD, render_group_vars(), kubespray_dir=DOUBLE)) == []
