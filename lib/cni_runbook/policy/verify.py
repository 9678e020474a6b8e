"""Stage 04 on a real cluster: truth tables observed, compared with the engine, explained.

The workflow (see issue 7 and ``notebooks/04_policy_qos.ipynb``):

1. :func:`cni_runbook.policy.workloads.deploy` puts the layout on the cluster (x, y, z by
   a, b, c unless the operator brings their own) and reads it back as the engine's model.
2. :meth:`Verifier.baseline` probes every pair on every port/protocol of the layout: with no
   policy (or only the namespaces' pre-existing ones) the observed matrix must equal the
   expectation - usually "everything reachable" - or nothing else is worth measuring
   (:class:`BaselineError`).
3. :meth:`Verifier.verify` runs one :class:`PolicySet` (a built-in scenario or an operator
   file): apply with a record; wait until every cell of the set's matrices shows what the
   engine expects, each cell re-probed in its own pod until it does (the probe engine's
   ``until``) or ``enforcement_timeout_s`` has passed; that wait is also the full pass, and a
   cell still differing is probed once more; compare (``correct N, incorrect M``) and explain
   every mismatch with the engine's reasons; then remove what was applied (``keep`` policies
   stay) and wait the same way until the cells it changed are back to the baseline.

Loopback pairs are neither probed nor counted, as upstream does. Probing goes through stage
03's engine (:func:`cni_runbook.validation.probe.run_probes`; one prober exec per source pod,
every port and protocol of a set in one pass), from the layout pods' ``netexec`` container to
the destination pods' IPs.

Times reported per set. ``latency_s``: apply -> the last of a few *sentinel* cells (pairs
whose expected reachability changes, spread over node pairs) answered as expected (an
*allowed* sentinel is seen within one probe round trip, a *blocked* one only after the probe
timeout, so a deny is timed to about ``probe_timeout_s`` more than the CNI took).
``converged_s``: apply -> every probed pair matches. ``restored_s``: removal -> the changed
cells are back. On the lab, kube-router enforces a policy within about 0.4 s of the apply, and
``latency_s`` is about 1.4 s with the 1 s probe timeout. Before this wait was per cell, whole
rounds of probes were repeated and a set's enforcement took a round longer (2.8 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..kube import Kube
from ..kube.apply import Applied, Applier, rollback
from . import matrix as M
from .engine import PolicyEngine
from .model import Cluster
from .results import MatrixResult, SetResult
from .sets import PolicySet, PortProto, layout_probes
from .workloads import NETEXEC_CONTAINER, Deployment

Progress = Callable[[str], None]
Cell = tuple[str, str]
ProbeFn = Callable[..., list[Any]]

SENTINELS_PER_MATRIX = 18


class BaselineError(RuntimeError):
    """The cluster does not even match the expectation without test policies."""


def _default_probe_fn() -> ProbeFn:
    from ..validation.probe import ProberPool

    return ProberPool()  # keeps one prober per source pod across the many matrices of a run


def _make_probe(src: str, ip: str, port: int, protocol: str, name: str) -> Any:
    from ..validation.probe import Probe

    return Probe(src=src, target=ip, port=port, protocol=protocol, name=name)


def all_cells(cluster: Cluster) -> list[Cell]:
    keys = cluster.pod_keys
    return [(s, d) for s in keys for d in keys if s != d]


def pick_sentinels(cells: Sequence[Cell], nodes: Mapping[str, str], limit: int = SENTINELS_PER_MATRIX) -> list[Cell]:
    """Up to ``limit`` cells, one per (source node, destination node) pair first, so that every
    node's rules are waited for."""
    chosen: list[Cell] = []
    seen: set[tuple[str, str]] = set()
    for cell in cells:
        pair = (nodes.get(cell[0], ""), nodes.get(cell[1], ""))
        if pair not in seen:
            seen.add(pair)
            chosen.append(cell)
    for cell in cells:
        if len(chosen) >= limit:
            break
        if cell not in chosen:
            chosen.append(cell)
    return chosen[:limit]


class Verifier:
    """Runs the baseline and policy sets against one deployed layout (see the module docstring).

    ``probe_fn`` has the signature of :func:`cni_runbook.validation.probe.run_probes` (tests
    pass a simulated cluster)."""

    def __init__(
        self,
        kube: Kube,
        deployment: Deployment,
        record_dir: Path,
        *,
        probe_timeout_s: float = 1.0,
        enforcement_timeout_s: float = 60.0,
        restore_timeout_s: float | None = None,
        concurrency: int = 9,
        attempts: int = 1,
        progress: Progress | None = None,
        probe_fn: ProbeFn | None = None,
        applier: Any = None,
        rollback_fn: Callable[..., list[Applied]] | None = None,
    ) -> None:
        self.kube = kube
        self.deployment = deployment
        self.cluster = deployment.cluster
        self.record_dir = Path(record_dir)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.probe_timeout_s = probe_timeout_s
        self.enforcement_timeout_s = enforcement_timeout_s
        self.restore_timeout_s = restore_timeout_s or enforcement_timeout_s
        self.concurrency = concurrency
        self.attempts = attempts
        self.say = progress or (lambda _m: None)
        self.probe_fn = probe_fn or _default_probe_fn()
        # a set's own lines say what it applies and removes: no per-object lines from these two
        self.applier = applier or Applier(kube)
        self.rollback_fn = rollback_fn or rollback
        #: policies in force besides the set under test: pre-existing ones, then kept ones
        self.base_policies: list[dict[str, Any]] = list(deployment.existing_policies)
        self.kept: list[str] = []
        self.reasons: dict[Cell, str] = {}
        #: probes run so far, retries in the pods included (a set's count is the difference)
        self.probes_run = 0
        #: (matrix, cell) -> when the last probe of the cell answered (monotonic, operator side)
        self.answered: dict[tuple[PortProto, Cell], float] = {}
        self.ips = {p.key: str(p.ips[0]) for p in self.cluster.pods if p.ips}
        missing = [p.key for p in self.cluster.pods if not p.ips]
        if missing:
            raise ValueError(f"pods without an IP cannot be probed: {', '.join(missing)}")

    # ------------------------------------------------------------------ probing

    def probe(self, cells: Sequence[Cell], port: int, protocol: str) -> dict[Cell, bool | None]:
        """Observed reachability of ``cells`` on ``protocol/port`` (None: unknown)."""
        return self.probe_all({(port, protocol): cells}).get((port, protocol), {})

    def probe_all(self, wanted: Mapping[PortProto, Sequence[Cell]], *,
                  until: Mapping[PortProto, Mapping[Cell, bool]] | None = None,
                  until_s: float = 0.0) -> dict[PortProto, dict[Cell, bool | None]]:
        """Observed reachability of the cells of every port/protocol. One engine call per protocol:
        agnhost probes (UDP) in the same burst as the TCP ones were killed for slow start-up on a
        loaded lab (issue 13); TCP ports share a call.

        With ``until`` (the wanted value of every cell), each cell is re-probed in its pod until
        it shows that value or ``until_s`` has passed (the engine's ``until``);
        :attr:`answered` then holds when each cell showed what was found (operator clock)."""
        by_proto: dict[str, dict[PortProto, Sequence[Cell]]] = {}
        for pp, cells in wanted.items():
            by_proto.setdefault(pp[1].upper(), {})[pp] = cells
        if len(by_proto) > 1:
            out: dict[PortProto, dict[Cell, bool | None]] = {}
            ends = time.monotonic() + until_s  # one wait for all protocols, not one each
            for part in by_proto.values():
                out.update(self.probe_all(part, until=until, until_s=max(0.0, ends - time.monotonic())))
            return out
        keys = [(pp, cell) for pp, cells in wanted.items() for cell in cells]
        if not keys:
            return {}
        probes = [_make_probe(s, self.ips[d], port, protocol, f"{s}->{d}") for (port, protocol), (s, d) in keys]
        extra: dict[str, Any] = {}
        if until is not None:
            extra = {"until": [until[pp][cell] for pp, cell in keys], "until_s": until_s}
        called = time.monotonic()
        results = self.probe_fn(self.kube, probes, timeout_s=self.probe_timeout_s, attempts=self.attempts,
                                concurrency=self.concurrency, container=NETEXEC_CONTAINER, **extra)
        returned = time.monotonic()
        out: dict[PortProto, dict[Cell, bool | None]] = {pp: {} for pp in wanted}
        for (pp, cell), r in zip(keys, results, strict=True):
            self.reasons[cell] = getattr(r, "reason", "") or ""
            out[pp][cell] = r.ok
            self.probes_run += getattr(r, "attempts", 0) or 1
            waited = getattr(r, "waited_ms", None)
            self.answered[(pp, cell)] = returned if waited is None else min(returned, called + waited / 1000.0)
        return out

    def _why(self, observed: Iterable[tuple[Cell, bool | None]]) -> str:
        """The most common probe outcomes among the (cell, observed value) pairs, for progress messages."""
        counts: dict[str, int] = {}
        for cell, value in observed:
            reason = self.reasons.get(cell) or {True: "reachable", False: "blocked", None: "no answer"}[value]
            counts[reason] = counts.get(reason, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{n}x {reason}" for reason, n in top)

    def _observed(self, found: Mapping[Cell, bool | None]) -> pd.DataFrame:
        records = [{"src": s, "dst": d, "allowed": v} for (s, d), v in found.items()]
        return M.matrix_from_records(pd.DataFrame(records, columns=["src", "dst", "allowed"]), keys=self.cluster.pod_keys)

    def expected(self, policies: Sequence[Mapping[str, Any]], port: int, protocol: str) -> pd.DataFrame:
        return PolicyEngine(self.cluster, policies).matrix(port, protocol)

    @staticmethod
    def _want(expected: pd.DataFrame, cell: Cell) -> bool:
        return bool(expected.at[cell[0], cell[1]])

    def _measure(self, name: str, policies: Sequence[Mapping[str, Any]], probes: Sequence[PortProto],
                 started: float, result: SetResult, deadline: float,
                 first: Mapping[PortProto, Mapping[Cell, bool | None]] | None = None) -> None:
        """Probe every matrix (or take ``first``, a full pass already made), re-probe mismatches
        until they agree or ``deadline``; fill ``result``."""
        engine = PolicyEngine(self.cluster, policies)
        cells = all_cells(self.cluster)
        found: dict[PortProto, dict[Cell, bool | None]] = {}
        expected: dict[PortProto, pd.DataFrame] = {}
        for port, protocol in probes:
            expected[(port, protocol)] = engine.matrix(port, protocol)
        if name == "baseline":  # a set's own lines say what it applied; the probing is the same each time
            self.say(f"{name}: probing {len(cells)} pairs on {', '.join(f'{pr}/{po}' for po, pr in probes)}")
        if first:  # the wait of _wait_for(full=probes): every cell of every matrix
            found.update({pp: dict(first[pp]) for pp in probes})
        else:
            found.update(self.probe_all({pp: cells for pp in probes}))
        probed_again = False
        while True:
            wrong = {pp: [c for c, v in found[pp].items() if v is None or v != self._want(expected[pp], c)]
                     for pp in found}
            total = sum(len(w) for w in wrong.values())
            if total == 0:
                result.converged_s = time.monotonic() - started
                break
            # a differing cell is always probed once more, even when the first pass of a big
            # matrix on a busy machine outlasted the deadline: one lost probe is not a verdict
            if time.monotonic() >= deadline and probed_again:
                break
            probed_again = True
            self.say(f"{name}: {total} cell(s) differ from the expectation "
                     f"({self._why((c, found[pp][c]) for pp, w in wrong.items() for c in w)}); probing them again")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            for pp, again in self.probe_all({pp: bad for pp, bad in wrong.items() if bad}).items():
                found[pp].update(again)
        for (port, protocol), cells_found in found.items():
            exp = expected[(port, protocol)]
            observed = self._observed(cells_found)
            comparison = M.compare(exp, observed)
            explanation = M.explain_mismatches(comparison, engine, port, protocol, observed)
            result.matrices.append(MatrixResult(port, protocol, exp, observed, comparison, explanation))

    # ------------------------------------------------------------------ baseline

    def baseline(self, probes: Sequence[PortProto] | None = None) -> SetResult:
        """Every pair on every port/protocol of the layout, before any test policy.

        Raises :class:`BaselineError` with the failing pairs when the cluster does not match
        (usually: something is unreachable although no policy applies)."""
        started = time.monotonic()
        probes = tuple(probes or layout_probes(self.deployment.layout))
        pre = len(self.base_policies)
        result = SetResult("baseline", "cluster", "no test policy" + (f"; {pre} pre-existing policies" if pre else ""))
        # New pods may need a moment before their first packets pass: allow a short settle.
        counted = self.probes_run
        self._measure("baseline", self.base_policies, probes, started, result,
                      started + min(20.0, self.enforcement_timeout_s))
        result.probes_run = self.probes_run - counted
        result.seconds = time.monotonic() - started
        if not result.ok:
            bad = result.mismatches()
            sample = "; ".join(f"{r['matrix']} {r['from']} -> {r['to']} observed {r['observed']}"
                               + (f" ({self.reasons[(r['from'], r['to'])]})"
                                  if self.reasons.get((r['from'], r['to'])) else "")
                               for r in bad.head(8).to_dict("records"))
            raise BaselineError(
                f"baseline: {result.summary} - without test policies the cluster should match the expectation "
                f"(everything reachable unless pre-existing policies say otherwise); fix pod networking first "
                f"(stage 03). First mismatches: {sample}")
        return result

    # ------------------------------------------------------------------ one policy set

    def _sentinels(self, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
                   probes: Sequence[PortProto]) -> dict[PortProto, list[tuple[Cell, bool]]]:
        """Per matrix, cells whose expectation changes between ``before`` and ``after`` (with the
        new expected value), a few spread over node pairs."""
        out: dict[PortProto, list[tuple[Cell, bool]]] = {}
        old_engine, new_engine = PolicyEngine(self.cluster, before), PolicyEngine(self.cluster, after)
        for port, protocol in probes:
            old, new = old_engine.matrix(port, protocol), new_engine.matrix(port, protocol)
            changed = [c for c in all_cells(self.cluster) if self._want(old, c) != self._want(new, c)]
            picked = pick_sentinels(changed, self.deployment.nodes)
            if picked:
                out[(port, protocol)] = [(c, self._want(new, c)) for c in picked]
        return out

    #: the longest one wait in the pods lasts before the operator hears how far it got
    WAIT_SLICE_S = 10.0

    def _wait_for(self, cells: Mapping[PortProto, Sequence[tuple[Cell, bool]]], started: float,
                  deadline: float, what: str, *,
                  full: Mapping[PortProto, pd.DataFrame] | None = None) -> tuple[float | None, dict[PortProto, dict[Cell, bool | None]]]:
        """Wait until ``cells`` (cell, wanted value) show their wanted values: (seconds from
        ``started`` until the last of them did, or None at ``deadline``; what was found).

        Every cell is re-probed in its own pod until it shows its value (the engine's
        ``until``), so a cell is seen changing one probe after the CNI changed it, not a round
        later. With ``full`` (matrix -> expected matrix), every cell of those matrices is waited
        for the same way, and the wait is also the verification's first pass."""
        wanted: dict[PortProto, dict[Cell, bool]] = {pp: dict(c) for pp, c in cells.items() if c}
        for pp, expected in (full or {}).items():
            wanted.setdefault(pp, {}).update({c: self._want(expected, c) for c in all_cells(self.cluster)})
        found: dict[PortProto, dict[Cell, bool | None]] = {pp: {} for pp in wanted}
        pending = {pp: list(c) for pp, c in wanted.items()}
        while pending:
            left = deadline - time.monotonic()
            for pp, got in self.probe_all(pending, until=wanted, until_s=max(0.0, min(self.WAIT_SLICE_S, left))).items():
                found[pp].update(got)
            pending = {pp: [c for c in pend if found[pp][c] is not wanted[pp][c]] for pp, pend in pending.items()}
            pending = {pp: pend for pp, pend in pending.items() if pend}
            sentinels_left = sum(1 for pp, c in cells.items() for cell, _ in c if cell in pending.get(pp, ()))
            if not pending or time.monotonic() >= deadline:
                break
            self.say(f"{what}: waiting ({sentinels_left} sentinel cell(s) and "
                     f"{sum(map(len, pending.values())) - sentinels_left} other(s) pending, "
                     f"{time.monotonic() - started:.0f}s)")
        late = [(pp, cell) for pp, c in cells.items() for cell, want in c if found[pp].get(cell) is not want]
        if late:
            self.say(f"{what}: {len(late)} sentinel cell(s) still differ after {time.monotonic() - started:.1f}s")
            return None, found
        shown = [self.answered[(pp, cell)] for pp, c in cells.items() for cell, _ in c]
        return (max(shown) - started if shown else time.monotonic() - started), found

    def verify(self, policy_set: PolicySet) -> SetResult:
        """Apply, measure, compare, explain, remove (see the module docstring)."""
        name = policy_set.name
        started_all, counted = time.monotonic(), self.probes_run
        result = SetResult(name, policy_set.source, policy_set.description)
        before = list(self.base_policies)
        after = before + list(policy_set.policies)
        sentinels = self._sentinels(before, after, policy_set.probes)
        from .workloads import marked_test_policy

        kept, removed = policy_set.kept(), [marked_test_policy(p) for p in policy_set.removed()]
        record = self.record_dir / f"policies-{name}.jsonl"
        kept_record = self.record_dir / "policies-kept.jsonl"

        self.say(f"{name}: applying {len(policy_set.policies)} polic{'y' if len(policy_set.policies) == 1 else 'ies'}")
        started = time.monotonic()
        try:
            if removed:
                result.applied += self.applier.apply(removed, record=record)
            if kept:
                result.applied += self.applier.apply(kept, record=kept_record, rollback_on_error=False)
        except Exception:
            self.rollback_fn(self.kube, record)
            raise
        deadline = started + self.enforcement_timeout_s
        try:
            first = None
            if sentinels:
                engine = PolicyEngine(self.cluster, after)
                result.latency_s, first = self._wait_for(
                    sentinels, started, deadline, f"{name}: enforcement",
                    full={pp: engine.matrix(*pp) for pp in policy_set.probes})
                if result.latency_s is None:
                    result.messages.append(f"not enforced within {self.enforcement_timeout_s:.0f}s")
                else:
                    self.say(f"{name}: enforced after {result.latency_s:.2f}s")
            else:
                self.say(f"{name}: no expected change against the current policies; nothing to time")
            self._measure(name, after, policy_set.probes, started, result, deadline, first=first)
            self.say(f"{name}: {result.summary}" + (f"; removing the {len(removed)} test polic"
                                                    f"{'y' if len(removed) == 1 else 'ies'}" if removed else ""))
        finally:
            if removed:
                self.rollback_fn(self.kube, record)
        if kept:
            self.base_policies += kept
            names = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in kept]
            self.kept += names
            result.kept = names
        # The cells this set changed must return to what the remaining policies allow.
        if removed:
            changed = {pp: cells for pp, cells in self._changed_cells(after, self.base_policies,
                                                                      policy_set.probes).items() if cells}
            if changed:
                restart = time.monotonic()
                result.restored_s, _ = self._wait_for(changed, restart, restart + self.restore_timeout_s,
                                                      f"{name}: restore")
                if result.restored_s is None:
                    result.messages.append(f"baseline did not return within {self.restore_timeout_s:.0f}s "
                                           "after removing the policies")
        result.probes_run = self.probes_run - counted
        result.seconds = time.monotonic() - started_all
        return result

    def _changed_cells(self, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
                       probes: Sequence[PortProto]) -> dict[PortProto, list[tuple[Cell, bool]]]:
        """Every cell whose expectation differs between ``before`` and ``after`` (new value)."""
        old_engine, new_engine = PolicyEngine(self.cluster, before), PolicyEngine(self.cluster, after)
        out = {}
        for port, protocol in probes:
            old, new = old_engine.matrix(port, protocol), new_engine.matrix(port, protocol)
            out[(port, protocol)] = [(c, self._want(new, c)) for c in all_cells(self.cluster)
                                     if self._want(old, c) != self._want(new, c)]
        return out
