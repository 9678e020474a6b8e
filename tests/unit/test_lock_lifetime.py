"""The run lock's lifetime at the end of a stage: a stage run by hand releases it, a stage of the
runner leaves it to the runner (the real Lease on the lab: tests/lab/test_reliability.py)."""

from __future__ import annotations

import json
import os
import socket
import types

from cni_runbook.kube import lock as runlock


class _Lock:
    """A double of ClusterLock that records what the stage end did with it (no API server here)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.kube = types.SimpleNamespace(close=lambda: self.calls.append("closed"))

    def stop(self) -> None:
        self.calls.append("stopped")

    def release(self) -> bool:
        self.calls.append("released")
        return True


def _record(run_dir, status="running", pid=None, host=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({"status": status, "runner": {
        "pid": os.getppid() if pid is None else pid, "host": host or socket.gethostname()}}))


def test_a_stage_run_by_hand_releases_its_lock_and_forgets_it(tmp_path):
    ctx = types.SimpleNamespace(run_dir=tmp_path / "run", lock=_Lock())
    lock = ctx.lock
    assert not runlock.runner_holds(ctx.run_dir)  # no run.json: no runner
    assert runlock.end_stage(ctx) == "released"
    assert lock.calls == ["stopped", "released", "closed"]
    assert ctx.lock is None  # an apply run again in the same kernel takes the lock again


def test_a_stage_of_the_runner_leaves_the_lock_held_for_the_next_stage(tmp_path):
    run_dir = tmp_path / "run"
    _record(run_dir)  # what the runner writes: running, its pid (this process's parent: the kernel's)
    ctx = types.SimpleNamespace(run_dir=run_dir, lock=_Lock())
    lock = ctx.lock
    assert runlock.runner_holds(run_dir)
    assert runlock.end_stage(ctx) == "kept for the runner"
    assert lock.calls == ["stopped", "closed"] and ctx.lock is None


def test_a_finished_run_or_another_process_is_no_runner(tmp_path):
    _record(tmp_path / "a", status="passed")
    _record(tmp_path / "b", pid=os.getpid() + 100000)
    _record(tmp_path / "c", host="elsewhere.example")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.json").write_text("{not json")
    assert not any(runlock.runner_holds(tmp_path / n) for n in "abcd")
    ctx = types.SimpleNamespace(run_dir=tmp_path / "a", lock=_Lock())
    assert runlock.end_stage(ctx) == "released"


def test_no_lock_nothing_to_end(tmp_path):
    assert runlock.end_stage(types.SimpleNamespace(run_dir=tmp_path, lock=None)) == "none"
