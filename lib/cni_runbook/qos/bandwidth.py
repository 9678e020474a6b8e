"""Pod bandwidth limits (``kubernetes.io/ingress-bandwidth`` / ``egress-bandwidth``), measured.

The CNI's chained ``bandwidth`` plugin turns the annotations into tc shaping on the pod's
host-side interface: *ingress* limits what the pod receives, *egress* what it sends. The
check deploys four iperf3 pods in one namespace - servers on one node, clients on another -
and measures three TCP streams from a client to a server, one after the other:

============  ==========================  ==================================================
baseline      client -> server            no annotation: what the path carries unlimited
ingress       client -> server-limited    the server has ``ingress-bandwidth`` = the limit
egress        client-limited -> server    the client has ``egress-bandwidth`` = the limit
============  ==========================  ==================================================

A limit passes when the measured rate is within ``tolerance_pct`` of it *and* at most half
the baseline measured in the same run (:func:`evaluate`); when the baseline itself is not
clearly above the limit the measurement cannot tell shaping from a slow path, and the check
fails as inconclusive. iperf3 runs with ``-J`` (JSON) and ``-O 1`` (the first second, where
the token bucket's burst and TCP slow start distort the rate, is omitted).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kube import Kube
from ..kube.apply import Applied, Applier, rollback
from ..kube.leftovers import ROLE_ANNOTATION
from ..kube.exec import exec_in_pod
from ..kube.wait import node_ready, watch_until

Progress = Callable[[str], None]

INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
IPERF_PORT = 5201
ROLE = "qos-bandwidth"  # the mark of the QoS check's namespace and pods (kube/leftovers.py)
#: the unlimited baseline must be at least this many times the measured limited rate
BASELINE_FACTOR = 2.0

_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGTP]i?)?\s*$")
_FACTORS = {None: 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def parse_bandwidth(value: str | int | float) -> float:
    """A bandwidth annotation value (a Kubernetes quantity, in bits per second) as bit/s:
    ``"10M"`` -> 10e6, ``"1Gi"`` -> 2**30."""
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"not a bandwidth quantity: {value!r} (e.g. 10M = 10 Mbit/s)")
    return float(m.group(1)) * _FACTORS[m.group(2)]


def mbps(bits_per_second: float | None) -> float | None:
    return None if bits_per_second is None else round(bits_per_second / 1e6, 2)


# --------------------------------------------------------------------------- iperf3 output


@dataclass(frozen=True)
class IperfResult:
    """The summary of one iperf3 ``-J`` run (TCP)."""

    sent_bps: float | None
    received_bps: float | None
    seconds: float | None
    retransmits: int | None
    version: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.received_bps is not None


def parse_iperf3(text: str) -> IperfResult:
    """Read iperf3's JSON; an ``error`` in it (or output that is not JSON) is returned, not raised."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        snippet = " ".join((text or "").split())[:200]
        return IperfResult(None, None, None, None, error=f"iperf3 printed no JSON: {snippet or '(nothing)'}")
    version = str((data.get("start") or {}).get("version", ""))
    end = data.get("end") or {}
    sent, received = end.get("sum_sent") or {}, end.get("sum_received") or {}
    if data.get("error"):
        return IperfResult(None, None, None, None, version, str(data["error"]))
    if not received and not sent:
        return IperfResult(None, None, None, None, version, "iperf3 JSON has no end.sum_sent / sum_received")
    return IperfResult(
        sent_bps=sent.get("bits_per_second"),
        received_bps=received.get("bits_per_second"),
        seconds=received.get("seconds", sent.get("seconds")),
        retransmits=sent.get("retransmits"),
        version=version,
    )


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class BandwidthCheck:
    direction: str  # ingress | egress
    limit: str  # the annotation value
    limit_bps: float
    measured_bps: float | None
    baseline_bps: float | None
    tolerance_pct: float
    status: str  # passed | failed
    message: str

    def row(self) -> dict[str, Any]:
        ratio = None if not self.measured_bps else round(self.measured_bps / self.limit_bps * 100, 1)
        return {"direction": self.direction, "limit": self.limit, "limit_mbps": mbps(self.limit_bps),
                "measured_mbps": mbps(self.measured_bps), "of_limit_pct": ratio,
                "baseline_mbps": mbps(self.baseline_bps), "tolerance_pct": self.tolerance_pct,
                "status": self.status, "message": self.message}

    def check(self) -> dict[str, Any]:
        return {"name": f"qos {self.direction}-bandwidth {self.limit}", "status": self.status, "message": self.message}


def evaluate(direction: str, limit: str, measured_bps: float | None, baseline_bps: float | None,
             tolerance_pct: float, baseline_factor: float = BASELINE_FACTOR) -> BandwidthCheck:
    """Pass when ``measured`` is within ``tolerance_pct`` of the limit and the unlimited
    ``baseline`` is at least ``baseline_factor`` times ``measured`` (see the module docstring)."""
    limit_bps = parse_bandwidth(limit)
    low, high = limit_bps * (1 - tolerance_pct / 100), limit_bps * (1 + tolerance_pct / 100)

    def result(status: str, message: str) -> BandwidthCheck:
        return BandwidthCheck(direction, limit, limit_bps, measured_bps, baseline_bps, tolerance_pct, status, message)

    band = f"{mbps(low)}-{mbps(high)} Mbit/s"
    if measured_bps is None:
        return result("failed", "no measurement with the limit")
    if baseline_bps is None:
        return result("failed", "no unlimited baseline to compare with")
    if baseline_bps < limit_bps * baseline_factor:
        return result("failed", f"inconclusive: the unlimited path carries only {mbps(baseline_bps)} Mbit/s, "
                                f"not clearly above the {limit} limit; choose a limit below "
                                f"{mbps(baseline_bps / baseline_factor)} Mbit/s")
    if measured_bps > high:
        return result("failed", f"{mbps(measured_bps)} Mbit/s is above the limit's band {band}: "
                                f"the {direction}-bandwidth annotation is not enforced")
    if measured_bps < low:
        return result("failed", f"{mbps(measured_bps)} Mbit/s is below the limit's band {band}: "
                                "shaped harder than asked (or the path is congested)")
    if measured_bps * baseline_factor > baseline_bps:
        return result("failed", f"{mbps(measured_bps)} Mbit/s is not clearly below the unlimited "
                                f"{mbps(baseline_bps)} Mbit/s")
    return result("passed", f"{mbps(measured_bps)} Mbit/s within {band}; unlimited {mbps(baseline_bps)} Mbit/s")


# --------------------------------------------------------------------------- workloads


def iperf3_image(params: Any, target: Any = None) -> str:
    """The iperf3 image: the target's own (e.g. the lab's build), else ``validation.images.perf``."""
    default = params.validation.images.perf
    return target.image("iperf3", default) if target is not None else default


@dataclass(frozen=True)
class Role:
    name: str
    side: str  # server | client
    annotations: tuple[tuple[str, str], ...] = ()


def roles(ingress: str | None, egress: str | None) -> list[Role]:
    out = [Role("iperf-server", "server"), Role("iperf-client", "client")]
    if ingress:
        out.append(Role("iperf-server-limited", "server", ((INGRESS_ANNOTATION, ingress),)))
    if egress:
        out.append(Role("iperf-client-limited", "client", ((EGRESS_ANNOTATION, egress),)))
    return out


def pair_objects(namespace: str, image: str, ingress: str | None, egress: str | None,
                 server_node: str | None = None, client_node: str | None = None) -> list[dict[str, Any]]:
    """The namespace and the iperf3 pods (every pod runs ``iperf3 -s``; clients are exec'd)."""
    mark = {ROLE_ANNOTATION: ROLE}  # the next run removes them if this one is stopped (kube/leftovers.py)
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": namespace, "labels": {"app.kubernetes.io/managed-by": "cni-runbook"}, "annotations": mark}}]
    for role in roles(ingress, egress):
        node = server_node if role.side == "server" else client_node
        spec: dict[str, Any] = {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "iperf3", "image": image, "args": ["-s", "-p", str(IPERF_PORT)],
                            "ports": [{"name": "iperf3", "containerPort": IPERF_PORT, "protocol": "TCP"}]}],
        }
        if node:
            spec["nodeSelector"] = {"kubernetes.io/hostname": node}
        meta: dict[str, Any] = {"name": role.name, "namespace": namespace,
                                "labels": {"app.kubernetes.io/name": role.name, "app.kubernetes.io/managed-by": "cni-runbook"}}
        meta["annotations"] = {**dict(role.annotations), **mark}
        objects.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    return objects


def plan_measurements(ingress: str | None, egress: str | None) -> list[dict[str, str]]:
    """The measurements the check makes, for plan mode."""
    rows = [{"measurement": "baseline", "client": "iperf-client", "server": "iperf-server", "limit": "none"}]
    if ingress:
        rows.append({"measurement": "ingress", "client": "iperf-client", "server": "iperf-server-limited",
                     "limit": f"{INGRESS_ANNOTATION}: {ingress} on the server"})
    if egress:
        rows.append({"measurement": "egress", "client": "iperf-client-limited", "server": "iperf-server",
                     "limit": f"{EGRESS_ANNOTATION}: {egress} on the client"})
    return rows


@dataclass
class QosRun:
    """What :func:`measure` did: measurements, verdicts, and what it applied (removed again)."""

    results: dict[str, IperfResult] = field(default_factory=dict)
    checks: list[BandwidthCheck] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def measurements(self) -> list[dict[str, Any]]:
        return [{"measurement": k, "received_mbps": mbps(r.received_bps), "sent_mbps": mbps(r.sent_bps),
                 "seconds": r.seconds, "retransmits": r.retransmits, "error": r.error}
                for k, r in self.results.items()]


def _ready_predicate(names: set[str]) -> Callable[[list[dict]], tuple[bool, str]]:
    def predicate(items: list[dict]) -> tuple[bool, str]:
        ready = [i["metadata"]["name"] for i in items if i["metadata"]["name"] in names
                 and (i.get("status") or {}).get("phase") == "Running" and (i.get("status") or {}).get("podIP")]
        return len(ready) == len(names), f"iperf3 pods running: {len(ready)}/{len(names)}"

    return predicate


def run_iperf3(kube: Kube, namespace: str, client: str, server_ip: str, duration_s: int) -> IperfResult:
    """One TCP stream from ``client`` to ``server_ip`` (exec'd in the client pod)."""
    argv = ["iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", str(duration_s), "-O", "1", "-J"]
    res = exec_in_pod(kube, namespace, client, argv, container="iperf3", timeout=duration_s + 30)
    if res.returncode is None:
        return IperfResult(None, None, None, None, error=f"iperf3 did not finish within {duration_s + 30}s")
    parsed = parse_iperf3(res.stdout)
    if not parsed.ok and res.stderr.strip():
        return IperfResult(None, None, None, None, parsed.version, f"{parsed.error}; stderr: {res.stderr.strip()[:200]}")
    return parsed


def _nodes(kube: Kube) -> list[str]:
    items = [kube.api.sanitize_for_serialization(n) for n in kube.core.list_node().items]
    ok = [n for n in items if node_ready(n)[0]
          and not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in (n.get("spec") or {}).get("taints") or ())]
    return sorted(n["metadata"]["name"] for n in ok)


def measure(kube: Kube, qos_params: Any, image: str, record: Path, *, timeout: float = 180,
            progress: Progress | None = None) -> QosRun:
    """Deploy the pairs, measure baseline / ingress / egress, evaluate, remove everything."""
    say = progress or (lambda _m: None)
    started = time.monotonic()
    bw = qos_params.bandwidth
    nodes = _nodes(kube)
    server_node = nodes[-1] if nodes else None
    client_node = nodes[0] if len(nodes) > 1 else server_node
    objects = pair_objects(qos_params.namespace, image, bw.ingress, bw.egress, server_node, client_node)
    if kube.core.list_namespace(field_selector=f"metadata.name={qos_params.namespace}").items:
        raise RuntimeError(f"namespace {qos_params.namespace} exists already; the QoS check creates and deletes "
                           "its own namespace (set qos.namespace to an unused name)")
    run = QosRun(nodes={"server": server_node or "", "client": client_node or ""})
    run.applied = Applier(kube, progress=say).apply(objects, record=record)
    try:
        names = {o["metadata"]["name"] for o in objects if o["kind"] == "Pod"}
        watch_until(kube.core.list_namespaced_pod, _ready_predicate(names), timeout,
                    f"the iperf3 pods in {qos_params.namespace} to run", say, namespace=qos_params.namespace)
        ips = {p.metadata.name: p.status.pod_ip for p in kube.core.list_namespaced_pod(qos_params.namespace).items}
        plan = [("baseline", "iperf-client", "iperf-server")]
        if bw.ingress:
            plan.append(("ingress", "iperf-client", "iperf-server-limited"))
        if bw.egress:
            plan.append(("egress", "iperf-client-limited", "iperf-server"))
        for label, client, server in plan:
            say(f"iperf3 {label}: {client} -> {server} ({ips[server]}) for {qos_params.duration_s}s")
            run.results[label] = _measure_with_retry(kube, qos_params.namespace, client, ips[server],
                                                     qos_params.duration_s)
            result = run.results[label]
            say(f"iperf3 {label}: " + (f"{mbps(result.received_bps)} Mbit/s" if result.ok else result.error))
    finally:
        rollback(kube, record, timeout=timeout, progress=say)
    baseline = run.results["baseline"].received_bps if run.results["baseline"].ok else None
    limited = {"ingress": ("iperf-server-limited", server_node), "egress": ("iperf-client-limited", client_node)}
    for direction, limit in (("ingress", bw.ingress), ("egress", bw.egress)):
        if limit:
            measured = run.results[direction]
            check = evaluate(direction, limit, measured.received_bps if measured.ok else None, baseline,
                             qos_params.tolerance_pct)
            if check.status == "failed":  # name the pod the limit is on, and its node
                pod, node = limited[direction]
                check = dataclasses.replace(check, message=f"pod {qos_params.namespace}/{pod} on {node}: {check.message}")
            run.checks.append(check)
    run.seconds = time.monotonic() - started
    return run


def _measure_with_retry(kube: Kube, namespace: str, client: str, server_ip: str, duration_s: int) -> IperfResult:
    """iperf3 refuses a second client while a test runs, and a fresh server may not listen yet:
    retry a failed connect a few times (bounded)."""
    result = run_iperf3(kube, namespace, client, server_ip, duration_s)
    for _ in range(3):
        if result.ok or not any(w in result.error for w in ("connect", "busy", "refused")):
            break
        time.sleep(1)
        result = run_iperf3(kube, namespace, client, server_ip, duration_s)
    return result


def summarize(checks: Sequence[BandwidthCheck]) -> str:
    passed = sum(c.status == "passed" for c in checks)
    return f"bandwidth: {passed}/{len(checks)} limits hold"
