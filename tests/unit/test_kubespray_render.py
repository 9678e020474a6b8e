"""Inventory and group_vars rendering for Kubespray v2.31."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cni_runbook.kubespray import (
    ClusterVars,
    Host,
    InventoryError,
    ManagedKeyOverride,
    group_members,
    hosts_from_inventory,
    render_group_vars,
    render_inventory,
    write_inventory_dir,
)

HOSTS = [
    {"name": "cp1", "ansible_host": "192.0.2.11", "ip": "10.0.0.11", "access_ip": "10.0.0.11",
     "roles": ["control_plane", "etcd"], "ansible_user": "root", "ansible_ssh_private_key_file": "/keys/id_ed25519"},
    {"name": "w1", "ansible_host": "192.0.2.21", "ip": "10.0.0.21", "roles": ["worker"], "ansible_user": "root",
     "ansible_ssh_private_key_file": "/keys/id_ed25519"},
    Host("w2", "192.0.2.22", ("kube_node",), ip="10.0.0.22", ansible_port=2222, vars={"node_labels": {"zone": "b"}}),
]


def test_inventory_groups_and_host_vars() -> None:
    inv = render_inventory(HOSTS)
    children = inv["all"]["children"]
    assert list(children) == ["kube_control_plane", "kube_node", "etcd", "k8s_cluster"]
    assert list(children["kube_control_plane"]["hosts"]) == ["cp1"]
    assert list(children["kube_node"]["hosts"]) == ["w1", "w2"]
    assert list(children["etcd"]["hosts"]) == ["cp1"]
    assert children["k8s_cluster"] == {"children": {"kube_control_plane": None, "kube_node": None}}
    assert inv["all"]["hosts"]["cp1"] == {
        "ansible_host": "192.0.2.11", "ip": "10.0.0.11", "access_ip": "10.0.0.11", "ansible_user": "root",
        "ansible_ssh_private_key_file": "/keys/id_ed25519",
    }
    assert inv["all"]["hosts"]["w2"] == {"ansible_host": "192.0.2.22", "ip": "10.0.0.22", "ansible_port": 2222,
                                         "node_labels": {"zone": "b"}}
    assert group_members(inv)["k8s_cluster"] == ["cp1", "w1", "w2"]


def test_written_files_round_trip_and_hold_only_the_key_path(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    hosts = [{**HOSTS[0], "ansible_ssh_private_key_file": str(key)}]
    files = write_inventory_dir(tmp_path / "inv", hosts, ClusterVars(kube_network_plugin="cni"))
    text = files.inventory.read_text()
    assert str(key) in text and "PRIVATE KEY" not in text
    loaded = yaml.safe_load(text)
    back = hosts_from_inventory(loaded)
    assert [(h.name, h.groups, h.ip) for h in back] == [("cp1", ("kube_control_plane", "etcd"), "10.0.0.11")]
    assert files.group_vars == tmp_path / "inv" / "group_vars" / "all" / "cni-runbook.yml"
    assert yaml.safe_load(files.group_vars.read_text())["kube_network_plugin"] == "cni"


def test_render_refuses_duplicates_unknown_roles_and_managed_host_vars() -> None:
    with pytest.raises(InventoryError, match="duplicate host 'cp1'"):
        render_inventory([HOSTS[0], HOSTS[0]])
    with pytest.raises(InventoryError, match="unknown role 'router'"):
        render_inventory([{**HOSTS[0], "roles": ["router"]}])
    with pytest.raises(InventoryError, match="set ip as host fields, not under vars"):
        render_inventory([{**HOSTS[0], "vars": {"ip": "10.9.9.9"}}])
    with pytest.raises(InventoryError, match="unknown field.*ssh_key"):
        render_inventory([{**HOSTS[0], "ssh_key": "-----BEGIN"}])


def test_group_vars_defaults_match_kubespray_v231_except_the_plugin() -> None:
    assert render_group_vars() == {
        "kube_network_plugin": "none",
        "kube_service_addresses": "10.233.0.0/18",
        "kube_pods_subnet": "10.233.64.0/18",
        "kube_network_node_prefix": 24,
        "kube_proxy_mode": "ipvs",
        "kube_proxy_remove": False,
        "kubeconfig_localhost": True,
    }


def test_group_vars_extras_and_managed_keys() -> None:
    merged = render_group_vars({"kube_network_plugin": "custom_cni", "kube_proxy_remove": True},
                               {"custom_cni_manifests": ["/m/antrea.yml"], "kube_proxy_mode": "ipvs"})
    assert merged["custom_cni_manifests"] == ["/m/antrea.yml"] and merged["kube_proxy_remove"] is True
    with pytest.raises(ManagedKeyOverride, match=r"kubespray.extra_vars.kube_proxy_mode: 'iptables' would override 'ipvs', "
                                                 r"set kubespray.kube_proxy_mode instead"):
        render_group_vars(None, {"kube_proxy_mode": "iptables"})
    allowed = render_group_vars(None, {"kube_proxy_mode": "iptables"}, allow_override=["kube_proxy_mode"])
    assert allowed["kube_proxy_mode"] == "iptables"
    assert render_group_vars(None, {"kubeconfig_localhost": False}, allow_override=True)["kubeconfig_localhost"] is False
    with pytest.raises(ValueError, match="'calico' is not supported here: use one of none, cni, custom_cni"):
        render_group_vars({"kube_network_plugin": "calico"})
    with pytest.raises(ValueError, match="unknown cluster variable.*kube_pod_subnet"):
        render_group_vars({"kube_pod_subnet": "10.0.0.0/16"})
