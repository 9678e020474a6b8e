"""The disruption an operation causes, measured with the streaming probe around it.

:func:`sample_pairs` picks ``lifecycle.disruption.sample_pairs`` (client node, echo node) pairs
spread over every node (other-node pairs first, so every node is a source and a destination,
then same-node pairs). :func:`measure` deploys one echo and one client pod per node (stage 03's
workloads, own namespace), streams TCP probes over the sampled pairs every
``interval_s`` (:mod:`cni_runbook.validation.stream`) while the operation runs, and removes the
pods afterwards; the :class:`Measured` it yields gets the stream's result (outage windows per
pair, per-node summary, timeline figure) when the block ends.

An upgrade keeps the probe pods (their network is the CNI's, which is what is measured). A
replacement restarts every pod: bare probe pods would stay on the removed CNI's network, so a
replacement is not measured this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

NAMESPACE = "cni-runbook-disruption"


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
        if self.stream is not None:
            self.stream.mark(label)


@contextlib.contextmanager
def measure(kube, *, nodes: Sequence[str], images, pairs: int, interval_s: float, timeout_s: float = 1.0,
            namespace: str = NAMESPACE, progress=None) -> Iterator[Measured]:
    """Stream probes over sampled pairs while the block runs (module docstring)."""
    from ..validation import workloads
    from ..validation.probe import Probe
    from ..validation.stream import stream

    say = progress or (lambda _m: None)
    measured = Measured()
    layout = workloads.Layout(namespace, sorted(nodes), images, None)
    deployed = workloads.deploy(kube, layout, progress=say)
    try:
        probes = [Probe(layout.ref(layout.client(a)), deployed.pod_ip(layout.echo(b)), workloads.ECHO_HTTP_PORT,
                        name=f"{a}->{b}") for a, b in sample_pairs(nodes, pairs)]
        say(f"disruption: {len(probes)} pairs every {interval_s:g} s")
        try:
            with stream(kube, probes, interval_s=interval_s, timeout_s=timeout_s, progress=say) as s:
                measured.stream = s
                yield measured
        finally:  # the measurement of a failed operation matters as much
            if measured.stream is not None:
                try:
                    measured.result = measured.stream.result()
                    say(f"disruption: {measured.result.summary}")
                except Exception as exc:  # noqa: BLE001 - the operation's own outcome comes first
                    measured.error = f"{type(exc).__name__}: {exc}"
    finally:
        workloads.cleanup(kube, namespace, wait=False)


__all__ = ["Measured", "NAMESPACE", "measure", "sample_pairs"]
