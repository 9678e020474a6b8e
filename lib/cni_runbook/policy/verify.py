"""Stage 04 on a real cluster: truth tables observed, compared with the engine, explained.

The workflow (see issue 7 and ``notebooks/04_policy_qos.ipynb``):

1. :func:`cni_runbook.policy.workloads.deploy` puts the layout on the cluster (x, y, z by
   a, b, c unless the operator brings their own) and reads it back as the engine's model.
2. :meth:`Verifier.baseline` probes every pair on every port/protocol of the layout: with no
   policy (or only the namespaces' pre-existing ones) the observed matrix must equal the
   expectation - usually "everything reachable" - or nothing else is worth measuring
   (:class:`BaselineError`).
3. :meth:`Verifier.verify` runs one :class:`PolicySet` (a built-in scenario or an operator
   file): apply with a record; measure the *enforcement latency* - time from the apply until
   a handful of sentinel cells (pairs whose expected reachability changes, spread over node
   pairs) show the expected result; probe the full matrix; re-probe mismatching cells until
   they agree or ``enforcement_timeout_s`` has passed; compare (``correct N, incorrect M``)
   and explain every mismatch with the engine's reasons; then remove what was applied
   (``keep`` policies stay) and check that the cells it changed return to the baseline.

Loopback pairs are neither probed nor counted, as upstream does. Probing goes through stage
03's engine (:func:`cni_runbook.validation.probe.run_probes`; one prober exec per source pod,
every port and protocol of a set in one pass), from the layout pods' ``netexec`` container to
the destination pods' IPs.

Two times are reported per set. ``latency_s``: apply -> the sentinel pairs show the new
result (an *allowed* sentinel is seen within one probe round trip, a *blocked* one only after
the probe timeout, so a deny is timed to about ``probe_timeout_s``). ``converged_s``: apply ->
every probed pair matches; an upper bound, since it includes the probing of whole matrices.
On the lab, kube-router passes the sentinels after about 1 s but needs several more seconds
before every pair agrees (rules are rebuilt per node; pairs the policy should not touch can
flap meanwhile), which is why mismatching pairs are probed again until the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..display import Shown
from ..kube import Kube
from ..kube.apply import Applied, Applier, rollback
from . import matrix as M
from .engine import PolicyEngine
from .layout import Layout, default_layout, layout_from_dict
from .model import Cluster, NetworkPolicy, normalize_protocol
from .scenarios import builtin_scenarios
from .workloads import NETEXEC_CONTAINER, Deployment

Progress = Callable[[str], None]
Cell = tuple[str, str]
PortProto = tuple[int, str]
ProbeFn = Callable[..., list[Any]]

KEEP_ANNOTATION = "cni-runbook.io/keep"
#: Scenario names of earlier params files, mapped to the built-in scenarios they meant.
DEFAULT_PROTOCOLS = ("TCP", "UDP")
SENTINELS_PER_MATRIX = 18


class BaselineError(RuntimeError):
    """The cluster does not even match the expectation without test policies."""


class PolicyFileError(ValueError):
    """An operator policy file cannot be verified (with the file and the object named)."""


# --------------------------------------------------------------------------- policy sets


@dataclass(frozen=True)
class PolicySet:
    """Policies applied together and verified as one truth table."""

    name: str
    description: str
    policies: tuple[dict[str, Any], ...]
    probes: tuple[PortProto, ...]  # (port, protocol) matrices to probe
    source: str = "built-in"  # or the file it came from
    keep: tuple[bool, ...] = ()  # per policy: stays applied after verification

    def kept(self) -> list[dict[str, Any]]:
        return [p for p, k in zip(self.policies, self.keep or [False] * len(self.policies), strict=True) if k]

    def removed(self) -> list[dict[str, Any]]:
        return [p for p, k in zip(self.policies, self.keep or [False] * len(self.policies), strict=True) if not k]

    def yaml(self) -> str:
        return yaml.safe_dump_all(list(self.policies), sort_keys=False)


def layout_for(policy_params: Any) -> Layout:
    """The operator's layout (``policy.layout``) or x, y, z by a, b, c on ports 80/81 TCP+UDP."""
    if policy_params.layout:
        return layout_from_dict(policy_params.layout)
    return default_layout(protocols=DEFAULT_PROTOCOLS)


def layout_probes(layout: Layout) -> tuple[PortProto, ...]:
    return tuple((port, proto) for port in layout.ports for proto in layout.protocols)


def select_scenarios(names: Sequence[str], cluster: Cluster, layout: Layout) -> list[PolicySet]:
    """Built-in scenarios by name (``all`` = every one), in the order asked for."""
    scenarios = {s.name: s for s in builtin_scenarios(cluster, ports=layout.ports[:2] if len(layout.ports) >= 2
                                                      else layout.ports)}
    wanted: list[str] = []
    for raw in names:
        picked = list(scenarios) if raw == "all" else [raw]
        for name in picked:
            if name not in scenarios:
                raise ValueError(f"unknown built-in scenario {raw!r}; known: all, {', '.join(scenarios)}")
            if name not in wanted:
                wanted.append(name)
    return [
        PolicySet(s.name, s.description, tuple(dict(p) for p in s.policies), s.probes, "built-in",
                  (False,) * len(s.policies))
        for s in (scenarios[n] for n in wanted)
    ]


def load_policy_file(path: str | Path, layout: Layout, keep: bool = False) -> PolicySet:
    """An operator's NetworkPolicy manifest (multi-document YAML, or a ``kind: List``).

    Every object must be a ``networking.k8s.io/v1`` NetworkPolicy with a namespace of the test
    layout (elsewhere its effect could not be measured). ``keep`` marks all of them to stay;
    the annotation ``cni-runbook.io/keep: "true"`` marks single policies."""
    path = Path(path)
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyFileError(f"{path}: cannot read the policy file: {exc}") from None
    objects: list[dict[str, Any]] = []
    for doc in documents:
        objects.extend(doc.get("items") or [] if doc.get("kind") == "List" else [doc])
    if not objects:
        raise PolicyFileError(f"{path}: no objects in the file")
    problems, keeps = [], []
    for number, obj in enumerate(objects, 1):
        meta = obj.get("metadata") or {}
        where = f"{path}: object {number} ({obj.get('kind', '?')} {meta.get('name', '?')})"
        if obj.get("kind") != "NetworkPolicy" or obj.get("apiVersion") != "networking.k8s.io/v1":
            problems.append(f"{where}: only networking.k8s.io/v1 NetworkPolicy objects can be verified")
            continue
        namespace = meta.get("namespace")
        if not namespace:
            problems.append(f"{where}: set metadata.namespace (one of the layout's: {', '.join(layout.namespaces)})")
            continue
        if namespace not in layout.namespaces:
            problems.append(f"{where}: namespace {namespace!r} is not in the test layout "
                            f"({', '.join(layout.namespaces)}); add it under policy.layout to measure this policy")
            continue
        try:
            NetworkPolicy.from_dict(obj)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        keeps.append(keep or str((meta.get("annotations") or {}).get(KEEP_ANNOTATION, "")).lower() == "true")
    if problems:
        raise PolicyFileError("\n".join(problems))
    names = ", ".join(f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objects)
    return PolicySet(path.stem, f"operator policies from {path.name}: {names}", tuple(objects),
                     layout_probes(layout), str(path), tuple(keeps))


def policy_sets(policy_params: Any, cluster: Cluster, layout: Layout) -> list[PolicySet]:
    """Built-in scenarios first (they need a clean slate), then the operator's files in order
    (their ``keep`` policies accumulate)."""
    sets = select_scenarios(policy_params.scenarios, cluster, layout)
    sets += [load_policy_file(f, layout, policy_params.keep) for f in policy_params.files]
    names = [s.name for s in sets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"policy set names must be unique (file stems and scenarios): {', '.join(dupes)}")
    return sets


# --------------------------------------------------------------------------- results


@dataclass
class MatrixResult:
    port: int
    protocol: str
    expected: pd.DataFrame
    observed: pd.DataFrame
    comparison: M.Comparison
    explanation: pd.DataFrame

    @property
    def label(self) -> str:
        return f"{self.protocol}/{self.port}"


@dataclass
class SetResult:
    """The outcome of one policy set (or of the baseline)."""

    name: str
    source: str
    description: str
    matrices: list[MatrixResult] = field(default_factory=list)
    latency_s: float | None = None  # apply -> sentinels match (None: nothing changes)
    converged_s: float | None = None  # apply -> the full matrix matches (None: never)
    restored_s: float | None = None  # removal -> changed cells back to baseline (None: not checked)
    applied: list[Applied] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    probes_run: int = 0
    seconds: float = 0.0

    @property
    def correct(self) -> int:
        return sum(m.comparison.correct for m in self.matrices)

    @property
    def incorrect(self) -> int:
        return sum(m.comparison.incorrect for m in self.matrices)

    @property
    def unknown(self) -> int:
        return sum(m.comparison.unknown for m in self.matrices)

    @property
    def ok(self) -> bool:
        return bool(self.matrices) and all(m.comparison.ok for m in self.matrices) and not self.messages

    @property
    def status(self) -> str:
        return "passed" if self.ok else "failed"

    @property
    def summary(self) -> str:
        text = f"correct {self.correct}, incorrect {self.incorrect}"
        return text + (f", unknown {self.unknown}" if self.unknown else "")

    def row(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "source": self.source,
            "matrices": ", ".join(m.label for m in self.matrices),
            "correct": self.correct,
            "incorrect": self.incorrect,
            "unknown": self.unknown,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 2),
            "converged_s": None if self.converged_s is None else round(self.converged_s, 2),
            "restored_s": None if self.restored_s is None else round(self.restored_s, 2),
            "kept": ", ".join(self.kept),
            "status": self.status,
            "message": "; ".join(self.messages),
        }

    def check(self) -> dict[str, Any]:
        """A check for ``ctx.result``."""
        message = self.summary + (f"; {'; '.join(self.messages)}" if self.messages else "")
        if self.latency_s is not None:
            message += f"; enforced after {self.latency_s:.1f}s"
        return {"name": f"policy {self.name}", "status": self.status, "message": message, "time_s": round(self.seconds, 2)}

    def mismatches(self) -> pd.DataFrame:
        frames = [m.explanation.assign(matrix=m.label) for m in self.matrices if len(m.explanation)]
        if not frames:
            return pd.DataFrame(columns=["matrix", "from", "to", "expected", "observed", "explanation"])
        out = pd.concat(frames, ignore_index=True)
        return out[["matrix", "from", "to", "expected", "observed", "explanation"]]

    def record(self) -> dict[str, Any]:
        """JSON-ready summary with the matrices in text notation (for artifacts)."""
        return {
            **self.row(),
            "description": self.description,
            "probes_run": self.probes_run,
            "seconds": round(self.seconds, 2),
            "applied": [f"{a.ref}: {a.action}" for a in self.applied],
            "matrices": {
                m.label: {"summary": m.comparison.summary, "expected": M.render(m.expected),
                          "observed": M.render(m.observed), "diff": M.render(m.comparison.diff)}
                for m in self.matrices
            },
        }


def summary_frame(results: Iterable[SetResult]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in results])


def correct_share(results: Iterable[SetResult]) -> pd.DataFrame:
    """Sets x matrices: the share of probed pairs observed as expected (for a heatmap)."""
    rows = {r.name: {m.label: m.comparison.correct / max(1, m.comparison.correct + m.comparison.incorrect
                                                         + m.comparison.unknown) for m in r.matrices}
            for r in results}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(index="set", columns="matrix")


# --------------------------------------------------------------------------- display


_CELL_STYLE = {
    M.ALLOWED: "background-color: #d4edda; color: #155724",
    M.BLOCKED: "background-color: #f8d7da; color: #721c24; font-weight: bold",
    M.UNKNOWN: "background-color: #fff3cd",
    M.IGNORED: "background-color: #eeeeee; color: #999999",
}


def styled_matrix(frame: pd.DataFrame, caption: str | None = None, diff: bool = False) -> Shown:
    """A truth table in ``.`` / ``X`` notation, coloured (a diff: ``.`` agree, ``X`` disagree);
    HTML in Jupyter, the plain ``.``/``X`` table in batch logs."""
    notation = frame if diff else M.to_notation(frame)
    if not diff:  # loopback cells are not probed: grey them out
        notation = notation.copy()
        for key in notation.index.intersection(notation.columns):
            notation.at[key, key] = M.IGNORED
    styler = notation.style.map(lambda v: _CELL_STYLE.get(v, "")).set_properties(**{"text-align": "center"})
    if caption:
        styler = styler.set_caption(caption)
    # batch logs: a diff in full only where a pair disagrees, else one line; the expected and
    # observed tables only in the notebook (HTML), so a 9x9 layout does not flood the log
    if not diff:
        text = ""
    elif (notation == M.BLOCKED).to_numpy().any():
        text = f"{caption}\n{M.render(notation)}" if caption else M.render(notation)
    else:
        text = f"{caption}: every pair as expected" if caption else "every pair as expected"
    return Shown(text, html=styler.to_html())


def as_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """A boolean matrix as 1 (allowed) / 0 (blocked) / NaN, for heatmaps."""
    return frame.astype("Float64").astype(float)


def diff_numbers(diff: pd.DataFrame) -> pd.DataFrame:
    """A comparison diff as 1 (agree) / 0 (disagree) / NaN (unknown or loopback), for heatmaps."""
    return diff.map(lambda v: {M.ALLOWED: 1.0, M.BLOCKED: 0.0}.get(v, float("nan")))


# --------------------------------------------------------------------------- probing


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
        self.applier = applier or Applier(kube, progress=self.say)
        self.rollback_fn = rollback_fn or rollback
        #: policies in force besides the set under test: pre-existing ones, then kept ones
        self.base_policies: list[dict[str, Any]] = list(deployment.existing_policies)
        self.kept: list[str] = []
        self.reasons: dict[Cell, str] = {}
        self.ips = {p.key: str(p.ips[0]) for p in self.cluster.pods if p.ips}
        missing = [p.key for p in self.cluster.pods if not p.ips]
        if missing:
            raise ValueError(f"pods without an IP cannot be probed: {', '.join(missing)}")

    # ------------------------------------------------------------------ probing

    def probe(self, cells: Sequence[Cell], port: int, protocol: str) -> dict[Cell, bool | None]:
        """Observed reachability of ``cells`` on ``protocol/port`` (None: unknown)."""
        return self.probe_all({(port, protocol): cells}).get((port, protocol), {})

    def probe_all(self, wanted: Mapping[PortProto, Sequence[Cell]]) -> dict[PortProto, dict[Cell, bool | None]]:
        """Observed reachability of the cells of every port/protocol. One engine call per protocol:
        agnhost probes (UDP) in the same burst as the TCP ones were killed for slow start-up on a
        loaded lab (issue 13); TCP ports share a call."""
        by_proto: dict[str, dict[PortProto, Sequence[Cell]]] = {}
        for pp, cells in wanted.items():
            by_proto.setdefault(pp[1].upper(), {})[pp] = cells
        if len(by_proto) > 1:
            out: dict[PortProto, dict[Cell, bool | None]] = {}
            for part in by_proto.values():
                out.update(self.probe_all(part))
            return out
        keys = [(pp, cell) for pp, cells in wanted.items() for cell in cells]
        if not keys:
            return {}
        probes = [_make_probe(s, self.ips[d], port, protocol, f"{s}->{d}") for (port, protocol), (s, d) in keys]
        results = self.probe_fn(self.kube, probes, timeout_s=self.probe_timeout_s, attempts=self.attempts,
                                concurrency=self.concurrency, container=NETEXEC_CONTAINER)
        out: dict[PortProto, dict[Cell, bool | None]] = {pp: {} for pp in wanted}
        for (pp, cell), r in zip(keys, results, strict=True):
            self.reasons[cell] = getattr(r, "reason", "") or ""
            out[pp][cell] = r.ok
        return out

    def _why(self, cells: Iterable[Cell]) -> str:
        """The most common probe failure reasons among ``cells``, for progress messages."""
        counts: dict[str, int] = {}
        for cell in cells:
            reason = self.reasons.get(cell) or "reachable"
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
                 started: float, result: SetResult, deadline: float) -> None:
        """Probe every matrix, re-probe mismatches until they agree or ``deadline``; fill ``result``."""
        engine = PolicyEngine(self.cluster, policies)
        cells = all_cells(self.cluster)
        found: dict[PortProto, dict[Cell, bool | None]] = {}
        expected: dict[PortProto, pd.DataFrame] = {}
        for port, protocol in probes:
            expected[(port, protocol)] = engine.matrix(port, protocol)
        self.say(f"{name}: probing {len(cells)} pairs on {', '.join(f'{pr}/{po}' for po, pr in probes)}")
        found.update(self.probe_all({pp: cells for pp in probes}))
        result.probes_run += len(cells) * len(probes)
        while True:
            wrong = {pp: [c for c, v in found[pp].items() if v is None or v != self._want(expected[pp], c)]
                     for pp in found}
            total = sum(len(w) for w in wrong.values())
            if total == 0:
                result.converged_s = time.monotonic() - started
                break
            if time.monotonic() >= deadline:
                break
            self.say(f"{name}: {total} cell(s) differ from the expectation "
                     f"({self._why(c for w in wrong.values() for c in w)}); probing them again")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            for pp, again in self.probe_all({pp: bad for pp, bad in wrong.items() if bad}).items():
                found[pp].update(again)
                result.probes_run += len(again)
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
        self._measure("baseline", self.base_policies, probes, started, result,
                      started + min(20.0, self.enforcement_timeout_s))
        result.seconds = time.monotonic() - started
        if not result.ok:
            bad = result.mismatches()
            sample = "; ".join(f"{r['matrix']} {r['from']} -> {r['to']} observed {r['observed']}"
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

    def _wait_for(self, cells: Mapping[PortProto, Sequence[tuple[Cell, bool]]], started: float,
                  deadline: float, what: str) -> float | None:
        """Probe ``cells`` until each shows its wanted value; seconds since ``started`` or None."""
        pending = {pp: list(c) for pp, c in cells.items() if c}
        rounds = 0
        while pending:
            rounds += 1
            found = self.probe_all({pp: [c for c, _ in cells] for pp, cells in pending.items()})
            for pp in list(pending):
                pending[pp] = [(c, want) for c, want in pending[pp] if found[pp].get(c) is not want]
                if not pending[pp]:
                    del pending[pp]
            if not pending:
                break
            if time.monotonic() >= deadline:
                left = sum(len(v) for v in pending.values())
                self.say(f"{what}: {left} sentinel cell(s) still differ after {time.monotonic() - started:.1f}s")
                return None
            if rounds % 5 == 0:
                self.say(f"{what}: waiting ({sum(len(v) for v in pending.values())} sentinel cell(s) pending, "
                         f"{time.monotonic() - started:.0f}s)")
            time.sleep(0.2)
        return time.monotonic() - started

    def verify(self, policy_set: PolicySet) -> SetResult:
        """Apply, measure, compare, explain, remove (see the module docstring)."""
        name = policy_set.name
        started_all = time.monotonic()
        result = SetResult(name, policy_set.source, policy_set.description)
        before = list(self.base_policies)
        after = before + list(policy_set.policies)
        sentinels = self._sentinels(before, after, policy_set.probes)
        kept, removed = policy_set.kept(), policy_set.removed()
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
            self.rollback_fn(self.kube, record, progress=self.say)
            raise
        deadline = started + self.enforcement_timeout_s
        try:
            if sentinels:
                result.latency_s = self._wait_for(sentinels, started, deadline, f"{name}: enforcement")
                if result.latency_s is None:
                    result.messages.append(f"not enforced within {self.enforcement_timeout_s:.0f}s")
                else:
                    self.say(f"{name}: enforced after {result.latency_s:.2f}s")
            else:
                self.say(f"{name}: no expected change against the current policies; nothing to time")
            self._measure(name, after, policy_set.probes, started, result, deadline)
            self.say(f"{name}: {result.summary}")
        finally:
            if removed:
                self.say(f"{name}: removing the {len(removed)} test polic{'y' if len(removed) == 1 else 'ies'}")
                self.rollback_fn(self.kube, record, progress=self.say)
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
                result.restored_s = self._wait_for(changed, restart, restart + self.restore_timeout_s,
                                                   f"{name}: restore")
                if result.restored_s is None:
                    result.messages.append(f"baseline did not return within {self.restore_timeout_s:.0f}s "
                                           "after removing the policies")
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


# --------------------------------------------------------------------------- the whole run


@dataclass
class PolicyRun:
    """Everything :func:`run` did: the deployment, the baseline, one result per policy set."""

    layout: Layout
    deployment: Deployment | None = None
    baseline: SetResult | None = None
    results: list[SetResult] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and self.baseline is not None and all(r.ok for r in self.results)

    def placement(self) -> list[dict[str, str]]:
        """Where each layout pod ran, with its IP."""
        if self.deployment is None:
            return []
        return [{"pod": p.key, "node": self.deployment.nodes.get(p.key, ""), "ip": ", ".join(map(str, p.ips))}
                for p in self.deployment.cluster.pods]

    def checks(self) -> list[dict[str, Any]]:
        out = []
        if self.error:
            out.append({"name": "policy baseline", "status": "failed", "message": self.error})
        elif self.baseline is not None:
            out.append({"name": "policy baseline", "status": "passed",
                        "message": f"{self.baseline.summary} (no test policy)", "time_s": round(self.baseline.seconds, 2)})
        return out + [r.check() for r in self.results]

    @property
    def summary(self) -> str:
        if self.error:
            return self.error.split(" - ")[0]
        passed = sum(r.ok for r in self.results)
        correct, incorrect = sum(r.correct for r in self.results), sum(r.incorrect for r in self.results)
        latencies = [r.latency_s for r in self.results if r.latency_s is not None]
        text = f"policy: {passed}/{len(self.results)} sets as expected (correct {correct}, incorrect {incorrect})"
        return text + (f", enforced within {max(latencies):.1f}s" if latencies else "")


def run(
    kube: Kube,
    policy_params: Any,
    image: str,
    record_dir: Path,
    *,
    concurrency: int = 9,
    progress: Progress | None = None,
) -> PolicyRun:
    """Deploy the layout, probe the baseline, verify every policy set, remove the layout.

    The operator's files are checked against the layout before anything is deployed; the
    layout is removed even when a step fails (what this run created, nothing else)."""
    from . import workloads

    say = progress or (lambda _m: None)
    started = time.monotonic()
    layout = layout_for(policy_params)
    policy_sets(policy_params, layout.cluster(), layout)  # fail on bad files before touching anything
    result = PolicyRun(layout)
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    try:
        say(f"deploying the layout: {len(layout.namespaces)} namespaces, {len(layout.pods)} pods")
        result.deployment = workloads.deploy(kube, layout, image, record_dir / "workloads.jsonl", progress=say)
        sets = policy_sets(policy_params, result.deployment.cluster, layout)  # with the real pod IPs
        verifier = Verifier(kube, result.deployment, record_dir, probe_timeout_s=policy_params.probe_timeout_s,
                            enforcement_timeout_s=policy_params.enforcement_timeout_s, concurrency=concurrency,
                            progress=say)
        try:
            result.baseline = verifier.baseline()
        except BaselineError as exc:
            result.error = str(exc)
            return result
        say(f"baseline: {result.baseline.summary}")
        for number, policy_set in enumerate(sets, 1):
            say(f"[{number}/{len(sets)}] {policy_set.name}: {policy_set.description}")
            result.results.append(verifier.verify(policy_set))
        result.kept = list(verifier.kept)
    finally:
        if result.deployment is not None:
            created = set(result.deployment.created_namespaces)
            lost = [k for k in verifier.kept if k.split("/")[0] in created] if "verifier" in locals() else []
            if lost:
                say(f"note: kept policies {', '.join(lost)} live in namespaces this run created and go with them")
            say("removing the layout")
            result.removed = [a.ref for a in workloads.remove(kube, result.deployment, progress=say)]
        result.seconds = time.monotonic() - started
    return result


# --------------------------------------------------------------------------- plan mode


@dataclass
class PlannedSet:
    policy_set: PolicySet
    expected: dict[str, pd.DataFrame]  # "TCP/80" -> matrix

    def row(self) -> dict[str, Any]:
        blocked = {label: sum(not m.at[s, d] for s in m.index for d in m.columns if s != d)
                   for label, m in self.expected.items()}
        return {
            "set": self.policy_set.name,
            "source": self.policy_set.source,
            "policies": ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                                  for p in self.policy_set.policies),
            "matrices": ", ".join(self.expected),
            "blocked pairs": ", ".join(f"{k}: {v}" for k, v in blocked.items()),
            "keep": ", ".join(p["metadata"]["name"] for p in self.policy_set.kept()),
            "description": self.policy_set.description,
        }


def plan(policy_params: Any) -> tuple[Layout, Cluster, list[PlannedSet]]:
    """Plan mode: the layout, its offline model (synthetic pod IPs from the layout's pod CIDR)
    and every policy set with its expected matrices. Touches nothing."""
    layout = layout_for(policy_params)
    cluster = layout.cluster()
    planned = []
    base: list[dict[str, Any]] = []
    for policy_set in policy_sets(policy_params, cluster, layout):
        engine = PolicyEngine(cluster, base + list(policy_set.policies))
        expected = {f"{normalize_protocol(proto)}/{port}": engine.matrix(port, proto) for port, proto in policy_set.probes}
        planned.append(PlannedSet(policy_set, expected))
        base += policy_set.kept()
    return layout, cluster, planned


__all__ = [
    "BaselineError",
    "KEEP_ANNOTATION",
    "MatrixResult",
    "PlannedSet",
    "PolicyFileError",
    "PolicyRun",
    "PolicySet",
    "SetResult",
    "Verifier",
    "all_cells",
    "as_numbers",
    "correct_share",
    "diff_numbers",
    "layout_for",
    "layout_probes",
    "load_policy_file",
    "pick_sentinels",
    "plan",
    "policy_sets",
    "run",
    "select_scenarios",
    "styled_matrix",
    "summary_frame",
]
