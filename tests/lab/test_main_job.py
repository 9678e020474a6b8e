"""The main job (`make run`: every stage with params/lab.yaml against the lab) as a CI reader and
a change board meet it, twice in a row on one lab (the second run finds the first one's lab up,
with its CNI): every stage passes, the console is short and ends with the recap, and report.html
embeds every figure with no text stand-ins (``<Figure size``, Styler reprs, ``nan``)."""

from __future__ import annotations

import json

import pytest

from cni_runbook import cli
from cni_runbook.lab import cluster
from cni_runbook.params import LAB_FILE

pytestmark = pytest.mark.lab
CONSOLE_LINES = 300  # issue 11: a passing `make run` logs fewer lines than this


@pytest.fixture(autouse=True)
def private_state(tmp_path, monkeypatch):
    monkeypatch.setenv("CNI_RUNBOOK_PRIVATE_HOME", str(tmp_path / "private"))


@pytest.mark.parametrize("run", ["first", "second"])
def test_the_main_job_passes_with_a_short_console_and_a_readable_report(run, lab, kit, tmp_path, capsys):
    if run == "second":  # `make run` again: stage 00 rebuilds the lab the first run left up
        assert cluster.phase(lab.cfg) == "cluster", "the first run did not leave its lab up"
    rc = cli.main(["--outputs", str(tmp_path / "out"), "run", "--params", str(LAB_FILE)])
    console = capsys.readouterr().err
    lab.has_cni = True  # the run leaves the lab up with its CNI (stage 02 installed it)
    assert rc == 0, console[-4000:]
    [run_dir] = (tmp_path / "out").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    statuses = {s["stage"]: s["status"] for s in record["stages"]}
    assert statuses == {"00_preflight": "passed", "01_cluster_no_cni": "passed", "02_cni_install": "passed",
                        "03_validation": "passed", "04_policy_qos": "passed", "05_cni_lifecycle": "skipped"}

    lines = console.rstrip("\n").splitlines()
    assert len(lines) < CONSOLE_LINES, f"{len(lines)} console lines:\n" + "\n".join(lines)
    recap = next(i for i, line in enumerate(lines) if "Recap of run" in line)
    tail = lines[recap:]
    assert len(tail) == 10 and "all 6 stages passed (1 skipped)" in tail[-3], "\n".join(tail)
    assert tail[-2].strip().startswith("report: ") and tail[-1].strip().startswith("junit: ")
    assert "Traceback" not in console and "Styler" not in console and "task/s]" not in console

    assert kit.report_problems(run_dir) == []
    html = (run_dir / "report.html").read_text()
    for figure in ("connectivity matrices", "throughput: pod vs host network", "round-trip latency",
                   "policy enforcement latency per set", "share of pairs as expected", "bandwidth: measured vs limit"):
        assert f'<img alt="{figure}' in html, figure  # every plot the stages announce, with its alt text
