"""Evaluation of preflight facts, rule by rule, from hand-written reports."""

from __future__ import annotations

import pytest

from cni_runbook.preflight import PreflightFailed, check_names, evaluate
from cni_runbook.preflight.checks import module_state, parse_kconfig, parse_listening, parse_modules

MODULES = "\n".join([
    "module=openvswitch loaded=no sysfs=no builtin=no file=none modprobe_rc=1 modprobe=modprobe:_FATAL:_Module_openvswitch_not_found",
    "module=ifb loaded=yes sysfs=yes builtin=no file=/lib/modules/6.1/ifb.ko modprobe_rc=0 modprobe=",
    "module=sch_tbf loaded=no sysfs=no builtin=no file=/lib/modules/6.1/sch_tbf.ko.xz modprobe_rc=0 modprobe=insmod",
    "module=sch_ingress loaded=no sysfs=no builtin=yes file=none modprobe_rc=0 modprobe=",
    "module=br_netfilter loaded=no sysfs=no builtin=no file=none modprobe_rc=1 modprobe=",
    "proc_modules=yes lib_modules=yes",
])


def report(**over) -> dict:
    base = {
        "groups": ["kube_control_plane", "etcd", "kube_node"],
        "ip": "10.0.0.1",
        "access_ip": "10.0.0.1",
        "ping_target": "10.0.0.1",
        "facts": {"system": "Linux", "kernel": "6.1.0-18-amd64", "distribution": "Debian", "distribution_version": "12",
                  "service_mgr": "systemd", "memtotal_mb": 4096, "swaptotal_mb": 0, "hostname": "cp1",
                  "all_ipv4_addresses": ["10.0.0.1"], "all_ipv6_addresses": []},
        "outputs": {"modules": MODULES, "kconfig": "", "sysctl": "ip_forward=1\nbridge_nf_call_iptables=1",
                    "resolv_conf": "search lan\nnameserver 10.0.0.53\n", "time": "source=timedatectl synchronized=yes",
                    "ports": "tcp 0.0.0.0:22\ntcp [::]:22\nudp 127.0.0.1:323", "ping": "method=ping answered=yes"},
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            base[section] = {**base[section], name: value}
        else:
            base[section] = value
    return base


def cell(result, check: str, node: str = "cp1") -> tuple[str, str]:
    [row] = [r for r in result.rows if r.node == node and r.check == check]
    return row.status, row.seen


def test_a_healthy_generic_node_passes_everything() -> None:
    result = evaluate({"cp1": report()}, profile="generic")
    assert [r.check for r in result.rows] == check_names("generic")
    assert {r.status for r in result.rows} == {"pass"}, result.summary()
    assert result.ok


def test_module_states() -> None:
    probes, env = parse_modules(MODULES)
    assert module_state("ifb", probes, env, {}) == ("pass", "loaded")
    assert module_state("sch_tbf", probes, env, {}) == ("pass", "loadable (modprobe -n)")
    assert module_state("sch_ingress", probes, env, {}) == ("pass", "built-in")
    assert module_state("openvswitch", probes, env, {}) == ("fail", "not available (modprobe: FATAL: Module openvswitch not found)")
    assert module_state("openvswitch", probes, env, {"OPENVSWITCH": "m"}) == ("fail", "CONFIG_OPENVSWITCH=m but no module file for this kernel")
    assert module_state("openvswitch", {}, {"proc_modules": "no", "lib_modules": "no"}, {}) == (
        "warn", "unknown (no kernel config, /proc/modules or /lib/modules to read)")
    assert parse_kconfig("CONFIG_IFB=y\n# CONFIG_OPENVSWITCH is not set\nCONFIG_VXLAN=m") == {"IFB": "y", "OPENVSWITCH": "n", "VXLAN": "m"}


def test_antrea_needs_openvswitch_and_a_waiver_is_recorded() -> None:
    result = evaluate({"cp1": report()}, profile="antrea")
    assert cell(result, "module_openvswitch")[0] == "fail"
    with pytest.raises(PreflightFailed, match=r"1 preflight check\(s\) failed .*\n  cp1: module_openvswitch: seen not available"):
        result.raise_for_failures()
    waived = evaluate({"cp1": report()}, profile="antrea", waivers=["module_openvswitch"])
    assert cell(waived, "module_openvswitch")[0] == "waived" and waived.ok
    assert [(r.node, r.check, r.waived_by) for r in waived.waived] == [("cp1", "module_openvswitch", "module_openvswitch")]
    with pytest.raises(ValueError, match="unknown waiver.*module_openvswich for profile antrea"):
        evaluate({"cp1": report()}, profile="antrea", waivers=["module_openvswich"])
    with pytest.raises(ValueError, match="unknown preflight profile 'calico'"):
        evaluate({"cp1": report()}, profile="calico")


def test_memory_depends_on_the_role() -> None:
    worker = report(groups=["kube_node"], facts__memtotal_mb=1200)
    control = report(facts__memtotal_mb=1200)
    result = evaluate({"w1": worker, "cp1": control})
    assert cell(result, "memory", "w1") == ("pass", "1200 MB")
    assert cell(result, "memory", "cp1") == ("fail", "1200 MB")
    assert [r.required for r in result.rows if r.check == "memory"] == [">= 1024 MB", ">= 1500 MB"]


def test_kernel_swap_forwarding_and_systemd() -> None:
    result = evaluate({"cp1": report(facts__kernel="4.4.0-210", facts__swaptotal_mb=2048, facts__service_mgr="sysvinit",
                                     outputs__sysctl="ip_forward=0\nbridge_nf_call_iptables=absent")}, profile="antrea")
    assert cell(result, "kernel") == ("fail", "4.4.0-210")
    assert cell(result, "swap") == ("warn", "2048 MB")
    assert cell(result, "ip_forward") == ("warn", "0")
    assert cell(result, "systemd") == ("fail", "sysvinit")
    assert cell(result, "br_netfilter")[0] == "warn"  # antrea (OVS) does not need it
    assert cell(evaluate({"cp1": report(outputs__sysctl="ip_forward=1")}), "br_netfilter")[0] == "fail"
    assert cell(evaluate({"cp1": report(facts__kernel="5.10.0")}, kube_proxy_mode="nftables"), "kernel")[0] == "fail"


def test_addresses_names_dns_and_time() -> None:
    result = evaluate({"cp1": report(ip="10.0.0.9", outputs__ping="method=icmp answered=no", outputs__resolv_conf="search lan\n",
                                     outputs__time="source=adjtimex state=5")})
    assert cell(result, "ip_local") == ("fail", "10.0.0.9 not among 10.0.0.1")
    assert cell(result, "access_ip") == ("fail", "10.0.0.1: no answer (icmp)")
    assert cell(result, "nameservers") == ("fail", "none")
    assert cell(result, "time_sync") == ("warn", "adjtimex: not synchronised")
    bad = evaluate({"Node_1": report()})
    assert cell(bad, "hostname", "Node_1") == ("fail", "Node_1 (system: cp1)")
    unknown = evaluate({"cp1": report(outputs__time="source=none", outputs__ping="method=icmp answered=unknown")})
    assert cell(unknown, "time_sync") == ("warn", "none: unknown") and cell(unknown, "access_ip")[0] == "warn"
    chrony = evaluate({"cp1": report(outputs__time="source=chronyc leap=Normal")})
    assert cell(chrony, "time_sync") == ("pass", "chronyc: synchronised")


def test_ports_by_group_and_proc_net_fallback() -> None:
    listening = "tcp 0.0.0.0:6443\ntcp 127.0.0.1:2380\nudp 0.0.0.0:6081"
    worker = report(groups=["kube_node"], outputs__ports=listening)
    result = evaluate({"cp1": report(outputs__ports=listening), "w1": worker}, profile="antrea")
    assert cell(result, "port_6443_tcp") == ("fail", "in use: 6443/tcp")
    assert cell(result, "port_2379-2380_tcp") == ("fail", "in use: 2380/tcp")
    assert cell(result, "port_6081_udp", "w1") == ("fail", "in use: 6081/udp")
    matrix = result.matrix()
    assert matrix.loc["w1", "port_6443_tcp"] == "n/a" and matrix.loc["cp1", "port_6443_tcp"] == "fail"
    assert list(matrix.index) == ["cp1", "w1"]
    proc = ("proctcp 00000000:192B 0A\nproctcp 0100007F:0050 01\nproctcp6 00000000000000000000000000000000:2A1A 0A\n"
            "procudp 00000000:17C1 07")
    assert parse_listening(proc) == {("tcp", 6443), ("tcp", 10778), ("udp", 6081)}


def test_unreachable_hosts_fail_reachable() -> None:
    result = evaluate({"cp1": report()}, unreachable={"w9": "Failed to connect to the host via ssh: timed out\nmore"})
    assert cell(result, "reachable", "w9") == ("fail", "Failed to connect to the host via ssh: timed out")
    assert not result.ok
    assert not evaluate({}).ok  # nothing evaluated is never a pass


def test_lab_profile_and_styling() -> None:
    result = evaluate({"cp1": report(facts__service_mgr="process_api")}, profile="lab")
    assert "systemd" not in check_names("lab")
    assert cell(result, "module_ifb")[0] == "pass"
    html = result.styled_matrix().to_html()
    assert "#c6efce" in html


# `ss -ltnpH`/`-lunpH` lines as the playbook prints them: proto, local address, process
HELD = ('tcp 10.0.0.1:6443 users:(("kube-apiserver",pid=4242,fd=7))\n'
        'tcp 127.0.0.1:2379 users:(("etcd",pid=4100,fd=8))\n'
        'tcp 10.0.0.1:2380 users:(("etcd",pid=4100,fd=9))\n'
        'tcp *:10250 users:(("kubelet",pid=4300,fd=20))\n'
        'tcp 127.0.0.1:10257 users:(("kube-controller",pid=4400,fd=3))\n'
        'tcp 127.0.0.1:10259 users:(("kube-scheduler",pid=4500,fd=3))\n')


def test_a_port_names_what_holds_it() -> None:
    nginx = report(outputs__ports='tcp 0.0.0.0:6443 users:(("nginx",pid=77,fd=6),("nginx",pid=78,fd=6))')
    assert cell(evaluate({"cp1": nginx}), "port_6443_tcp") == ("fail", "in use: 6443/tcp by nginx")


def test_ports_of_this_running_cluster_pass_only_when_the_run_knows_it_runs() -> None:
    ports = [f"port_{p}_tcp" for p in ("6443", "2379-2380", "10250", "10257", "10259")]
    held = {"cp1": report(outputs__ports=HELD)}
    fresh = evaluate(held, profile="lab")
    for name in ports:
        status, seen = cell(fresh, name)
        assert status == "fail" and seen.endswith("(a Kubernetes component already runs on this host)"), (name, seen)
    reused = evaluate(held, profile="lab", cluster_running=True)
    assert [cell(reused, name) for name in ports] == [
        ("pass", "held by kube-apiserver of this very cluster (already running)"),
        ("pass", "held by etcd of this very cluster (already running)"),
        ("pass", "held by kubelet of this very cluster (already running)"),
        ("pass", "held by kube-controller of this very cluster (already running)"),
        ("pass", "held by kube-scheduler of this very cluster (already running)"),
    ]


def test_a_port_held_by_something_else_fails_even_on_a_running_cluster() -> None:
    mixed = HELD.replace('"kube-apiserver",pid=4242', '"haproxy",pid=4242')
    result = evaluate({"cp1": report(outputs__ports=mixed)}, profile="lab", cluster_running=True)
    assert cell(result, "port_6443_tcp") == ("fail", "in use: 6443/tcp by haproxy")
    # an owner ss could not see (no process column) is not assumed to be the cluster's
    unseen = evaluate({"cp1": report(outputs__ports="tcp 10.0.0.1:6443")}, profile="lab", cluster_running=True)
    assert cell(unseen, "port_6443_tcp") == ("fail", "in use: 6443/tcp")
