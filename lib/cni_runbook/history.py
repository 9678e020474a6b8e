"""All archived runs as one pandas table (for `cni-runbook list` and the history notebook), and
the facts a person asks first about a run: which CNI and version, on which cluster."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd

from . import audit

COLUMNS = ["run_id", "started", "operator", "site", "cluster", "cni", "cni_version", "plan", "stages", "status",
           "failed_stage", "duration_s", "verified"]
SHORT_COLUMNS = ["run_id", "started", "site", "cni", "cni_version", "status", "duration_s", "verified"]


def _stage_data(run_dir: Path, record: dict[str, Any], stage_id: str) -> dict[str, Any]:
    """``data`` of the last recorded result of a stage ({} if none)."""
    for s in reversed(record.get("stages", [])):
        if s["stage"] == stage_id and s.get("artifacts"):
            try:
                return json.loads((run_dir / s["artifacts"] / "result.json").read_text()).get("data") or {}
            except (OSError, ValueError):
                return {}
    return {}


def _workload_image(run_dir: Path, record: dict[str, Any]) -> str | None:
    """The first DaemonSet image stage 02 rendered (the CNI's agent), from objects.csv."""
    for s in reversed(record.get("stages", [])):
        if s["stage"] != "02_cni_install" or not s.get("artifacts"):
            continue
        path = run_dir / s["artifacts"] / "objects.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        for kind in ("DaemonSet", "Deployment"):
            for row in rows:
                if row.get("kind") == kind and row.get("images"):
                    return row["images"].split(",")[0].strip()
    return None


def run_facts(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """``{"cni": {name, profile, version, route, image}, "cluster": {name, server, kubernetes}}``
    from the params and what stages 01 and 02 recorded (None where a stage has not said)."""
    params = record.get("params") or {}
    cni = params.get("cni") or {}
    image = _workload_image(run_dir, record)
    name = version = None
    if image:
        last = image.rsplit("/", 1)[-1]
        base, _, tag = last.partition("@")[0].partition(":")
        name, version = base, tag or None
    profile = cni.get("profile")
    if profile and profile not in ("lab", "generic"):
        name = profile
    cluster_data = _stage_data(run_dir, record, "01_cluster_no_cni")
    return {
        "cni": {"name": name or profile, "profile": profile, "version": cni.get("version") or version,
                "route": cni.get("route"), "image": image},
        "cluster": {"name": (params.get("cluster") or {}).get("name"), "server": cluster_data.get("server"),
                    "kubernetes": cluster_data.get("version")},
    }


def cni_label(record: dict[str, Any]) -> str:
    """``kube-router v2.1.0`` (what `list` and the report header show)."""
    cni = record.get("cni") or {}
    return " ".join(str(x) for x in (cni.get("name"), cni.get("version")) if x) or "-"


def rolled_back(run_dir: Path) -> bool:
    """True if ``cni-runbook rollback`` removed what the run's stage 02 created (``<run>.rollback-*/``)."""
    return any((p / "rollback.json").is_file() for p in run_dir.parent.glob(f"{run_dir.name}.rollback-*"))


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
        facts = {k: record.get(k) or v for k, v in run_facts(run_dir, record).items()}
        cluster = facts["cluster"]
        rows.append({
            "run_id": record["run_id"],
            "started": pd.Timestamp(record["started"]),
            "operator": record["operator"],
            "site": record["site"],
            "cluster": cluster.get("server") or cluster.get("name") or "",
            "cni": facts["cni"].get("name") or "",
            "cni_version": facts["cni"].get("version") or "",
            "plan": record["plan"],
            "stages": ", ".join(record["selected"]),
            # a hard-killed run shows as abandoned; a run whose stage 02 was rolled back says so
            "status": audit.effective_status(record) + (", rolled back" if rolled_back(run_dir) else ""),
            "failed_stage": failed[-1] if failed else None,
            "duration_s": round(sum(s["duration_s"] for s in executed), 1),
            "verified": not audit.verify(run_dir) if verify else None,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_runs(runs: pd.DataFrame):
    """Bar chart of run durations over time, coloured by status (an embedded PNG)."""
    from . import display

    colours = {"passed": "tab:green", "planned": "tab:blue", "failed": "tab:red"}
    fig = display._new_figure(8, 3)
    ax = fig.add_subplot()
    if runs.empty:
        ax.text(0.5, 0.5, "no archived runs yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return display.figure(fig, "runs by time (none yet)")
    ax.bar(range(len(runs)), runs["duration_s"], color=[colours.get(s, "tab:gray") for s in runs["status"]])
    ax.set_xticks(range(len(runs)), [f"{r.site}\n{r.started:%m-%d %H:%M}" for r in runs.itertuples()], fontsize=7)
    ax.set_ylabel("duration (s)")
    ax.set_title("runs by time (green passed, blue planned, red failed)")
    return display.figure(fig, f"runs by time: {len(runs)} runs")
