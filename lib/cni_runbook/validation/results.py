"""Suite results as one tidy DataFrame, with the summaries, matrices and reports built from it.

One row per test: ``test, family, src_pod, src_node, target, dst_node, protocol, result
(passed|failed|skipped), latency_ms, attempts, reason, value, unit`` (``value``/``unit``
only for perf rows: Mbit/s, ms, ratio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

COLUMNS = ["test", "family", "src_pod", "src_node", "target", "dst_node", "protocol", "result", "latency_ms",
           "attempts", "reason", "value", "unit"]
RESULTS = ("passed", "failed", "skipped")


def frame_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["latency_ms"] = pd.to_numeric(df["latency_ms"], errors="coerce").round(3)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["attempts"] = pd.to_numeric(df["attempts"], errors="coerce").fillna(0).astype(int)
    for col in ("src_pod", "src_node", "target", "dst_node", "protocol", "reason", "unit"):
        df[col] = df[col].fillna("")
    return df


def counts(df: pd.DataFrame) -> dict[str, int]:
    found = df["result"].value_counts().to_dict() if not df.empty else {}
    return {r: int(found.get(r, 0)) for r in RESULTS}


def summary_line(df: pd.DataFrame, named: int = 3) -> str:
    """``N passed, M failed, K skipped`` (plus retried passes), then the first ``named`` failures with
    the node(s) at fault and why, so the one-line outcome the CLI prints says where to look."""
    c = counts(df)
    line = f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
    retried = int(((df["result"] == "passed") & (df["attempts"] > 1)).sum()) if not df.empty else 0
    line += f" ({retried} passed after a retry)" if retried else ""
    failed = df[df["result"] == "failed"] if not df.empty else df
    if len(failed):
        parts = []
        for row in failed.head(named).itertuples():
            src, dst = getattr(row, "src_node", "") or "", getattr(row, "dst_node", "") or ""
            nodes = f"node {src}" + (f" -> {dst}" if dst and dst != src else "") if src else ""
            reason = str(row.reason or "").splitlines()[0][:120] if row.reason else ""
            parts.append(f"{row.test}" + (f" ({nodes})" if nodes else "") + (f": {reason}" if reason else ""))
        more = f"; +{len(failed) - named} more" if len(failed) > named else ""
        line += "; failed: " + "; ".join(parts) + more
    return line


def family_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per family: counts and the slowest passing probe."""
    if df.empty:
        return pd.DataFrame(columns=["family", *RESULTS, "p50_ms", "max_ms", "status"])
    rows = []
    for family, group in df.groupby("family", sort=False):
        c = counts(group)
        lat = group.loc[(group["result"] == "passed") & group["unit"].eq(""), "latency_ms"].dropna()
        status = "failed" if c["failed"] else ("passed" if c["passed"] else "skipped")
        rows.append({"family": family, **c, "p50_ms": round(lat.median(), 2) if len(lat) else None,
                     "max_ms": round(lat.max(), 2) if len(lat) else None, "status": status})
    return pd.DataFrame(rows)


def failures(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["test", "src_pod", "target", "attempts", "reason"]
    return df.loc[df["result"] == "failed", cols].reset_index(drop=True)


def matrix(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """Source node x destination node: share of passing tests (1.0 all pass, 0.0 none; NaN: skipped)."""
    sub = df[(df["family"] == family) & (df["src_node"] != "") & (df["dst_node"] != "") & (df["result"] != "skipped")]
    if sub.empty:
        return pd.DataFrame()
    score = sub.assign(ok=(sub["result"] == "passed").astype(float))
    table = score.pivot_table(index="src_node", columns="dst_node", values="ok", aggfunc="mean")
    table.index.name, table.columns.name = "from", "to"
    return table


def matrix_families(df: pd.DataFrame) -> list[str]:
    """Families that have a node x node shape (more than one destination node)."""
    out = []
    for family, group in df.groupby("family", sort=False):
        if group["dst_node"].replace("", pd.NA).dropna().nunique() > 1:
            out.append(family)
    return out


def checks(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Every test as a stage check (``ctx.result(checks=...)`` turns them into junit.xml)."""
    out = []
    for row in df.itertuples(index=False):
        message = row.reason
        if row.result == "passed" and row.attempts > 1:
            message = f"passed on attempt {row.attempts}"
        if row.unit and pd.notna(row.value):
            message = f"{row.value:g} {row.unit}" + (f"; {row.reason}" if row.reason else "")
        time_s = (row.latency_ms / 1000.0) if pd.notna(row.latency_ms) else None
        out.append({"name": row.test, "status": row.result, "message": message, "time_s": time_s})
    return out


def junit_xml(df: pd.DataFrame, suite: str = "03_validation") -> str:
    from ..audit import junit_xml as render

    return render(suite, checks(df))


@dataclass
class SuiteResult:
    frame: pd.DataFrame
    layout: Any
    timings: dict[str, float] = field(default_factory=dict)
    cleanup: str = ""
    topology: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return summary_line(self.frame)

    @property
    def counts(self) -> dict[str, int]:
        return counts(self.frame)

    @property
    def status(self) -> str:
        c = self.counts
        return "failed" if c["failed"] else ("passed" if c["passed"] else "skipped")

    def timing_line(self) -> str:
        t = self.timings
        parts = [f"{k.removesuffix('_s')} {v:.1f}s" for k, v in t.items() if k != "total_s"]
        return f"total {t.get('total_s', 0):.1f}s (" + ", ".join(parts) + ")"


__all__ = ["COLUMNS", "SuiteResult", "frame_from_rows", "counts", "summary_line", "family_table", "failures",
           "matrix", "matrix_families", "checks", "junit_xml"]
