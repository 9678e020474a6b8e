"""History: every archived run as a table row, and its plot."""

from __future__ import annotations

from cni_runbook import history


def test_runs_table(plan_run, run_copy):
    runs = history.load_runs(plan_run["outputs"])
    (row,) = runs.to_dict("records")
    assert row["run_id"] == plan_run["run_dir"].name
    assert (row["site"], row["status"], row["plan"], row["verified"], row["failed_stage"]) == ("canary", "planned", True, True, None)
    assert row["stages"].startswith("00_preflight, 01_cluster_no_cni")
    assert row["duration_s"] > 0
    (run_copy / "run.log").unlink()
    assert history.load_runs(run_copy.parent)["verified"].tolist() == [False]


def test_empty_outputs_and_plots(tmp_path, plan_run):
    empty = history.load_runs(tmp_path)
    assert empty.empty and list(empty.columns) == history.COLUMNS
    assert history.plot_runs(empty).figure.axes[0].texts[0].get_text() == "no archived runs yet"
    fig = history.plot_runs(history.load_runs(plan_run["outputs"])).figure
    assert len(fig.axes[0].patches) == 1
