"""Whole runs through the CLI on the real lab, stopped the hard ways (issue 16):

* two runs at once: the second is refused naming the first run's id while the first holds the
  cluster (stages 03 then 04: the lock stays held between them); the first, stopped by SIGTERM in
  stage 04, leaves a verifiable record, its test objects removed and the lock released, and
  ``resume`` passes;
* SIGKILL of the runner in the middle of stage 04: its kernel dies with it, ``list`` shows the run
  abandoned, ``resume`` closes it, removes the truth-table layout the killed stage left in the
  cluster (saying so in the outcome) and passes;
* canary secrets in the environment, in a list and as a number: in no file of the run folder after a
  real run of stages 00-03 (stage 00 runs Ansible over SSH to the nodes);
* a stage run by hand (outside the runner) gives the cluster lock up when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


from cni_runbook import audit
from cni_runbook.kube import lock as runlock
from cni_runbook.params import LAB_FILE

ROOT = Path(__file__).resolve().parents[2]
LAYOUT_NAMESPACES = ("x", "y", "z")  # stage 04's default truth-table layout



def _cli(outputs: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "CNI_RUNBOOK_OUTPUTS": str(outputs), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "cni_runbook.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _run(outputs: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return _cli(outputs, "run", "--params", str(LAB_FILE), *args, env=env)


def _done(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    text, _ = proc.communicate(timeout=timeout)
    return proc.returncode, text


def _wait_for(what: str, predicate, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{proc.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.5)


def _layout_up(kube) -> bool:
    ns = kube.get("v1", "Namespace", LAYOUT_NAMESPACES[0])
    return ns is not None and not ns["metadata"].get("deletionTimestamp")


def _stage_record(run_dir: Path, stage: str, attempt: int | None = None) -> dict:
    entries = [s for s in audit.load_record(run_dir)["stages"] if s["stage"] == stage]
    entry = entries[-1] if attempt is None else next(s for s in entries if s["attempt"] == attempt)
    return entry


def test_a_second_run_is_refused_and_the_first_stopped_by_sigterm_resumes(kube, tmp_path):
    out = tmp_path / "outputs"
    first = _run(out, "--stages", "03", "04", "--set", "validation.perf=false")
    _wait_for("the first run took the lock", lambda: runlock.holder(kube) is not None, first)
    held = runlock.holder(kube)
    started = time.monotonic()
    code, text = _done(_run(out, "--stages", "03", "--set", "validation.perf=false"), 300)
    print(f"second run refused after {time.monotonic() - started:.1f} s (exit {code})")
    assert code == 1, text
    assert f"locked by run {held.run_id}" in text, text
    (first_dir,) = [p for p in out.iterdir() if p.name == held.run_id]
    _wait_for("stage 04 deployed its layout", lambda: _layout_up(kube), first, timeout=400)
    assert runlock.holder(kube).run_id == held.run_id  # held from stage 03 into stage 04
    first.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code, first_text = _done(first, 180)
    print(f"SIGTERM in stage 04: the runner ended {time.monotonic() - t0:.1f} s later (exit {code})")
    record = audit.load_record(first_dir)
    assert record["status"] == "interrupted" and record["interrupted_by"] == "SIGTERM", first_text[-3000:]
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [
        ("03_validation", "passed"), ("04_policy_qos", "interrupted")]
    assert audit.verify(first_dir) == []
    assert not _layout_up(kube)  # the stage removed its layout as it stopped
    assert runlock.holder(kube) is None  # released at the end of the run
    t0 = time.monotonic()
    code, text = _done(_cli(out, "resume", first_dir.name), 900)
    print(f"resume of stage 04 took {time.monotonic() - t0:.1f} s (exit {code})")
    assert code == 0, text[-4000:]
    assert audit.load_record(first_dir)["status"] == "passed"
    assert _stage_record(first_dir, "04_policy_qos")["status"] == "passed"
    assert audit.verify(first_dir) == []


def test_sigkill_mid_stage_04_is_listed_abandoned_and_resume_removes_its_leftovers(kube, tmp_path):
    out = tmp_path / "outputs"
    run = _run(out, "--stages", "04")
    _wait_for("stage 04 deployed its layout", lambda: _layout_up(kube), run, timeout=400)
    (run_dir,) = list(out.iterdir())
    run.kill()
    run.wait(timeout=30)
    renewed = runlock.holder(kube).renewed
    time.sleep(runlock.RENEW_S + 5)
    assert runlock.holder(kube) is None or runlock.holder(kube).renewed == renewed, \
        "the killed runner's kernel still renews the lock"
    assert _layout_up(kube)  # the killed stage left its truth-table layout behind
    code, text = _done(_cli(out, "list", "-o", "json"), 60)
    assert code == 0, text
    (listed,) = json.loads(text)
    assert listed["status"] == "abandoned", listed
    t0 = time.monotonic()
    code, text = _done(_cli(out, "resume", run_dir.name), 900)
    print(f"resume after SIGKILL took {time.monotonic() - t0:.1f} s (exit {code})")
    assert code == 0, text[-4000:]
    record = audit.load_record(run_dir)
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [
        ("04_policy_qos", "abandoned"), ("04_policy_qos", "passed")]
    summary = _stage_record(run_dir, "04_policy_qos")["summary"]
    print(f"resumed stage 04: {summary}")
    assert "leftover(s) of an earlier, interrupted run first" in summary and "Namespace x" in summary, summary
    assert audit.verify(run_dir) == []
    # gone or terminating (Kubernetes removes a namespace 5 s after its deletion)
    assert not [n for n in LAYOUT_NAMESPACES if (ns := kube.get("v1", "Namespace", n))
                and not ns["metadata"].get("deletionTimestamp")]


CANARIES = {"AWS_SECRET_ACCESS_KEY": "canary-env-aws-0xDEADBEEF-31337",  # unrelated, only in the environment
            "CANARY_LIST_PW": "canary-in-a-list-pw-777",
            "CANARY_NUMBER": "4242424242"}


def test_canary_secrets_land_in_no_file_of_the_run_folder(kube, tmp_path):
    """(cni.config takes no secret anywhere now: the lab and generic profiles take no cni.config, Antrea's
    settings are a known list; an inline secret there is refused before stage 00 -
    tests/unit/test_bad_inputs_rejected_early.py)"""
    site = tmp_path / "canary.yaml"
    site.write_text("kubespray:\n  extra_vars:\n    users: [{name: ops, password: 'env:CANARY_LIST_PW'}]\n"
                    "    etcd_pin: 'env:CANARY_NUMBER'\n")
    out = tmp_path / "outputs"
    proc = _cli(out, "run", "--params", str(LAB_FILE), str(site), "--stages", "00", "01", "02", "03",
                "--set", "validation.perf=false", env=CANARIES)
    code, text = _done(proc, 1200)
    assert code == 0, text[-4000:]
    (run_dir,) = list(out.iterdir())
    preflight = json.loads((run_dir / "artifacts" / "00_preflight" / "result.json").read_text())
    assert (run_dir / preflight["data"]["ansible"]["artifacts"]).is_dir()  # Ansible really ran, over SSH
    found = {}
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [name for name, value in CANARIES.items() if value.encode() in data]
            if hits:
                found[path.relative_to(run_dir).as_posix()] = hits
    files = sum(1 for p in run_dir.rglob("*") if p.is_file())
    print(f"{files} files in the run folder, canaries found: {found}")
    assert found == {}
    assert audit.verify(run_dir) == []


def test_a_stage_run_by_hand_gives_its_lock_up_when_it_ends(kube, tmp_path):
    from cni_runbook.stages.base import Outcome, Plan, Stage
    from cni_runbook.state import open_stage

    class Looks(Stage):
        """A stage whose apply only reads who holds the cluster (run by hand: no runner)."""

        def plan(self, ctx):
            return Plan()

        def apply(self, ctx, plan):
            held = runlock.holder(kube)
            return Outcome("passed", held.run_id if held else "nobody")

    ctx = open_stage("03_validation", [str(LAB_FILE)], [], tmp_path / "by-hand", plan=False)
    stage = Looks(ctx)
    plan = stage.run_plan()
    assert stage.run_apply(plan).summary == ctx.run_dir.name  # held while it applied
    assert runlock.holder(kube) is None  # given up when the stage ended
    _wait_for("the renewal thread ended", lambda: not [t for t in threading.enumerate()
                                                         if t.name == "cni-runbook-lock" and t.is_alive()], timeout=10)
    assert stage.run_apply(plan).summary == ctx.run_dir.name  # the apply cell run again: taken again
    assert runlock.holder(kube) is None
