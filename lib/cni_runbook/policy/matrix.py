"""Truth tables in the notation of the upstream netpol e2e suite and cyclonus.

A matrix is a ``pandas.DataFrame`` with nullable boolean cells: rows are sources (``"ns/pod"``,
index name ``from``), columns destinations (``to``); True = reachable, False = blocked,
``<NA>`` = unknown (probe not run or inconclusive). In text it is written with ``.`` for
allowed, ``X`` for blocked and ``?`` for unknown::

        x/a x/b y/a
    x/a  .   X   .
    x/b  X   .   .
    y/a  .   .   .

:func:`compare` counts agreeing cells as "correct N, incorrect M"; loopback cells (a pod to
itself) are ignored by default, as upstream does, because CNIs differ on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .antrea import TiersLike
from .engine import AntreaLike, PolicyEngine, PolicyLike
from .model import Cluster

ALLOWED, BLOCKED, UNKNOWN, IGNORED = ".", "X", "?", "-"


def expected_matrix(
    cluster: Cluster,
    policies: Iterable[PolicyLike],
    port: int,
    protocol: str = "TCP",
    antrea_policies: Iterable[AntreaLike] = (),
    tiers: TiersLike = None,
) -> pd.DataFrame:
    """Expected reachability of every pod pair on ``protocol/port``."""
    return PolicyEngine(cluster, policies, antrea_policies, tiers).matrix(port, protocol)


def _frame(rows: Sequence[Sequence[Any]], sources: Sequence[str], destinations: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        index=pd.Index(list(sources), name="from"),
        columns=pd.Index(list(destinations), name="to"),
        dtype="boolean",
    )


def from_notation(text: str) -> pd.DataFrame:
    """Parse a ``.``/``X``/``?`` table: a header line of destinations, then one line per source."""
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty truth table")
    header, body = lines[0], lines[1:]
    symbols = {ALLOWED: True, BLOCKED: False, "x": False, UNKNOWN: None}
    rows, sources = [], []
    for number, tokens in enumerate(body, start=2):
        if len(tokens) != len(header) + 1:
            raise ValueError(f"truth table line {number} has {len(tokens) - 1} cells, expected {len(header)}")
        sources.append(tokens[0])
        try:
            rows.append([symbols[t] for t in tokens[1:]])
        except KeyError as exc:
            raise ValueError(f"truth table line {number}: unknown cell {exc.args[0]!r} (use . X ?)") from None
    return _frame(rows, sources, header)


def to_notation(frame: pd.DataFrame) -> pd.DataFrame:
    """Boolean matrix -> ``.`` / ``X`` / ``?`` strings (for styled display)."""

    def symbol(value: Any) -> str:
        cell = _cell(value)
        return UNKNOWN if cell is None else (ALLOWED if cell else BLOCKED)

    return frame.astype(object).map(symbol)


def render(frame: pd.DataFrame) -> str:
    """Plain-text table in the notation :func:`from_notation` reads back (accepts a boolean
    matrix or one already in notation, e.g. :attr:`Comparison.diff`)."""
    values = frame.to_numpy(dtype=object).ravel()
    cells = frame if len(values) and all(isinstance(v, str) for v in values) else to_notation(frame)
    width = max([len(str(c)) for c in cells.columns] + [len(str(i)) for i in cells.index] + [1])
    lines = [" " * width + " " + " ".join(f"{c:>{width}}" for c in cells.columns)]
    for source, row in cells.iterrows():
        lines.append(f"{source:<{width}} " + " ".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def _cell(value: Any) -> bool | None:
    """A matrix cell as True / False / None; also accepts ``.`` / ``X`` / ``?`` strings."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        if value not in (ALLOWED, BLOCKED, "x", UNKNOWN):
            raise ValueError(f"unknown matrix cell {value!r} (use . X ?)")
        return None if value == UNKNOWN else value == ALLOWED
    return bool(value)


def matrix_from_records(
    records: Iterable[Any] | pd.DataFrame,
    keys: Sequence[str] | None = None,
    src: str = "src",
    dst: str = "dst",
    value: str = "allowed",
) -> pd.DataFrame:
    """Pivot probe results (dicts, dataclasses such as :class:`~.engine.Verdict`, or a
    DataFrame with ``src``/``dst``/``allowed`` columns) into a matrix. Pairs without a
    result are ``<NA>``; ``keys`` fixes row/column order (default: order of appearance)."""
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if keys is None:
        keys = list(dict.fromkeys(list(frame[src]) + list(frame[dst])))
    out = _frame([[None] * len(keys) for _ in keys], keys, keys)
    for s, d, v in zip(frame[src], frame[dst], frame[value], strict=True):
        if s in out.index and d in out.columns:
            out.loc[s, d] = _cell(v)
    return out


@dataclass(frozen=True)
class Comparison:
    """Expected vs observed, cell by cell."""

    correct: int
    incorrect: int
    unknown: int
    ignored: int
    diff: pd.DataFrame = field(repr=False)  # "." agree, "X" disagree, "?" unknown, "-" ignored
    mismatches: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.incorrect == 0 and self.unknown == 0

    @property
    def summary(self) -> str:
        text = f"correct {self.correct}, incorrect {self.incorrect}"
        return text + (f", unknown {self.unknown}" if self.unknown else "")


def compare(expected: pd.DataFrame, observed: pd.DataFrame, ignore_loopback: bool = True) -> Comparison:
    """Cell-by-cell comparison over the expected matrix's rows and columns.

    Cells missing from ``observed`` or ``<NA>`` / ``?`` there count as unknown; an unknown
    *expected* cell is an error (the engine always knows). Both matrices may be boolean or
    in ``.`` / ``X`` notation."""
    observed = observed.reindex(index=expected.index, columns=expected.columns)
    correct = incorrect = unknown = ignored = 0
    mismatches: list[tuple[str, str]] = []
    rows = []
    for source in expected.index:
        row = []
        for dest in expected.columns:
            want, got = _cell(expected.at[source, dest]), _cell(observed.at[source, dest])
            if ignore_loopback and source == dest:
                ignored += 1
                row.append(IGNORED)
            elif want is None:
                raise ValueError(f"expected matrix has no value for {source} -> {dest}")
            elif got is None:
                unknown += 1
                row.append(UNKNOWN)
            elif want == got:
                correct += 1
                row.append(ALLOWED)
            else:
                incorrect += 1
                mismatches.append((source, dest))
                row.append(BLOCKED)
        rows.append(row)
    diff = pd.DataFrame(rows, index=expected.index.copy(), columns=expected.columns.copy())
    return Comparison(correct, incorrect, unknown, ignored, diff, tuple(mismatches))


def explain_mismatches(
    comparison: Comparison,
    engine: PolicyEngine,
    port: int,
    protocol: str = "TCP",
    observed: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per incorrect cell: source, destination, expected, observed and the reasons."""
    rows: list[Mapping[str, Any]] = []
    for source, dest in comparison.mismatches:
        reasons = engine.explain(source, dest, port, protocol)
        verdict = engine.verdict(source, dest, port, protocol)
        rows.append(
            {
                "from": source,
                "to": dest,
                "expected": ALLOWED if verdict.allowed else BLOCKED,
                "observed": None if observed is None else to_notation(observed.loc[[source], [dest]]).iat[0, 0],
                "explanation": "\n".join(reasons),
            }
        )
    return pd.DataFrame(rows, columns=["from", "to", "expected", "observed", "explanation"])
