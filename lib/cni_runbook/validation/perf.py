"""Performance: iperf3 TCP throughput pod vs host network, and round-trip latency.

Between the two perf nodes A and B (see :class:`.workloads.Layout`):

* ``perf/throughput/same-node``: pod ``iperf-a1`` -> pod ``iperf-a2`` (both on A);
* ``perf/throughput/inter-node``: ``iperf-a1`` -> ``iperf-b``; must reach
  ``min_throughput_mbps``;
* ``perf/throughput/host-baseline``: hostNetwork ``iperf-host-a`` -> B's address;
* ``perf/ratio/inter-node-vs-host``: inter-node / host baseline; fails when the pod
  network is more than ``tolerance_pct`` below the host network (as k8s-netperf's
  ``--tcp-tolerance``);
* ``perf/latency/inter-node`` and ``perf/latency/host-baseline``: ``samples`` pings
  (ICMP RTT) client pod on A -> echo pod on B, and host A -> host B; p50/p99 and loss,
  p99 must stay within ``max_rtt_ms`` and loss within ``max_loss_pct``.

Measurements run one after the other (never two iperf3 streams at once).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..kube.exec import exec_in_pod
from .probe import Command, run_batches
from .workloads import HOST_IPERF_PORT, IPERF_PORT

Progress = Callable[[str], None]

PERF_TESTS = {
    "perf/throughput/same-node": "iperf3 pod -> pod on the same node",
    "perf/throughput/inter-node": "iperf3 pod -> pod on another node",
    "perf/throughput/host-baseline": "iperf3 host -> host, same node pair",
    "perf/ratio/inter-node-vs-host": "inter-node pod throughput / host baseline",
    "perf/latency/inter-node": "ping RTT p50/p99 pod -> pod across nodes",
    "perf/latency/host-baseline": "ping RTT p50/p99 host -> host",
}


@dataclass
class PerfConfig:
    duration_s: int = 3
    samples: int = 50
    interval_s: float = 0.02
    min_throughput_mbps: float = 100.0
    max_rtt_ms: float = 10.0
    max_loss_pct: float = 1.0
    tolerance_pct: float = 30.0


def parse_iperf(stdout: str) -> tuple[float | None, str]:
    """(Mbit/s received, '') or (None, why) from ``iperf3 -J`` output."""
    try:
        data = json.loads(stdout)
    except ValueError:
        lines = [line for line in stdout.strip().splitlines() if line.strip()]
        return None, f"iperf3 gave no JSON: {(lines[-1] if lines else 'no output')[:200]}"
    if data.get("error"):
        return None, f"iperf3: {data['error']}"
    bps = (data.get("end", {}).get("sum_received") or {}).get("bits_per_second")
    if not bps:
        return None, "iperf3 reported no received bytes"
    return bps / 1e6, ""


_RTT = re.compile(r"time=([0-9.]+) ?ms")
_LOSS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def parse_ping(output: str) -> dict[str, Any]:
    """RTT samples, p50/p99 (ms) and loss % from busybox/iputils ping output."""
    rtts = sorted(float(x) for x in _RTT.findall(output))
    sent = received = None
    if m := _LOSS.search(output):
        sent, received = int(m.group(1)), int(m.group(2))
    loss = 100.0 * (sent - received) / sent if sent else (100.0 if not rtts else 0.0)
    return {"samples": len(rtts), "p50_ms": _quantile(rtts, 0.50), "p99_ms": _quantile(rtts, 0.99),
            "loss_pct": round(loss, 2), "sent": sent, "received": received}


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted values."""
    if not values:
        return None
    rank = max(1, int(-(-q * len(values) // 1)))
    return values[min(rank, len(values)) - 1]


def iperf(kube, namespace: str, pod: str, target: str, port: int, duration_s: int) -> tuple[float | None, str]:
    argv = ["iperf3", "-c", target, "-p", str(port), "-t", str(duration_s), "-J", "--connect-timeout", "3000"]
    try:
        res = exec_in_pod(kube, namespace, pod, argv, timeout=duration_s + 20)
    except Exception as exc:  # noqa: BLE001 - an exec failure becomes the test's reason
        return None, f"exec error: {exc}"
    if res.returncode is None:
        return None, f"iperf3 did not finish within {duration_s + 20}s"
    return parse_iperf(res.stdout)


def _row(test: str, src_pod: str, src_node: str, target: str, dst_node: str, result: str, reason: str,
         value: float | None, unit: str, protocol: str) -> dict:
    return {"test": test, "family": "perf", "src_pod": src_pod, "src_node": src_node, "target": target,
            "dst_node": dst_node, "protocol": protocol, "result": result, "latency_ms": None, "attempts": 1,
            "reason": reason, "value": None if value is None else round(value, 3), "unit": unit}


def run_perf(kube, layout, topo, cfg: PerfConfig, selected: Callable[[str], bool] = lambda _t: True,
             progress: Progress | None = None) -> list[dict]:
    say = progress or (lambda _m: None)
    ns = layout.namespace
    a, b = layout.perf_nodes
    single = a == b
    rows: list[dict] = []
    ip = topo.pod_ip
    lines: dict[str, float | None] = {}

    def throughput(test: str, pod: str, target: str, port: int, dst_node: str, check_min: bool) -> None:
        if not selected(test):
            return
        if single and dst_node == b and test != "perf/throughput/same-node":
            rows.append(_row(test, f"{ns}/{pod}", a, target, "", "skipped", "single-node cluster", None, "Mbit/s",
                             "iperf3"))
            return
        say(f"{test}: iperf3 {cfg.duration_s}s {pod} -> {target}:{port}")
        mbps, why = iperf(kube, ns, pod, target, port, cfg.duration_s)
        lines[test] = mbps
        if mbps is None:
            rows.append(_row(test, f"{ns}/{pod}", a, f"{target}:{port}", dst_node, "failed", why, None, "Mbit/s",
                             "iperf3"))
            return
        ok = mbps >= cfg.min_throughput_mbps or not check_min
        reason = "" if ok else f"{mbps:.0f} Mbit/s < min_throughput_mbps {cfg.min_throughput_mbps:g}"
        rows.append(_row(test, f"{ns}/{pod}", a, f"{target}:{port}", dst_node, "passed" if ok else "failed", reason,
                         mbps, "Mbit/s", "iperf3"))

    throughput("perf/throughput/same-node", "iperf-a1", ip.get("iperf-a2", ""), IPERF_PORT, a, False)
    throughput("perf/throughput/inter-node", "iperf-a1", ip.get("iperf-b", ""), IPERF_PORT, b, True)
    throughput("perf/throughput/host-baseline", "iperf-host-a", topo.node_ip.get(b, ""), HOST_IPERF_PORT, b, False)
    test = "perf/ratio/inter-node-vs-host"
    if selected(test):
        pod_mbps, host_mbps = lines.get("perf/throughput/inter-node"), lines.get("perf/throughput/host-baseline")
        if single:
            rows.append(_row(test, "", a, "", "", "skipped", "single-node cluster", None, "ratio", "iperf3"))
        elif not pod_mbps or not host_mbps:
            rows.append(_row(test, "", a, "", b, "skipped", "needs both inter-node and host-baseline throughput",
                             None, "ratio", "iperf3"))
        else:
            ratio = pod_mbps / host_mbps
            floor = 1 - cfg.tolerance_pct / 100.0
            ok = ratio >= floor
            reason = "" if ok else (f"pod network {100 * (1 - ratio):.0f}% below the host network "
                                    f"(tolerance {cfg.tolerance_pct:g}%)")
            rows.append(_row(test, "", a, "", b, "passed" if ok else "failed", reason, ratio, "ratio", "iperf3"))
    pings = {}
    if selected("perf/latency/inter-node") and not single:
        pings["perf/latency/inter-node"] = (layout.client(a), ip.get(layout.echo(b), ""))
    if selected("perf/latency/host-baseline") and not single:
        pings["perf/latency/host-baseline"] = (layout.host(a), topo.node_ip.get(b, ""))
    for test in ("perf/latency/inter-node", "perf/latency/host-baseline"):
        if selected(test) and single:
            rows.append(_row(test, "", a, "", "", "skipped", "single-node cluster", None, "ms", "ICMP"))
    if pings:
        say(f"latency: {cfg.samples} pings each for {', '.join(pings)}")
        wait = cfg.samples * cfg.interval_s + 5
        cmd = lambda target: Command(("ping", "-c", str(cfg.samples), "-i", f"{cfg.interval_s:g}", "-W", "2",  # noqa: E731
                                      target), wait)
        batches = {layout.ref(pod): [cmd(target)] for pod, target in pings.values()}
        outcomes = run_batches(kube, batches, max_output=cfg.samples * 90 + 600)
        for test, (pod, target) in pings.items():
            res = outcomes[layout.ref(pod)].results[0]
            stats = parse_ping(res.output)
            src = f"{ns}/{pod}"
            if not stats["samples"]:
                why = res.error or (res.output.strip().splitlines() or ["no reply"])[-1]
                rows.append(_row(test, src, a, target, b, "failed", f"no RTT samples: {why}", None, "ms", "ICMP"))
                continue
            problems = []
            if stats["p99_ms"] > cfg.max_rtt_ms:
                problems.append(f"p99 {stats['p99_ms']:.2f} ms > max_rtt_ms {cfg.max_rtt_ms:g}")
            if stats["loss_pct"] > cfg.max_loss_pct:
                problems.append(f"loss {stats['loss_pct']:g}% > max_loss_pct {cfg.max_loss_pct:g}")
            note = f"p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms, loss {stats['loss_pct']:g}% " \
                   f"({stats['samples']} samples)"
            row = _row(test, src, a, target, b, "failed" if problems else "passed",
                       "; ".join(problems + [note]) if problems else note, stats["p99_ms"], "ms p99", "ICMP")
            row["latency_ms"] = stats["p50_ms"]
            rows.append(row)
    order = list(PERF_TESTS)
    return sorted(rows, key=lambda r: order.index(r["test"]))


__all__ = ["PerfConfig", "PERF_TESTS", "run_perf", "parse_iperf", "parse_ping", "iperf"]
