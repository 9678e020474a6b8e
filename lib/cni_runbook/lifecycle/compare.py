"""Before/after side by side and the disruption summary (pure: DataFrames in, DataFrames out)."""

from __future__ import annotations

from typing import Any

import pandas as pd

OUTAGE_COLUMNS = ["pair", "src_node", "dst_node", "start_s", "end_s"]


def side_by_side(before: pd.DataFrame | None, after: pd.DataFrame | None, *, key: str = "test",
                 value: str = "status") -> pd.DataFrame:
    """One row per ``key``: its ``value`` before and after, and whether it changed."""
    def column(frame: pd.DataFrame | None) -> pd.Series:
        if frame is None or key not in getattr(frame, "columns", ()) or value not in frame.columns:
            return pd.Series(dtype=object)
        return frame.set_index(key)[value]

    b, a = column(before), column(after)
    keys = list(dict.fromkeys([*b.index, *a.index]))
    rows = [{key: k, "before": b.get(k, "-"), "after": a.get(k, "-"),
             "changed": "" if b.get(k, "-") == a.get(k, "-") else "CHANGED"} for k in keys]
    return pd.DataFrame(rows, columns=[key, "before", "after", "changed"])


def disruption_summary(outages: pd.DataFrame, pairs: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Per pair: outage count, total and longest outage (s); pairs without an outage get zeros.

    ``outages``: one row per outage window (:data:`OUTAGE_COLUMNS`); ``pairs``: every probed pair
    ({pair, src_node, dst_node}), so that undisturbed pairs are listed too.
    """
    frame = outages if outages is not None else pd.DataFrame(columns=OUTAGE_COLUMNS)
    frame = frame.assign(duration_s=(frame["end_s"] - frame["start_s"]).clip(lower=0)) if len(frame) else \
        frame.assign(duration_s=pd.Series(dtype=float))
    rows = {}
    for p in pairs or []:
        rows[p["pair"]] = {"pair": p["pair"], "src_node": p.get("src_node", ""), "dst_node": p.get("dst_node", ""),
                           "outages": 0, "total_s": 0.0, "max_s": 0.0}
    for r in frame.itertuples():
        row = rows.setdefault(r.pair, {"pair": r.pair, "src_node": r.src_node, "dst_node": r.dst_node,
                                       "outages": 0, "total_s": 0.0, "max_s": 0.0})
        row["outages"] += 1
        row["total_s"] = round(row["total_s"] + float(r.duration_s), 3)
        row["max_s"] = round(max(row["max_s"], float(r.duration_s)), 3)
    return pd.DataFrame(list(rows.values()), columns=["pair", "src_node", "dst_node", "outages", "total_s", "max_s"])


def disruption_figures(summary: pd.DataFrame) -> dict[str, float]:
    """Median and max of the per-pair total outage (s): the figures a benchmark prints."""
    if summary is None or not len(summary):
        return {"pairs": 0, "median_outage_s": 0.0, "max_outage_s": 0.0}
    return {"pairs": int(len(summary)), "median_outage_s": float(summary["total_s"].median()),
            "max_outage_s": float(summary["max_s"].max())}


def per_node(summary: pd.DataFrame) -> pd.DataFrame:
    """Total outage per node (as source or destination of a pair)."""
    if summary is None or not len(summary):
        return pd.DataFrame(columns=["node", "pairs", "total_s", "max_s"])
    long = pd.concat([summary.rename(columns={"src_node": "node"})[["node", "total_s", "max_s"]],
                      summary.rename(columns={"dst_node": "node"})[["node", "total_s", "max_s"]]])
    return long.groupby("node").agg(pairs=("total_s", "size"), total_s=("total_s", "sum"),
                                    max_s=("max_s", "max")).reset_index()


__all__ = ["OUTAGE_COLUMNS", "disruption_figures", "disruption_summary", "per_node", "side_by_side"]
