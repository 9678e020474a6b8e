"""All archived runs as one pandas table (for `cni-runbook list` and the history notebook)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import audit

COLUMNS = ["run_id", "started", "operator", "site", "plan", "stages", "status", "failed_stage",
           "duration_s", "verified"]


def load_runs(outputs: str | Path | None = None, verify: bool = True) -> pd.DataFrame:
    """One row per run folder with a run.json, oldest first; ``verified`` re-hashes each folder."""
    root = Path(outputs) if outputs else audit.outputs_root()
    rows = []
    for record_path in sorted(root.glob(f"*/{audit.RECORD}")):
        run_dir = record_path.parent
        try:
            record = audit.load_record(run_dir)
        except audit.RunbookError:
            continue
        executed = record.get("stages", [])
        failed = [s["stage"] for s in executed if s["status"] == "failed"]
        rows.append({
            "run_id": record["run_id"],
            "started": pd.Timestamp(record["started"]),
            "operator": record["operator"],
            "site": record["site"],
            "plan": record["plan"],
            "stages": ", ".join(record["selected"]),
            "status": record["status"],
            "failed_stage": failed[-1] if failed else None,
            "duration_s": round(sum(s["duration_s"] for s in executed), 1),
            "verified": not audit.verify(run_dir) if verify else None,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_runs(runs: pd.DataFrame):
    """Bar chart of run durations over time, coloured by status."""
    import matplotlib.pyplot as plt

    colours = {"passed": "tab:green", "planned": "tab:blue", "failed": "tab:red"}
    fig, ax = plt.subplots(figsize=(8, 3))
    if runs.empty:
        ax.text(0.5, 0.5, "no archived runs yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ax.bar(range(len(runs)), runs["duration_s"], color=[colours.get(s, "tab:gray") for s in runs["status"]])
    ax.set_xticks(range(len(runs)), [f"{r.site}\n{r.started:%m-%d %H:%M}" for r in runs.itertuples()], fontsize=7)
    ax.set_ylabel("duration (s)")
    ax.set_title("runs by time (green passed, blue planned, red failed)")
    fig.tight_layout()
    return fig
