"""The disruption an operation causes, measured with the streaming probe around it.

:func:`sample_pairs` picks ``lifecycle.disruption.sample_pairs`` (client node, echo node) pairs
spread over every node (other-node pairs first, so every node is a source and a destination,
then same-node pairs). :func:`measure` deploys one echo and one client pod per node (stage 03's
workloads, own namespace), streams TCP probes over the sampled pairs every
``interval_s`` (:mod:`cni_runbook.validation.stream`) while the operation runs, and removes the
pods afterwards; the :class:`Measured` it yields gets the stream's result (outage windows per
pair, per-node summary, timeline figure) when the block ends.

An upgrade keeps the probe pods (their network is the CNI's, which is what is measured). A
replacement restarts every pod onto the new CNI, and bare probe pods would stay on the removed
CNI's network: ``relay=True`` measures it as a workload lives through it. When the block ends
(after the pod restart), the first probe pods are handed over: a second set is deployed in
``<namespace>-after`` (addresses from the new CNI) and streamed until every pair answered
:data:`SETTLED` times in a row (at most ``settle_s``); the two streams are joined into one
result on one time axis, the hand-over counting as a failed sample of every pair. A pair's
outage therefore runs from its first failed probe on the old CNI (at the latest the hand-over)
to its first answer on the new one: the re-creation of a pod is part of it, as for any workload
pod the replacement restarts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

NAMESPACE = "cni-runbook-disruption"
SETTLED = 3  # consecutive answers per pair that end a relay's second stream
HANDOVER = "probe pods restarted onto the new CNI"


def sample_pairs(nodes: Sequence[str], count: int) -> list[tuple[str, str]]:
    """``count`` (source node, destination node) pairs covering every node (module docstring)."""
    nodes = sorted(nodes)
    if not nodes or count < 1:
        return []
    other = [(a, nodes[(i + k) % len(nodes)]) for k in range(1, len(nodes)) for i, a in enumerate(nodes)]
    same = [(a, a) for a in nodes]
    return (other + same)[:count]


@dataclass
class Measured:
    """Filled when the measured block ends: the stream's result (or why there is none)."""

    result: Any = None  # validation.stream.StreamResult
    error: str = ""
    stream: Any = None

    @property
    def outages(self):
        return None if self.result is None else self.result.outages

    def per_pair(self):
        """Per pair: outages, total and longest outage (s), every probed pair listed."""
        from .compare import disruption_summary

        if self.result is None:
            return None
        outages = self.result.outages.assign(pair=self.result.outages["label"])
        pairs = [{"pair": r.label, "src_node": r.src_node, "dst_node": r.dst_node} for r in self.result.pairs.itertuples()]
        return disruption_summary(outages, pairs)

    def mark(self, label: str) -> None:
        if self.stream is not None and not self.stream.stopped:
            self.stream.mark(label)


def _probes(layout, deployed, nodes: Sequence[str], pairs: int):
    from ..validation import workloads
    from ..validation.probe import Probe

    return [Probe(layout.ref(layout.client(a)), deployed.pod_ip(layout.echo(b)), workloads.ECHO_HTTP_PORT,
                  name=f"{a}->{b}") for a, b in sample_pairs(nodes, pairs)]


def _settled(stream, count: int) -> bool:
    """Every pair's last ``count`` samples answered."""
    with stream._lock:
        samples = list(stream.samples)
    last: dict[int, list] = {}
    for smp in sorted(samples, key=lambda x: (x.round, x.sent)):
        last.setdefault(smp.pair, []).append(smp.ok)
    return len(last) == len(stream.probes) and all(len(v) >= count and all(ok is True for ok in v[-count:])
                                                   for v in last.values())


def join(first, second, handover: float):
    """One :class:`~cni_runbook.validation.stream.StreamResult` of a relay (module docstring):
    ``first``'s probes (labels, nodes), both streams' samples on ``first``'s time axis, a failed
    sample of every pair at ``handover`` (epoch seconds); ``second`` None: the hand-over failed
    and the outage stays open."""
    from ..validation.stream import Sample, build_result

    with first._lock:
        samples = [s for s in first.samples if first.started <= s.sent <= first.stopped]
    last_round = max((s.round for s in samples), default=0)
    samples += [Sample(i, last_round + 1, handover, handover, False, None, HANDOVER) for i in range(len(first.probes))]
    marks = list(first.marks) + [(handover - first.started, HANDOVER)]
    stopped = first.stopped
    errors = dict(first.errors)
    if second is not None:
        with second._lock:
            later = [s for s in second.samples if second.started <= s.sent <= second.stopped]
        samples += [Sample(s.pair, s.round + last_round + 2, s.sent, s.done, s.ok, s.latency_ms, s.reason) for s in later]
        marks.append((second.started - first.started, "probes on the new CNI"))
        stopped = second.stopped
        errors.update({f"after: {k}": v for k, v in second.errors.items()})
    return build_result(first.probes, samples, first.interval_s, first.started, stopped, first.nodes, marks, errors)


@contextlib.contextmanager
def measure(kube, *, nodes: Sequence[str], images, pairs: int, interval_s: float, timeout_s: float = 1.0,
            namespace: str = NAMESPACE, relay: bool = False, settle_s: float = 60.0,
            progress=None) -> Iterator[Measured]:
    """Stream probes over sampled pairs while the block runs (module docstring)."""
    from ..validation import workloads
    from ..validation.stream import stream

    say = progress or (lambda _m: None)
    measured = Measured()
    used = [namespace]
    layout = workloads.Layout(namespace, sorted(nodes), images, None)
    deployed = workloads.deploy(kube, layout, progress=say)
    try:
        probes = _probes(layout, deployed, nodes, pairs)
        say(f"disruption: {len(probes)} pairs every {interval_s:g} s" + (" (relayed onto the new CNI at the end)"
                                                                        if relay else ""))
        first = stream(kube, probes, interval_s=interval_s, timeout_s=timeout_s, progress=say)
        measured.stream = first
        try:
            with first:
                yield measured
        finally:  # the measurement of a failed operation matters as much
            try:
                if relay:
                    measured.result = _relay(kube, first, nodes=nodes, images=images, pairs=pairs, interval_s=interval_s,
                                             timeout_s=timeout_s, namespace=f"{namespace}-after", settle_s=settle_s,
                                             used=used, say=say, measured=measured)
                else:
                    measured.result = first.result()
                say(f"disruption: {measured.result.summary}")
            except Exception as exc:  # noqa: BLE001 - the operation's own outcome comes first
                measured.error = f"{type(exc).__name__}: {exc}"
    finally:
        for ns in used:
            workloads.cleanup(kube, ns, wait=False)


def _relay(kube, first, *, nodes, images, pairs, interval_s, timeout_s, namespace, settle_s, used, say, measured):
    """The second half of a relay (module docstring); the joined result."""
    from ..validation import workloads
    from ..validation.stream import stream

    handover = time.time()
    used.append(namespace)
    try:
        layout = workloads.Layout(namespace, sorted(nodes), images, None)
        deployed = workloads.deploy(kube, layout, progress=say)
        second = stream(kube, _probes(layout, deployed, nodes, pairs), interval_s=interval_s, timeout_s=timeout_s,
                        progress=say)
        with second:
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline and not _settled(second, SETTLED):
                time.sleep(interval_s)
    except Exception as exc:  # noqa: BLE001 - the outage stays open; say why
        measured.error = f"hand-over onto the new CNI failed: {type(exc).__name__}: {exc}"
        return join(first, None, handover)
    return join(first, second, handover)


__all__ = ["HANDOVER", "Measured", "NAMESPACE", "join", "measure", "sample_pairs"]
