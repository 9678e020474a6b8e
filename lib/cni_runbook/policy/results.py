"""Stage 04's results: one :class:`SetResult` per policy set (or the baseline), one
:class:`MatrixResult` per port/protocol, and the tables built from them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..kube.apply import Applied
from . import matrix as M


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

    def first_mismatches(self, limit: int = 3) -> str:
        """The first incorrect pairs by name, e.g. ``x/a -> y/b TCP/80: observed allowed, expected
        blocked`` ('' when every pair was as expected)."""
        words = {M.ALLOWED: "allowed", M.BLOCKED: "blocked", M.UNKNOWN: "unknown"}
        frame = self.mismatches()
        pairs = [f"{r['from']} -> {r['to']} {r['matrix']}: observed {words.get(r['observed'], r['observed'])}, "
                 f"expected {words.get(r['expected'], r['expected'])}" for r in frame.head(limit).to_dict("records")]
        more = f" (+{len(frame) - limit} more)" if len(frame) > limit else ""
        return ", ".join(pairs) + more

    def check(self) -> dict[str, Any]:
        """A check for ``ctx.result``; a failed set names its first incorrect pairs."""
        message = self.summary + (f"; {'; '.join(self.messages)}" if self.messages else "")
        if self.incorrect:
            message += f"; {self.first_mismatches()}"
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
