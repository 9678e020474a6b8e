"""The validation suite: named tests built from the cluster's nodes, run as batched probes.

:func:`plan_tests` turns a :class:`Topology` (nodes, pod and Service addresses) into
:class:`TestSpec` rows: each test is either a probe (run by :mod:`.probe`, batched per
source pod), an API check (CNI agent pods, node podCIDRs) or a skip with its reason.
:func:`run_suite` deploys the workloads, runs every selected test, optionally the
perf measurements, and always cleans up (unless ``keep_workloads``).

Test ids are ``family/variant/source->destination`` (e.g.
``pod-to-pod/inter-node/lab-w1->lab-w2``); ``tests`` / ``skip`` regexes select them.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..cni.profiles import FACTS as PROFILE_FACTS
from ..kube import Kube
from .perf import PerfConfig, run_perf
from .probe import Command, Probe, ProbeResult, ProberPool
from .results import SuiteResult, frame_from_rows
from .workloads import (
    ECHO_HTTP_PORT,
    ECHO_UDP_PORT,
    SERVICE_PORT,
    Deployed,
    Images,
    Layout,
    cleanup,
    deploy,
    list_nodes,
    node_addresses,
    pick_perf_nodes,
    ready_nodes,
)

Progress = Callable[[str], None]

KUBELET_PORT = 10250
KUBE_PROXY_HEALTHZ_PORT = 10256

#: the CNI agent DaemonSet per cni.profile ("namespace/name"), from the profiles' facts
CNI_AGENTS = {name: facts.agent for name, facts in PROFILE_FACTS.items() if facts.agent}

#: every test family, in display order, with what it proves
FAMILIES = {
    "pod-to-pod": "TCP from a client pod to an echo pod, same node and every other node",
    "pod-to-pod-udp": "UDP echo from a client pod to an echo pod on every node",
    "pod-to-service": "TCP to the per-node echo Service's ClusterIP (backend on the same / another node)",
    "service-dns": "Service by DNS name (short, namespaced, FQDN) and kubernetes.default",
    "nodeport": "TCP from a client pod to the NodePort on every node's address",
    "host-to-pod": "TCP from a hostNetwork pod to echo pods on every node",
    "pod-to-host": "TCP from a client pod to every node's kubelet port",
    "pod-to-external": "TCP to validation.external_target (optional)",
    "dns": "every cluster DNS server answers a lookup within max_dns_ms",
    "mtu": "don't-fragment pings sized to the pod MTU reach every node's pods",
    "health": "CNI agent Ready and kube-proxy healthz on every node; nodes Ready",
    "podcidr": "node podCIDRs present, disjoint, and holding the node's pod addresses",
    "perf": "iperf3 throughput pod vs host network, round-trip latency p50/p99",
}


@dataclass
class SuiteConfig:
    namespace: str = "cni-runbook-validation"
    tests: str = ".*"
    skip: str | None = None
    images: Images = field(default_factory=lambda: Images("registry.k8s.io/e2e-test-images/agnhost:2.53",
                                                          "docker.io/networkstatic/iperf3:latest"))
    probe_timeout_s: float = 2.0
    attempts: int = 2
    concurrency: int = 8
    pod_ready_s: float = 180
    keep_workloads: bool = False
    external_target: str | None = None
    mtu: int | None = None
    cni_agent: str | None = None  # "namespace/daemonset"; None: no agent check
    kube_proxy: bool = True  # False when kube-proxy was removed (its healthz test is skipped)
    cluster_domain: str = "cluster.local"
    perf: bool = False
    perf_config: PerfConfig = field(default_factory=PerfConfig)
    max_dns_ms: float = 500.0

    @classmethod
    def from_params(cls, params: Any, images: Images | None = None) -> SuiteConfig:
        from .workloads import images_for

        v = params.validation
        t = v.thresholds
        agent = v.cni_agent or CNI_AGENTS.get(params.cni.profile)
        return cls(
            namespace=v.namespace, tests=v.tests, skip=v.skip, images=images or images_for(params),
            probe_timeout_s=float(v.timeouts.probe_s), attempts=v.attempts, concurrency=v.concurrency,
            pod_ready_s=float(v.timeouts.pod_ready_s), keep_workloads=v.keep_workloads,
            external_target=v.external_target, mtu=v.mtu, cni_agent=agent,
            kube_proxy=not params.kubespray.kube_proxy_remove, cluster_domain=params.cluster.name,
            perf=v.perf, max_dns_ms=t.max_dns_ms,
            perf_config=PerfConfig(duration_s=v.perf_duration_s, samples=v.latency_samples,
                                   min_throughput_mbps=t.min_throughput_mbps, max_rtt_ms=t.max_rtt_ms,
                                   max_loss_pct=t.max_loss_pct, tolerance_pct=t.throughput_tolerance_pct),
        )

    def selected(self, test_id: str) -> bool:
        if not re.search(self.tests, test_id):
            return False
        return not (self.skip and re.search(self.skip, test_id))


@dataclass(frozen=True)
class TestSpec:
    id: str
    family: str
    src_node: str = ""
    dst_node: str = ""
    src_pod: str = ""
    target: str = ""
    probe: Probe | None = None
    skip: str = ""  # reason when the test cannot apply here
    attempts: int | None = None  # per-test override (MTU: one attempt, see mtu_tests)
    max_ms: float | None = None  # pass only within this latency (DNS)


@dataclass
class Topology:
    """What the tests are built from (pure data, so plans and unit tests need no cluster)."""

    nodes: list[str]  # Ready nodes, sorted
    node_ip: dict[str, str]
    pod_ip: dict[str, str] = field(default_factory=dict)  # pod name -> IP
    service_ip: dict[str, str] = field(default_factory=dict)
    node_port: int | None = None
    dns_servers: dict[str, str] = field(default_factory=dict)  # DNS pod name -> IP
    dns_service_ip: str | None = None
    mtu: dict[str, int] = field(default_factory=dict)  # node -> client pod eth0 MTU
    not_ready: list[str] = field(default_factory=list)

    @classmethod
    def placeholder(cls, node_names: list[str]) -> Topology:
        """Addresses as placeholders: what a plan shows before anything exists."""
        names = sorted(node_names) or ["<node>"]
        return cls(names, {n: f"<{n} InternalIP>" for n in names})


def _pairs(nodes: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in nodes for b in nodes if a != b]


def _addr(topo: Topology, pod: str) -> str:
    return topo.pod_ip.get(pod, f"<{pod} IP>")


def plan_tests(cfg: SuiteConfig, layout: Layout, topo: Topology) -> list[TestSpec]:
    """Every test of the suite for this topology (not yet filtered by the regexes)."""
    ns = layout.namespace
    specs: list[TestSpec] = []
    single = len(topo.nodes) < 2
    single_reason = "single-node cluster: no other node to reach"

    def probe(test_id: str, family: str, a: str, b: str, src_pod: str, target: str, port: int,
              proto: str = "TCP", **kw) -> TestSpec:
        extra = {k: kw.pop(k) for k in ("attempts", "max_ms") if k in kw}
        p = Probe(layout.ref(src_pod), target, port, proto, name=test_id, **kw)
        return TestSpec(test_id, family, a, b, src_pod, f"{target}:{port}" if port else target, p, **extra)

    def skipped(test_id: str, family: str, reason: str, a: str = "", b: str = "") -> TestSpec:
        return TestSpec(test_id, family, a, b, skip=reason)

    for n in topo.nodes:
        specs.append(probe(f"pod-to-pod/intra-node/{n}", "pod-to-pod", n, n, layout.client(n),
                           _addr(topo, layout.echo(n)), ECHO_HTTP_PORT))
    for a, b in _pairs(topo.nodes):
        specs.append(probe(f"pod-to-pod/inter-node/{a}->{b}", "pod-to-pod", a, b, layout.client(a),
                           _addr(topo, layout.echo(b)), ECHO_HTTP_PORT))
    if single:
        specs.append(skipped("pod-to-pod/inter-node", "pod-to-pod", single_reason))
    for a in topo.nodes:
        for b in topo.nodes:
            specs.append(probe(f"pod-to-pod-udp/{a}->{b}", "pod-to-pod-udp", a, b, layout.client(a),
                               _addr(topo, layout.echo(b)), ECHO_UDP_PORT, "UDP"))
    for n in topo.nodes:
        svc = layout.echo(n)
        specs.append(probe(f"pod-to-service/intra-node/{n}", "pod-to-service", n, n, layout.client(n),
                           topo.service_ip.get(svc, f"<{svc} ClusterIP>"), SERVICE_PORT))
    for a, b in _pairs(topo.nodes):
        svc = layout.echo(b)
        specs.append(probe(f"pod-to-service/inter-node/{a}->{b}", "pod-to-service", a, b, layout.client(a),
                           topo.service_ip.get(svc, f"<{svc} ClusterIP>"), SERVICE_PORT))
    if single:
        specs.append(skipped("pod-to-service/inter-node", "pod-to-service", single_reason))
    names = {"short": "echo", "namespaced": f"echo.{ns}", "fqdn": f"echo.{ns}.svc.{cfg.cluster_domain}"}
    for n in topo.nodes:
        for variant, name in names.items():
            specs.append(probe(f"service-dns/{variant}/{n}", "service-dns", n, "", layout.client(n), name,
                               SERVICE_PORT))
        specs.append(probe(f"service-dns/kubernetes-default/{n}", "service-dns", n, "", layout.client(n),
                           "kubernetes.default", 443))
    for a in topo.nodes:
        for b in topo.nodes:
            if topo.node_port is None and topo.pod_ip:
                specs.append(skipped(f"nodeport/{a}->{b}", "nodeport", "the NodePort Service got no port", a, b))
                continue
            specs.append(probe(f"nodeport/{a}->{b}", "nodeport", a, b, layout.client(a), topo.node_ip[b],
                               topo.node_port or 30000))
    for a in topo.nodes:
        for b in topo.nodes:
            specs.append(probe(f"host-to-pod/{a}->{b}", "host-to-pod", a, b, layout.host(a),
                               _addr(topo, layout.echo(b)), ECHO_HTTP_PORT))
            specs.append(probe(f"pod-to-host/{a}->{b}", "pod-to-host", a, b, layout.client(a), topo.node_ip[b],
                               KUBELET_PORT))
    for n in topo.nodes:
        if cfg.external_target:
            host, port = cfg.external_target.rsplit(":", 1)
            specs.append(probe(f"pod-to-external/{n}", "pod-to-external", n, "", layout.client(n), host, int(port)))
        else:
            specs.append(skipped(f"pod-to-external/{n}", "pod-to-external",
                                 "disabled: set validation.external_target (host:port) to test it", n))
    src = topo.nodes[0]
    lookup = f"kubernetes.default.svc.{cfg.cluster_domain}"
    if topo.pod_ip and not topo.dns_servers:
        specs.append(skipped("dns/server", "dns", "no cluster DNS pods found (kube-system, k8s-app=kube-dns)"))
    for pod, ip in sorted(topo.dns_servers.items()):
        specs.append(probe(f"dns/server/{pod}", "dns", src, "", layout.client(src), lookup, 0, "DNS",
                           resolver=ip, max_ms=cfg.max_dns_ms))
    if topo.dns_service_ip or not topo.pod_ip:
        specs.append(probe("dns/service", "dns", src, "", layout.client(src), lookup, 0, "DNS",
                           resolver=topo.dns_service_ip or "<kube-dns ClusterIP>", max_ms=cfg.max_dns_ms))
    specs += mtu_tests(cfg, layout, topo)
    for n in topo.nodes:
        agent = cfg.cni_agent
        specs.append(TestSpec(f"health/cni-agent/{n}", "health", n, n, target=agent or "",
                              skip="" if agent else "no CNI agent DaemonSet known: set validation.cni_agent"))
        if cfg.kube_proxy:
            specs.append(probe(f"health/kube-proxy/{n}", "health", n, n, layout.host(n), topo.node_ip[n],
                               KUBE_PROXY_HEALTHZ_PORT, "HTTP", path="/healthz"))
        else:
            specs.append(skipped(f"health/kube-proxy/{n}", "health", "kube-proxy was removed (kube_proxy_remove)", n))
    for n in topo.not_ready:
        specs.append(TestSpec(f"health/node-ready/{n}", "health", n, n, target="Ready"))
    for n in topo.nodes:
        specs.append(TestSpec(f"podcidr/{n}", "podcidr", n, n, target="spec.podCIDRs"))
    return specs


def mtu_tests(cfg: SuiteConfig, layout: Layout, topo: Topology) -> list[TestSpec]:
    """Don't-fragment pings of MTU-28 bytes (IP + ICMP headers) to every node's echo pod.

    One attempt only: after a "fragmentation needed" the kernel learns the smaller path
    MTU and would fragment a retry locally, hiding the problem.
    """
    specs = []
    for n in topo.nodes:
        found = topo.mtu.get(n)
        if cfg.mtu and found and found != cfg.mtu:
            specs.append(TestSpec(f"mtu/interface/{n}", "mtu", n, n, layout.client(n), f"eth0 mtu {cfg.mtu}",
                                  skip=""))
    for a in topo.nodes:
        for b in topo.nodes:
            mtu = cfg.mtu or topo.mtu.get(a)
            test_id = f"mtu/{a}->{b}"
            if not mtu:
                if topo.pod_ip:
                    specs.append(TestSpec(test_id, "mtu", a, b, skip="pod MTU unknown (set validation.mtu)"))
                    continue
                mtu = 1500
            p = Probe(layout.ref(layout.client(a)), _addr(topo, layout.echo(b)), 0, "ICMP", name=test_id,
                      size=mtu - 28)
            specs.append(TestSpec(test_id, "mtu", a, b, layout.client(a), f"{p.target} df {mtu}B", p, attempts=1))
    return specs


# --------------------------------------------------------------------------- running


def discover(kube: Kube, layout: Layout, deployed: Deployed, nodes: list[dict], cfg: SuiteConfig,
             pool: ProberPool | None = None) -> Topology:
    """Addresses, DNS servers and pod MTUs of the running cluster (the MTUs read through
    ``pool``'s probers, which the tests then reuse)."""
    names = layout.nodes
    node_ip = {}
    for node in nodes:
        addrs = node_addresses(node)
        node_ip[node["metadata"]["name"]] = addrs.get("InternalIP") or addrs.get("ExternalIP") or ""
    topo = Topology(names, node_ip, {p: d["ip"] for p, d in deployed.pods.items()},
                    {s: d["ip"] for s, d in deployed.services.items()}, deployed.services.get("echo-np", {}).get(
                        "node_port"))
    topo.not_ready = sorted(set(node_ip) - set(names))
    for pod in kube.core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items:
        if pod.status.pod_ip and pod.status.phase == "Running":
            topo.dns_servers[pod.metadata.name] = pod.status.pod_ip
    for svc in kube.core.list_namespaced_service("kube-system", label_selector="k8s-app=kube-dns").items:
        topo.dns_service_ip = svc.spec.cluster_ip
    batches = {layout.ref(layout.client(n)): [Command(("busybox", "cat", "/sys/class/net/eth0/mtu"),
                                                      cfg.probe_timeout_s)] for n in names}
    own = pool is None
    pool = pool or ProberPool()
    try:
        outcomes = pool.commands(kube, batches, concurrency=cfg.concurrency)
    finally:
        if own:
            pool.close()
    for pod, outcome in outcomes.items():
        res = outcome.results[0]
        if res.returncode == 0 and res.output.strip().isdigit():
            node = next(n for n in names if layout.ref(layout.client(n)) == pod)
            topo.mtu[node] = int(res.output.strip())
    return topo


#: how long the suite waits for the service proxy to forward the new Services' ClusterIPs
SERVICE_WAIT_S = 10.0


def wait_services(pool: ProberPool, kube: Kube, layout: Layout, topo: Topology, timeout: float = SERVICE_WAIT_S,
                  progress: Progress | None = None) -> float:
    """Wait (bounded) until every ClusterIP of the suite answers TCP from one client pod.

    The service proxy programs a Service some time after its endpoints became ready (kube-proxy
    batches its syncs: a second or more); probing before that fails on a silent drop, which
    costs the whole probe timeout and a retry. Short probes until each answers, then the
    tests; whatever still fails after ``timeout`` is for the tests to report. Returns the
    seconds waited."""
    started = time.monotonic()
    if not topo.nodes or not topo.service_ip:
        return 0.0
    src = layout.ref(layout.client(topo.nodes[0]))
    todo = {name: ip for name, ip in sorted(topo.service_ip.items())
            if ip and ip != "None" and name != "echo-np"}
    while todo:
        results = pool(kube, [Probe(src, ip, SERVICE_PORT, name=name) for name, ip in todo.items()],
                       timeout_s=1.0, attempts=1)
        todo = {r.probe.name: r.probe.target for r in results if r.ok is not True}
        if not todo or time.monotonic() - started > timeout:
            break
        if progress:
            progress(f"waiting for the service proxy: {', '.join(sorted(todo))} not answering yet")
        time.sleep(0.2)
    return time.monotonic() - started


def _check_agent(kube: Kube, agent: str, nodes: list[str]) -> dict[str, tuple[bool, str]]:
    """{node: (ok, reason)} for the CNI agent DaemonSet's pods."""
    namespace, name = agent.split("/", 1)
    ds = kube.get("apps/v1", "DaemonSet", name, namespace)
    if ds is None:
        return {n: (False, f"DaemonSet {agent} not found") for n in nodes}
    selector = ",".join(f"{k}={v}" for k, v in (ds["spec"]["selector"].get("matchLabels") or {}).items())
    by_node: dict[str, list] = {}
    for pod in kube.core.list_namespaced_pod(namespace, label_selector=selector).items:
        by_node.setdefault(pod.spec.node_name, []).append(pod)
    out = {}
    for n in nodes:
        pods = [p for p in by_node.get(n, []) if not p.metadata.deletion_timestamp]
        if not pods:
            out[n] = (False, f"no {agent} pod on this node")
            continue
        pod = pods[0]
        conds = {c.type: c.status for c in pod.status.conditions or []}
        if conds.get("Ready") == "True":
            out[n] = (True, "")
        else:
            waiting = [cs.state.waiting.reason for cs in pod.status.container_statuses or []
                       if cs.state and cs.state.waiting]
            out[n] = (False, f"{pod.metadata.name} not Ready ({pod.status.phase}"
                             + (f", {', '.join(waiting)}" if waiting else "") + ")")
    return out


def _check_podcidrs(nodes: list[dict], topo: Topology, layout: Layout) -> dict[str, tuple[bool | None, str]]:
    cidrs: dict[str, list] = {}
    for node in nodes:
        spec = node.get("spec") or {}
        raw = spec.get("pod_cid_rs") or spec.get("pod_cidrs") or ([spec["pod_cidr"]] if spec.get("pod_cidr") else [])
        cidrs[node["metadata"]["name"]] = [ipaddress.ip_network(c, strict=False) for c in raw]
    out: dict[str, tuple[bool | None, str]] = {}
    if not any(cidrs.values()):
        return {n: (None, "skipped: no node has spec.podCIDR (the CNI allocates pod addresses itself)")
                for n in topo.nodes}
    for n in topo.nodes:
        mine = cidrs.get(n, [])
        if not mine:
            out[n] = (False, "node has no spec.podCIDR while other nodes do")
            continue
        overlap = [f"{o} ({other})" for other, nets in cidrs.items() if other != n
                   for o in nets for m in mine if m.version == o.version and m.overlaps(o)]
        if overlap:
            out[n] = (False, f"podCIDR {', '.join(map(str, mine))} overlaps {', '.join(overlap)}")
            continue
        strays = []
        for pod in (layout.echo(n), layout.client(n)):
            ip = topo.pod_ip.get(pod)
            if ip and not any(ipaddress.ip_address(ip) in net for net in mine):
                strays.append(f"{pod} {ip}")
        out[n] = (False, f"pod address outside {', '.join(map(str, mine))}: {', '.join(strays)}") if strays \
            else (True, "")
    return out


def _row(spec: TestSpec, result: str, reason: str = "", latency: float | None = None, attempts: int = 0,
         ns: str = "") -> dict:
    return {"test": spec.id, "family": spec.family, "src_pod": f"{ns}/{spec.src_pod}" if spec.src_pod else "",
            "src_node": spec.src_node, "target": spec.target, "dst_node": spec.dst_node,
            "protocol": spec.probe.protocol if spec.probe else "", "result": result, "latency_ms": latency,
            "attempts": attempts, "reason": reason}


def _probe_row(spec: TestSpec, res: ProbeResult, ns: str) -> dict:
    if res.ok is True:
        if spec.max_ms is not None and res.latency_ms is not None and res.latency_ms > spec.max_ms:
            return _row(spec, "failed", f"answered in {res.latency_ms:.0f} ms > {spec.max_ms:g} ms",
                        res.latency_ms, res.attempts, ns)
        return _row(spec, "passed", "", res.latency_ms, res.attempts, ns)
    if res.ok is None and res.reason.startswith("skipped:"):
        return _row(spec, "skipped", res.reason.removeprefix("skipped:").strip(), None, res.attempts, ns)
    reason = res.reason if res.ok is False else f"could not be determined: {res.reason}"
    return _row(spec, "failed", reason, res.latency_ms, res.attempts, ns)


def _run_group(pool: ProberPool, kube: Kube, cfg: SuiteConfig, group: list, attempts: int, rows: dict, ns: str,
               progress: Progress | None) -> None:
    results = pool(kube, [p for _, p in group], timeout_s=cfg.probe_timeout_s, attempts=attempts,
                   concurrency=cfg.concurrency, progress=progress)
    for (spec, _), res in zip(group, results):
        rows[spec.id] = _probe_row(spec, res, ns)


def run_tests(kube: Kube, cfg: SuiteConfig, layout: Layout, topo: Topology, nodes: list[dict],
              progress: Progress | None = None, pool: ProberPool | None = None) -> list[dict]:
    """Run the selected tests; rows in plan order. Every probe of every protocol goes through
    one prober per source pod (``pool``'s, or a pool of this call's own)."""
    if pool is None:
        with ProberPool() as own:
            return run_tests(kube, cfg, layout, topo, nodes, progress, own)
    specs = [s for s in plan_tests(cfg, layout, topo) if cfg.selected(s.id)]
    rows: dict[str, dict] = {}
    probes: list[tuple[TestSpec, Probe]] = [(s, s.probe) for s in specs if s.probe and not s.skip]
    # Timed probes (DNS answer time, MTU pings) run after the connectivity matrix, so the
    # matrix's burst of probe processes does not count against their time.
    timed = [(s, p) for s, p in probes if s.attempts == 1 or s.max_ms is not None]
    matrix = [(s, p) for s, p in probes if (s, p) not in timed]
    if progress:
        progress(f"running {len(probes)} probes from {len({p.src for _, p in probes})} pods")
    for group in (matrix, timed):
        if not group:
            continue
        attempts = min(s.attempts or cfg.attempts for s, _ in group)
        if any((s.attempts or cfg.attempts) != attempts for s, _ in group):
            by_attempts: dict[int, list] = {}
            for s, p in group:
                by_attempts.setdefault(s.attempts or cfg.attempts, []).append((s, p))
            for n, sub in by_attempts.items():
                _run_group(pool, kube, cfg, sub, n, rows, layout.namespace, progress)
            continue
        _run_group(pool, kube, cfg, group, attempts, rows, layout.namespace, progress)
    agent_specs = [s for s in specs if s.family == "health" and s.id.startswith("health/cni-agent/") and not s.skip]
    if agent_specs and cfg.cni_agent:
        status = _check_agent(kube, cfg.cni_agent, [s.src_node for s in agent_specs])
        for s in agent_specs:
            ok, reason = status[s.src_node]
            rows[s.id] = _row(s, "passed" if ok else "failed", reason)
    cidr_specs = [s for s in specs if s.family == "podcidr"]
    if cidr_specs:
        status_c = _check_podcidrs(nodes, topo, layout)
        for s in cidr_specs:
            ok, reason = status_c.get(s.src_node, (None, "skipped: node not checked"))
            result = "passed" if ok else ("skipped" if ok is None else "failed")
            rows[s.id] = _row(s, result, reason.removeprefix("skipped: "))
    for s in specs:
        if s.id in rows:
            continue
        if s.skip:
            rows[s.id] = _row(s, "skipped", s.skip)
        elif s.id.startswith("health/node-ready/"):
            rows[s.id] = _row(s, "failed", "node is not Ready: no test workloads were placed on it")
        elif s.id.startswith("mtu/interface/"):
            rows[s.id] = _row(s, "failed", f"eth0 MTU is {topo.mtu.get(s.src_node)}, expected {cfg.mtu}")
    return [rows[s.id] for s in specs if s.id in rows]


def run_suite(kube: Kube, cfg: SuiteConfig, progress: Progress | None = None, record: Path | None = None) -> SuiteResult:
    """Deploy, test, measure, clean up; never raises for a failing test (see the result)."""
    say = progress or (lambda _m: None)
    timings: dict[str, float] = {}
    started = time.monotonic()
    nodes = list_nodes(kube)
    names = ready_nodes(nodes)
    if not names:
        raise RuntimeError("no Ready node: the suite has nowhere to run (is the CNI installed?)")
    perf_nodes = pick_perf_nodes([n for n in nodes if n["metadata"]["name"] in names]) if cfg.perf else None
    layout = Layout(cfg.namespace, names, cfg.images, perf_nodes)
    rows: list[dict] = []
    perf_rows: list[dict] = []
    cleanup_note = ""
    try:
        t0 = time.monotonic()
        say(f"deploying {len(layout.pods())} pods on {len(names)} nodes")
        deployed = deploy(kube, layout, record=record, timeout=cfg.pod_ready_s, progress=say)
        timings["deploy_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        with ProberPool() as pool:  # one prober per source pod for discovery and every test
            topo = discover(kube, layout, deployed, nodes, cfg, pool)
            if any(cfg.selected(s.id) for s in plan_tests(cfg, layout, topo) if s.family == "pod-to-service"):
                timings["services_s"] = wait_services(pool, kube, layout, topo, progress=say)
                t0 += timings["services_s"]
            rows = run_tests(kube, cfg, layout, topo, nodes, progress=say, pool=pool)
        timings["tests_s"] = time.monotonic() - t0
        if cfg.perf and any(cfg.selected(i) for i in ("perf/throughput/inter-node", "perf/latency/inter-node",
                                                      "perf/throughput/same-node", "perf/throughput/host-baseline",
                                                      "perf/ratio/inter-node-vs-host")):
            t0 = time.monotonic()
            perf_rows = run_perf(kube, layout, topo, cfg.perf_config, selected=cfg.selected, progress=say)
            timings["perf_s"] = time.monotonic() - t0
    finally:
        t0 = time.monotonic()
        if cfg.keep_workloads:
            cleanup_note = f"namespace {cfg.namespace} kept (keep_workloads)"
        else:
            try:
                cleanup_note = cleanup(kube, cfg.namespace, wait=True, timeout=60, progress=say, namespace_gone=False)
            except Exception as exc:  # noqa: BLE001 - a cleanup problem must not hide the test outcome
                cleanup_note = f"cleanup of {cfg.namespace} failed: {exc}"
        timings["cleanup_s"] = time.monotonic() - t0
        say(cleanup_note)
    timings["total_s"] = time.monotonic() - started
    return SuiteResult(frame_from_rows(rows + perf_rows), layout, timings, cleanup_note, topo_summary(topo))


def topo_summary(topo: Topology) -> dict:
    return {"nodes": topo.nodes, "node_ip": topo.node_ip, "mtu": topo.mtu, "dns_servers": topo.dns_servers,
            "node_port": topo.node_port, "not_ready": topo.not_ready}


def plan_frame(cfg: SuiteConfig, node_names: list[str]) -> pd.DataFrame:
    """The tests this config would run on these nodes (plan mode: addresses are placeholders)."""
    topo = Topology.placeholder(node_names)
    layout = Layout(cfg.namespace, topo.nodes, cfg.images,
                    (topo.nodes[0], topo.nodes[min(1, len(topo.nodes) - 1)]) if cfg.perf else None)
    rows = []
    for s in plan_tests(cfg, layout, topo):
        rows.append({"test": s.id, "family": s.family, "source": s.src_pod or s.src_node, "target": s.target,
                     "protocol": s.probe.protocol if s.probe else "api",
                     "selected": cfg.selected(s.id), "note": s.skip})
    if cfg.perf:
        from .perf import PERF_TESTS

        for test_id, what in PERF_TESTS.items():
            rows.append({"test": test_id, "family": "perf", "source": "iperf pods", "target": what,
                         "protocol": "iperf3/ICMP", "selected": cfg.selected(test_id), "note": ""})
    return pd.DataFrame(rows)


def pods_frame(layout: Layout) -> pd.DataFrame:
    return pd.DataFrame([{"pod": p, "node": n, "role": r,
                          "image": layout.images.perf if r.startswith("iperf") else layout.images.probe}
                         for p, n, r in layout.pods()])


__all__ = ["SuiteConfig", "TestSpec", "Topology", "FAMILIES", "CNI_AGENTS", "plan_tests", "run_tests", "run_suite",
           "discover", "wait_services", "plan_frame", "pods_frame"]
