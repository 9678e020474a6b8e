"""A runner stopped by SIGTERM/SIGHUP, or killed outright: the record is finalised, or detected and closed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cni_runbook import audit, history, runner

STAGE_BODY = [
    # stands for a stage's test workloads: created, then removed by the stage's own clean-up
    "import pathlib, time\nflag = pathlib.Path(FLAG)\n(ctx.artifacts / 'workload').write_text('created')\n"
    "try:\n    while flag.exists():\n        (ctx.artifacts / 'started').touch()\n        time.sleep(0.2)\n"
    "finally:\n    (ctx.artifacts / 'workload').unlink()\n    (ctx.artifacts / 'cleaned').write_text('yes')",
]


def _start(tmp_path: Path, kit) -> tuple[subprocess.Popen, Path, Path]:
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    flag = tmp_path / "hold"
    flag.write_text("")
    kit.stage_notebook(nbs / "00_preflight.ipynb", [f"FLAG = {str(flag)!r}"] + STAGE_BODY)
    out = tmp_path / "out"
    code = ("import sys; from pathlib import Path; from cni_runbook import runner\n"
            f"r = runner.start([], stage_refs=['00'], plan=True, outputs=Path({str(out)!r}), notebooks_dir=Path({str(nbs)!r}))\n"
            "print(r.status)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/artifacts/00_preflight/started")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stage never started"
        time.sleep(0.3)
    (run_dir,) = list(out.iterdir())
    return proc, run_dir, flag


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_finalise_the_record_and_resume_works(tmp_path, kit, signum):
    proc, run_dir, flag = _start(tmp_path, kit)
    t0 = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30, err
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["interrupted_by"] == signum.name, err
    assert record["stages"][0]["status"] == "interrupted"
    assert f"interrupted by {signum.name}" in record["stages"][0]["summary"]
    assert audit.verify(run_dir) == []
    art = run_dir / "artifacts" / "00_preflight"
    assert (art / "cleaned").read_text() == "yes" and not (art / "workload").exists()  # the stage cleaned up
    assert not list(Path(tempfile.gettempdir()).glob(f"{runner.STAGING_PREFIX}{run_dir.name}-*"))
    flag.unlink()
    result = runner.resume(run_dir.name, run_dir.parent, notebooks_dir=tmp_path / "nbs")
    assert result.status == "planned"
    assert [s["status"] for s in audit.load_record(run_dir)["stages"]] == ["interrupted", "planned"]
    assert audit.verify(run_dir) == []


def test_a_hard_kill_is_detected_closed_as_abandoned_and_resumed(tmp_path, kit):
    proc, run_dir, flag = _start(tmp_path, kit)
    proc.kill()
    proc.wait(timeout=30)
    flag.unlink()  # the orphaned kernel's cell ends too (it runs in its own session)
    time.sleep(2)
    record = audit.load_record(run_dir)
    assert record["status"] == "running"
    assert "is gone" in audit.abandoned(record)
    runs = history.load_runs(run_dir.parent)
    assert runs.loc[0, "status"] == "abandoned" and not runs.loc[0, "verified"]
    problems = audit.verify(run_dir)
    assert any("abandoned" in p and "cni-runbook repair" in p for p in problems)
    closed = runner.repair(run_dir.name, run_dir.parent)
    assert closed["status"] == "abandoned" and closed["stages"][0]["status"] == "abandoned"
    assert "artifacts/00_preflight/started" in closed["abandoned"]["adopted_files"]
    assert audit.verify(run_dir) == []
    assert history.load_runs(run_dir.parent).loc[0, "status"] == "abandoned"
    with pytest.raises(audit.RunbookError, match="is not abandoned"):
        runner.repair(run_dir.name, run_dir.parent)
    result = runner.resume(run_dir.name, run_dir.parent, notebooks_dir=tmp_path / "nbs")
    assert result.status == "planned"
    assert [s["status"] for s in audit.load_record(run_dir)["stages"]] == ["abandoned", "planned"]
    assert audit.verify(run_dir) == []
    from cni_runbook import report  # both attempts in one report, every cell id unique (no DuplicateCellId)
    ids = [c.get("id") for c in report.build_notebook(run_dir).cells if c.get("id")]
    assert len(ids) == len(set(ids)) and any(i.startswith("00_preflight-2-") for i in ids)
