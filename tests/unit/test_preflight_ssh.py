"""The preflight playbook for real: ansible-runner over SSH to a loopback sshd on this machine.

This kernel (a monolithic VM kernel with /proc/config.gz) has no openvswitch, while ifb, sch_tbf
and sch_ingress are built in; no systemd runs here and no ping binary is installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_runbook.preflight import check_names, evaluate, run_preflight
from conftest_ssh import global_ipv4, loopback_ssh  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def preflight(loopback_ssh, tmp_path_factory):  # noqa: F811
    ip = global_ipv4()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address on this machine to use as the node's ip")
    inventory = {
        "all": {
            "hosts": {"node1": loopback_ssh.host_vars(ip=ip, access_ip="127.0.0.1")},
            "children": {
                "kube_control_plane": {"hosts": {"node1": None}},
                "etcd": {"hosts": {"node1": None}},
                "kube_node": {"hosts": {"node1": None}},
            },
        }
    }
    return run_preflight(inventory, tmp_path_factory.mktemp("run"), profile="antrea", envvars=loopback_ssh.envvars)


def status(report, check: str) -> tuple[str, str]:
    [row] = [r for r in report.rows if r.node == "node1" and r.check == check]
    return row.status, row.seen


def test_the_run_reports_every_check(preflight) -> None:
    assert preflight.ansible.ok, preflight.ansible.summary()
    assert list(preflight.reports) == ["node1"]
    assert [r.check for r in preflight.report.rows] == check_names("antrea")


def test_memory_passes_with_the_real_value(preflight) -> None:
    real_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    state, seen = status(preflight.report, "memory")
    assert state == "pass"
    assert abs(int(seen.split()[0]) - real_mb) <= 2
    [row] = [r for r in preflight.report.rows if r.check == "memory"]
    assert row.required == ">= 1500 MB"  # a control-plane node


def test_openvswitch_fails_for_antrea_while_qos_modules_pass(preflight) -> None:
    assert status(preflight.report, "module_openvswitch") == ("fail", "not available (CONFIG_OPENVSWITCH is not set)")
    assert status(preflight.report, "module_ifb") == ("pass", "built-in (CONFIG_IFB=y)")
    assert status(preflight.report, "module_sch_tbf") == ("pass", "built-in (CONFIG_NET_SCH_TBF=y)")
    assert status(preflight.report, "module_sch_ingress") == ("pass", "built-in (CONFIG_NET_SCH_INGRESS=y)")
    assert not preflight.report.ok


def test_a_waiver_turns_the_failure_into_waived(preflight) -> None:
    waived = evaluate(preflight.reports, profile="antrea", waivers=["module_openvswitch", "systemd"])
    assert status(waived, "module_openvswitch")[0] == "waived"
    assert {(r.node, r.check) for r in waived.waived} == {("node1", "module_openvswitch"), ("node1", "systemd")}
    assert waived.ok, waived.summary()
    assert waived.matrix().loc["node1", "module_openvswitch"] == "waived"


def test_host_facts_seen_for_real(preflight) -> None:
    ip = global_ipv4()
    assert status(preflight.report, "ip_local")[0] == "pass" and ip in status(preflight.report, "ip_local")[1]
    assert status(preflight.report, "access_ip") == ("pass", "127.0.0.1: answers (icmp)")
    servers = [l.split()[1] for l in Path("/etc/resolv.conf").read_text().splitlines() if l.startswith("nameserver")]
    assert status(preflight.report, "nameservers") == ("pass", ", ".join(servers))
    assert status(preflight.report, "br_netfilter")[0] == "pass"
    assert status(preflight.report, "time_sync")[0] in ("pass", "warn")  # adjtimex: this VM's clock state
    assert status(preflight.report, "time_sync")[1].startswith("adjtimex: ")
    assert status(preflight.report, "systemd")[0] == "fail"  # no systemd runs in this VM


def test_the_lab_profile_on_this_machine(preflight) -> None:
    lab = evaluate(preflight.reports, profile="lab")
    assert "systemd" not in lab.matrix().columns and "module_openvswitch" not in lab.matrix().columns
    failing = {r.check for r in lab.failures}
    assert failing <= {c for c in check_names("lab") if c.startswith("port_")}, lab.summary()


def test_a_listening_port_fails_its_check(preflight, loopback_ssh) -> None:  # noqa: F811
    # sshd itself listens on the fixture's port: declare it a required-free port and see it fail.
    from dataclasses import replace

    from cni_runbook.preflight.checks import PROFILES, Ports, evaluate_host

    profile = replace(PROFILES["generic"], ports=(Ports("port_sshd_tcp", loopback_ssh.port, loopback_ssh.port, "tcp", (), "test"),))
    [row] = [r for r in evaluate_host({"inventory_hostname": "node1", **preflight.reports["node1"]}, profile)
             if r.check == "port_sshd_tcp"]
    # real `ss -p` over real SSH names the process that holds the port
    assert (row.status, row.seen) == ("fail", f"in use: {loopback_ssh.port}/tcp by sshd")
