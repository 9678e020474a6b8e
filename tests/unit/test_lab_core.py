"""Lab pieces that run without root: config, PKI, component configs, the supervisor."""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from cni_runbook.lab import components, pki
from cni_runbook.lab.build import _ldflags, missing_binaries
from cni_runbook.lab.config import K8S_VERSION, LabConfig
from cni_runbook.lab.supervisor import Supervisor


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("CNI_RUNBOOK_LAB_INDEX", "6")
    return LabConfig(state_dir=tmp_path / "state")


def test_instances_do_not_share_names_or_addresses(tmp_path):
    a, b = LabConfig(index=0, state_dir=tmp_path / "a"), LabConfig(index=4, state_dir=tmp_path / "b")
    assert a.bridge != b.bridge and a.network != b.network
    assert {n.netns for n in a.nodes}.isdisjoint(n.netns for n in b.nodes)
    assert {n.host_veth for n in a.nodes}.isdisjoint(n.host_veth for n in b.nodes)
    assert all(len(n.host_veth) <= 15 for n in a.nodes + b.nodes)
    assert b.api_server == "https://10.99.4.11:6443" and b.registry_addr == "10.99.4.1:5000"


def test_index_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CNI_RUNBOOK_LAB_INDEX", "3")
    assert LabConfig().bridge == "cnilab3"
    monkeypatch.setenv("CNI_RUNBOOK_LAB_INDEX", "x")
    with pytest.raises(ValueError, match="CNI_RUNBOOK_LAB_INDEX must be a digit"):
        LabConfig()


def test_kubernetes_services_ip_and_dns_follow_kubespray_defaults(cfg):
    assert cfg.kubernetes_service_ip == IPv4Address("10.233.0.1")
    assert cfg.cluster_dns == IPv4Address("10.233.0.3")
    assert str(cfg.pod_cidr) == "10.233.64.0/18" and cfg.node_prefix == 24


def test_pki_issues_a_verifiable_chain_with_the_api_sans(cfg):
    certs = pki.generate(cfg)
    ca = x509.load_pem_x509_certificate(certs["ca"].cert.read_bytes())
    api = x509.load_pem_x509_certificate(certs["apiserver"].cert.read_bytes())
    api.verify_directly_issued_by(ca)
    sans = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {str(cfg.control_plane.ip), "10.233.0.1"} <= ips
    kubelet = x509.load_pem_x509_certificate(certs["kubelet-lab-w1"].cert.read_bytes())
    subject = {a.oid._name: a.value for a in kubelet.subject}
    assert subject == {"organizationName": "system:nodes", "commonName": "system:node:lab-w1"}
    for pair in certs.values():
        assert oct(pair.key.stat().st_mode & 0o777) == "0o600", pair.key
    # the key and certificate really belong together
    ssl.create_default_context().load_cert_chain(str(certs["admin"].cert), str(certs["admin"].key))


def test_pki_is_idempotent(cfg):
    first = pki.generate(cfg)["apiserver"].cert.read_bytes()
    assert pki.generate(cfg)["apiserver"].cert.read_bytes() == first


def test_kubeconfig_embeds_credentials_and_is_private(cfg):
    certs = pki.generate(cfg)
    path = pki.write_kubeconfig(cfg.state_dir / "x.conf", cfg.api_server, cfg.pki_dir / "ca.crt", certs["admin"], "u")
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == cfg.api_server
    assert doc["users"][0]["user"]["client-key-data"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_node_configs(cfg, monkeypatch):
    monkeypatch.setattr(components, "nsenter_prefix", lambda c, n: ["nsenter", n.name, "--"])
    certs = pki.generate(cfg)
    node = cfg.node("lab-w2")
    comps = components.node_components(cfg, node, certs)
    assert [c["name"] for c in comps] == ["containerd-lab-w2", "kubelet-lab-w2", "kube-proxy-lab-w2"]
    etc = cfg.node_dir(node) / "etc-kubernetes"
    kubelet = yaml.safe_load((etc / "kubelet-config.yaml").read_text())
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupRoot"] == "/cnilab6/lab-w2"
    assert kubelet["clusterDNS"] == ["10.233.0.3"]
    proxy = yaml.safe_load((etc / "kube-proxy.yaml").read_text())
    assert proxy["mode"] == "iptables" and proxy["conntrack"]["maxPerCore"] == 0
    toml = (cfg.node_dir(node) / "etc-containerd" / "config.toml").read_text()
    assert "restrict_oom_score_adj = true" in toml and "pause:3.10.1" in toml
    hosts_toml = next((cfg.node_dir(node) / "etc-containerd" / "certs.d").rglob("hosts.toml")).read_text()
    assert f'server = "http://{cfg.registry_addr}"' in hosts_toml
    path = comps[0]["env"]["PATH"].split(":")
    assert path[0].endswith("bin-legacy") and os.readlink(Path(path[0]) / "iptables") == "/usr/sbin/iptables-legacy"


def test_version_is_stamped_into_the_binaries():
    flags = _ldflags()
    assert f"k8s.io/component-base/version.gitVersion={K8S_VERSION}" in flags
    assert "gitMinor=35" in flags


def test_missing_binaries_lists_what_is_not_built(tmp_path):
    (tmp_path / "kubelet").write_text("")
    missing = missing_binaries(tmp_path)
    assert "kubelet" not in missing and "kube-apiserver" in missing and "etcd" in missing


def _status(state: Path) -> dict:
    return {c["name"]: c for c in json.loads((state / "status.json").read_text())["components"]}


def test_supervisor_restarts_a_crashed_component_and_stops_everything(tmp_path):
    state = tmp_path
    (state / "components.json").write_text(json.dumps([
        {"name": "steady", "argv": [sys.executable, "-c", "import time; time.sleep(60)"]},
        {"name": "crashy", "argv": [sys.executable, "-c", "print('bye'); raise SystemExit(3)"]},
    ]))
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "cni_runbook.lab.supervisor", str(state)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (state / "status.json").exists() and _status(state)["crashy"]["restarts"] >= 2:
                break
            time.sleep(0.2)
        status = _status(state)
        assert status["crashy"]["restarts"] >= 2 and status["crashy"]["last_exit"] == 3
        assert status["steady"]["state"] == "running" and status["steady"]["restarts"] == 0
        steady_pid = status["steady"]["pid"]
        assert "bye" in (state / "logs" / "crashy.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert not Path(f"/proc/{steady_pid}").exists() or "Z" in Path(f"/proc/{steady_pid}/stat").read_text().split()[2]
    assert not (state / "status.json").exists()


def test_supervisor_requires_a_state_dir(capsys):
    from cni_runbook.lab.supervisor import main

    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_supervisor_object_reload_adds_new_components(tmp_path):
    (tmp_path / "components.json").write_text(json.dumps([{"name": "a", "argv": ["true"]}]))
    sup = Supervisor(tmp_path)
    sup.load()
    (tmp_path / "components.json").write_text(json.dumps([{"name": "a", "argv": ["true"]}, {"name": "b", "argv": ["true"]}]))
    sup.load()
    assert list(sup.children) == ["a", "b"]


def test_lab_errors_reach_the_operator_without_a_traceback(monkeypatch, capsys, tmp_path):
    from cni_runbook import cli

    monkeypatch.setenv("CNI_RUNBOOK_LAB_STATE", str(tmp_path / "state"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["lab", "up"]) == 1
    err = capsys.readouterr().err
    assert "run it as root" in err and "Traceback" not in err


def test_heartbeat_speaks_while_the_block_runs_and_stops_after_it():
    """A long compile prints nothing of its own: the heartbeat says it is still going, and goes
    quiet once the block ends."""
    import time

    from cni_runbook.lab.sysutil import heartbeat

    said: list[str] = []
    with heartbeat(said.append, "compiling", every=0.05):
        time.sleep(0.3)
    count = len(said)
    time.sleep(0.2)
    assert count >= 2 and len(said) == count
    assert said[0] == "still compiling (0 min so far)"
