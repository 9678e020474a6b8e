"""cluster.yml through the ansible-runner wrapper, for real over SSH, against the contract double.

Kubespray itself cannot exist on these machines; tests/doubles/kubespray is a clearly named
contract double that asserts what Kubespray reads and writes artifacts/admin.conf.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from cni_runbook.kubespray import (
    ClusterVars,
    fetch_admin_conf,
    raise_for_errors,
    run_kubespray,
    validate_all,
    write_inventory_dir,
)
from conftest_ssh import global_ipv4, loopback_ssh  # noqa: F401  (fixture)

DOUBLE = Path(__file__).resolve().parents[1] / "doubles" / "kubespray"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: admin, user: {token: not-a-real-token}}]
contexts: [{name: admin@lab, context: {cluster: lab, user: admin}}]
current-context: admin@lab
"""


def one_node(ssh) -> list[dict]:
    # One node holding every role, reached through the loopback sshd. `ip` must be a non-loopback
    # local address (Ansible leaves loopback out of ansible_all_ipv4_addresses); it is only
    # compared, never contacted. access_ip is 127.0.0.1.
    ip = global_ipv4()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address on this machine to use as the node's ip")
    return [{"name": "node1", "roles": ["control_plane", "etcd", "worker"], "ansible_host": ssh.host,
             "ansible_port": ssh.port, "ansible_user": ssh.user, "ansible_ssh_private_key_file": str(ssh.private_key),
             "ip": ip, "access_ip": "127.0.0.1", "vars": {"ansible_python_interpreter": "/usr/bin/python3"}}]


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "lab-admin.conf"
    path.write_text(KUBECONFIG)
    return path


def test_cluster_yml_runs_and_admin_conf_lands_in_state(tmp_path: Path, kubeconfig: Path, loopback_ssh, capsys) -> None:  # noqa: F811
    hosts = one_node(loopback_ssh)
    files = write_inventory_dir(tmp_path / "run" / "inventory", hosts, ClusterVars(kube_network_plugin="none"))
    findings = validate_all(hosts, files.group_vars_data, kubespray_dir=DOUBLE)
    assert raise_for_errors(findings) == []

    extra = tmp_path / "extra.yml"
    extra.write_text(yaml.safe_dump({"kubespray_double_admin_conf": str(kubeconfig)}))
    run = run_kubespray(DOUBLE, files.inventory, tmp_path / "run", extravars_files=[extra], become=False,
                        envvars=loopback_ssh.envvars, redact=lambda t: t.replace("not-a-real-token", "***"))
    assert run.ok, run.ansible.summary() + "\n" + run.ansible.failed_tasks().to_string()
    recap = run.ansible.recap()
    assert list(recap.index) == ["node1"]
    # changed: artifacts dir + admin.conf; skipped: the custom_cni network step, both modes (plugin none)
    assert recap.loc["node1"].to_dict() == {"ok": 10, "changed": 2, "failed": 0, "unreachable": 0, "skipped": 14,
                                            "rescued": 0, "ignored": 0}
    assert run.ansible.private_data_dir.parent == tmp_path / "run" / "ansible"

    assert run.admin_conf == tmp_path / "run" / "state" / "admin.conf"
    assert stat.S_IMODE(run.admin_conf.stat().st_mode) == 0o600
    assert run.admin_conf.read_text() == KUBECONFIG
    written = files.inventory_dir / "artifacts" / "admin.conf"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    # Never printed, and not in the audit copy of the run either.
    assert "not-a-real-token" not in capsys.readouterr().out
    for path in run.ansible.private_data_dir.rglob("*"):
        if path.is_file():
            assert "not-a-real-token" not in path.read_text(errors="ignore"), path


def test_the_double_rejects_what_kubespray_would(tmp_path: Path, kubeconfig: Path, loopback_ssh) -> None:  # noqa: F811
    hosts = one_node(loopback_ssh)
    files = write_inventory_dir(tmp_path / "inv", hosts, ClusterVars(kube_pods_subnet="10.233.0.0/20"))
    run = run_kubespray(DOUBLE, files.inventory, tmp_path, become=False, envvars=loopback_ssh.envvars,
                        extravars={"kubespray_double_admin_conf": str(kubeconfig)})
    assert not run.ok and run.admin_conf is None
    failed = run.ansible.failed_tasks()
    # A pod range inside the service range: Kubespray's own assert (and the double's) catches it.
    assert failed[["host", "task"]].values.tolist() == [["node1", "Variables Kubespray reads"]]
    assert "kube_pods_subnet=10.233.0.0/20" in failed.loc[0, "message"]


def test_fetch_admin_conf_explains_a_missing_file_and_tightens_mode(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all: {}\n")
    with pytest.raises(FileNotFoundError, match="kubeconfig_localhost true"):
        fetch_admin_conf(inventory, tmp_path / "state")
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "admin.conf").write_text(KUBECONFIG)
    stale = tmp_path / "state" / "admin.conf"
    stale.parent.mkdir()
    stale.write_text("old")
    stale.chmod(0o644)
    copied = fetch_admin_conf(inventory, tmp_path / "state")
    assert copied == stale and stat.S_IMODE(copied.stat().st_mode) == 0o600 and copied.read_text() == KUBECONFIG
