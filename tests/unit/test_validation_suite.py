"""Suite planning, result aggregation and perf parsing without a cluster."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cni_runbook.params.loader import load_params
from cni_runbook.validation import perf, results, suite, workloads
from cni_runbook.validation.probe import Probe, ProbeResult
from cni_runbook.validation.suite import SuiteConfig, Topology, plan_frame, plan_tests
from cni_runbook.validation.workloads import Images, Layout

IMAGES = Images("reg.example/agnhost:1", "reg.example/iperf3:1")


def topo3() -> Topology:
    nodes = ["n1", "n2", "n3"]
    layout = Layout("ns", nodes, IMAGES)
    pod_ip = {}
    for i, n in enumerate(nodes):
        pod_ip[layout.echo(n)] = f"10.1.{i}.2"
        pod_ip[layout.client(n)] = f"10.1.{i}.3"
    return Topology(nodes, {n: f"192.168.0.{i + 1}" for i, n in enumerate(nodes)}, pod_ip,
                    {layout.echo(n): f"10.96.0.{i + 10}" for i, n in enumerate(nodes)}, node_port=30080,
                    dns_servers={"coredns-a": "10.1.0.9"}, dns_service_ip="10.96.0.3", mtu={n: 1450 for n in nodes})


def test_plan_three_nodes_covers_every_pair():
    cfg = SuiteConfig(images=IMAGES, cni_agent="kube-system/agent")
    topo = topo3()
    specs = plan_tests(cfg, Layout("ns", topo.nodes, IMAGES), topo)
    ids = [s.id for s in specs]
    assert len(ids) == len(set(ids))
    assert sum(i.startswith("pod-to-pod/inter-node/") for i in ids) == 6
    assert sum(i.startswith("pod-to-pod/intra-node/") for i in ids) == 3
    assert sum(i.startswith("nodeport/") for i in ids) == 9
    mtu = next(s for s in specs if s.id == "mtu/n1->n2")
    assert mtu.probe.protocol == "ICMP" and mtu.probe.size == 1450 - 28 and mtu.attempts == 1
    inter = next(s for s in specs if s.id == "pod-to-pod/inter-node/n1->n3")
    assert inter.probe == Probe("ns/client-n1", "10.1.2.2", 8080, "TCP", name=inter.id)
    fqdn = next(s for s in specs if s.id == "service-dns/fqdn/n2")
    assert fqdn.probe.target == "echo.ns.svc.cluster.local"
    dns = next(s for s in specs if s.id == "dns/server/coredns-a")
    assert dns.probe.protocol == "DNS" and dns.probe.resolver == "10.1.0.9" and dns.max_ms == 500
    ext = next(s for s in specs if s.id == "pod-to-external/n1")
    assert ext.skip.startswith("disabled") and ext.probe is None


def test_single_node_skips_inter_node_with_reason():
    cfg = SuiteConfig(images=IMAGES, cni_agent="kube-system/agent")
    topo = Topology(["solo"], {"solo": "192.168.0.1"})
    specs = {s.id: s for s in plan_tests(cfg, Layout("ns", ["solo"], IMAGES), topo)}
    assert specs["pod-to-pod/inter-node"].skip.startswith("single-node cluster")
    assert specs["pod-to-service/inter-node"].skip.startswith("single-node cluster")
    assert "pod-to-pod/intra-node/solo" in specs


def test_external_target_and_selection():
    cfg = SuiteConfig(images=IMAGES, external_target="10.99.2.11:6443", tests="^pod-to-(pod|external)/",
                      skip="udp")
    frame = plan_frame(cfg, ["a", "b"])
    chosen = frame[frame["selected"]]["test"].tolist()
    assert "pod-to-external/a" in chosen and "pod-to-pod/inter-node/a->b" in chosen
    assert not any(t.startswith(("pod-to-pod-udp", "nodeport", "mtu")) for t in chosen)
    ext = next(s for s in plan_tests(cfg, Layout("ns", ["a"], IMAGES), Topology.placeholder(["a"]))
               if s.id == "pod-to-external/a")
    assert ext.probe.target == "10.99.2.11" and ext.probe.port == 6443


def test_config_from_lab_params():
    loaded = load_params([workloads.__file__.replace("lib/cni_runbook/validation/workloads.py", "params/lab.yaml")])
    params = loaded.params if hasattr(loaded, "params") else loaded
    from cni_runbook.provision import lab

    assert "registry.k8s.io" in SuiteConfig.from_params(params).images.probe  # no target: the params' image
    cfg = SuiteConfig.from_params(params, workloads.images_for(params, lab.target(require_up=False)))
    assert cfg.cni_agent == "kube-system/kube-router"
    assert "registry.cnilab.local:5000" in cfg.images.probe  # the lab target's own agnhost build
    assert cfg.perf_config.tolerance_pct == params.validation.thresholds.throughput_tolerance_pct
    assert not cfg.keep_workloads and cfg.external_target is None


def test_render_pins_pods_and_labels_everything():
    layout = Layout("ns", ["n1", "a-very-long-node-name.example.internal.cluster.node"], IMAGES, ("n1", "n1"))
    objects = workloads.render(layout)
    assert objects[0]["kind"] == "Namespace"
    pods = [o for o in objects if o["kind"] == "Pod"]
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == workloads.PART_OF for o in objects)
    assert all(len(p["metadata"]["name"]) <= 63 for p in pods)
    assert {p["spec"]["nodeName"] for p in pods} == set(layout.nodes)
    hosts = [p for p in pods if p["spec"].get("hostNetwork")]
    assert len(hosts) == 3  # host-client per node + iperf-host-a (single perf node: no -b)
    client = next(p for p in pods if p["metadata"]["name"] == "client-n1")
    assert client["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["NET_RAW"]


def _row(test, family, src, dst, result, attempts=1, latency=1.0, reason=""):
    return {"test": test, "family": family, "src_pod": f"ns/c-{src}", "src_node": src, "target": "x",
            "dst_node": dst, "protocol": "TCP", "result": result, "latency_ms": latency, "attempts": attempts,
            "reason": reason}


def test_results_aggregation():
    rows = [_row("pod-to-pod/a->a", "pod-to-pod", "a", "a", "passed"),
            _row("pod-to-pod/a->b", "pod-to-pod", "a", "b", "failed", 2, None, "timeout: no answer within 2s"),
            _row("pod-to-pod/b->a", "pod-to-pod", "b", "a", "passed", 2),
            _row("pod-to-pod/b->b", "pod-to-pod", "b", "b", "passed"),
            _row("pod-to-external/a", "pod-to-external", "a", "", "skipped", 0, None, "disabled")]
    df = results.frame_from_rows(rows)
    assert list(df.columns) == results.COLUMNS
    assert results.summary_line(df) == ("3 passed, 1 failed, 1 skipped (1 passed after a retry); failed: "
                                        "pod-to-pod/a->b (node a -> b): timeout: no answer within 2s")
    m = results.matrix(df, "pod-to-pod")
    assert m.loc["a", "b"] == 0.0 and m.loc["b", "a"] == 1.0
    assert results.matrix_families(df) == ["pod-to-pod"]
    fam = results.family_table(df).set_index("family")
    assert fam.loc["pod-to-pod", "failed"] == 1 and fam.loc["pod-to-pod", "status"] == "failed"
    assert fam.loc["pod-to-external", "status"] == "skipped"
    checks = {c["name"]: c for c in results.checks(df)}
    assert checks["pod-to-pod/b->a"]["message"] == "passed on attempt 2"
    assert checks["pod-to-pod/a->b"]["status"] == "failed"
    xml = results.junit_xml(df)
    assert 'tests="5" failures="1" skipped="1"' in xml and "timeout: no answer within 2s" in xml
    assert results.failures(df)["test"].tolist() == ["pod-to-pod/a->b"]


def test_probe_rows_from_results():
    spec = suite.TestSpec("dns/server/x", "dns", "a", "", "client-a", "10.0.0.9", Probe("ns/client-a", "k", 0, "DNS"),
                          max_ms=100.0)
    assert suite._probe_row(spec, ProbeResult(spec.probe, True, 50.0, 1, ""), "ns")["result"] == "passed"
    slow = suite._probe_row(spec, ProbeResult(spec.probe, True, 250.0, 1, ""), "ns")
    assert slow["result"] == "failed" and "250 ms > 100 ms" in slow["reason"]
    unknown = suite._probe_row(spec, ProbeResult(spec.probe, None, None, 0, "batch timed out after 20s"), "ns")
    assert unknown["result"] == "failed" and unknown["reason"].startswith("could not be determined")
    sctp = suite._probe_row(spec, ProbeResult(spec.probe, None, None, 1, "skipped: SCTP is not supported"), "ns")
    assert sctp["result"] == "skipped"


def test_podcidr_checks():
    layout = Layout("ns", ["a", "b"], IMAGES)
    topo = Topology(["a", "b"], {"a": "1.1.1.1", "b": "1.1.1.2"},
                    {layout.echo("a"): "10.0.0.5", layout.client("a"): "10.0.0.6", layout.echo("b"): "10.0.9.5"})
    nodes = [{"metadata": {"name": "a"}, "spec": {"pod_cidr": "10.0.0.0/24", "pod_cid_rs": ["10.0.0.0/24"]}},
             {"metadata": {"name": "b"}, "spec": {"pod_cidr": "10.0.1.0/24", "pod_cid_rs": ["10.0.1.0/24"]}}]
    out = suite._check_podcidrs(nodes, topo, layout)
    assert out["a"] == (True, "")
    assert out["b"][0] is False and "10.0.9.5" in out["b"][1]
    nodes[1]["spec"] = {"pod_cidr": "10.0.0.128/25", "pod_cid_rs": ["10.0.0.128/25"]}
    assert "overlaps" in suite._check_podcidrs(nodes, topo, layout)["a"][1]
    none = [{"metadata": {"name": n}, "spec": {}} for n in "ab"]
    assert suite._check_podcidrs(none, topo, layout)["a"][0] is None


def test_parse_iperf_and_ping():
    good = json.dumps({"end": {"sum_received": {"bits_per_second": 2.5e9}}})
    assert perf.parse_iperf(good) == (2500.0, "")
    assert perf.parse_iperf(json.dumps({"error": "unable to connect to server: Connection refused"}))[1].startswith(
        "iperf3: unable to connect")
    assert perf.parse_iperf("garbage\n")[0] is None
    out = "\n".join(f"64 bytes from 10.0.0.2: seq={i} ttl=63 time={0.1 + i / 100:.3f} ms" for i in range(50))
    out += "\n--- 10.0.0.2 ping statistics ---\n50 packets transmitted, 49 packets received, 2% packet loss\n"
    stats = perf.parse_ping(out)
    assert stats["samples"] == 50 and stats["p50_ms"] == pytest.approx(0.34) and stats["p99_ms"] == pytest.approx(0.59)
    assert stats["loss_pct"] == 2.0
    assert perf.parse_ping("ping: bad address 'x'")["samples"] == 0


def test_plan_frame_lists_perf_when_enabled():
    frame = plan_frame(SuiteConfig(images=IMAGES, perf=True), [])
    assert set(perf.PERF_TESTS) <= set(frame["test"])
    assert isinstance(frame, pd.DataFrame) and frame["selected"].all()
