"""Roll back what a recorded stage 02 run created, on request (``cni-runbook rollback``).

The run folder is not modified: the record copy and the deletions go to a sibling folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil

from dataclasses import asdict
from pathlib import Path

from .result import RECORD_NAME, TARGET_NAME, InstallError, Progress, _say

def write_target(record_dir: str | Path, kubeconfig: str | Path, context: str | None = None) -> Path:
    """Note which cluster a record belongs to (the kubeconfig PATH and context; never its content)."""
    path = Path(record_dir) / TARGET_NAME
    path.write_text(json.dumps({"kubeconfig": str(Path(kubeconfig).resolve()), "context": context}, indent=2) + "\n")
    return path


def run_records(run_dir: str | Path, stage_id: str = "02_cni_install") -> list[Path]:
    """The apply records (``applied.jsonl``) of a run folder's stage attempts, newest attempt first."""
    from ..state import artifact_dirs

    found = [d / RECORD_NAME for d in artifact_dirs(Path(run_dir), stage_id)]
    return [p for p in reversed(found) if p.is_file()]


def rollback_record(kube, record: str | Path, *, work_dir: str | Path | None = None, timeout: float = 180,
                    progress: Progress | None = None) -> list:
    """Delete, newest first, every object the recorded apply *created*; wait until they are gone.

    With ``work_dir`` the record is first copied there and the deletions are appended to the
    copy, so the original (inside an audited run folder) stays byte for byte as recorded.
    Objects the run only configured or found unchanged are left alone.
    """
    from ..kube.apply import rollback

    record = Path(record)
    if not record.is_file():
        raise InstallError(f"{record}: no such apply record (expected the applied.jsonl of a stage 02 run)")
    if work_dir is not None:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        copy = work / f"{record.parent.name}-{record.name}"
        shutil.copyfile(record, copy)
        record = copy
    return rollback(kube, record, timeout=timeout, progress=progress or _say)


def rollback_run(run_dir: str | Path, *, kubeconfig: str | Path | None = None, context: str | None = None,
                 timeout: float = 180, progress: Progress | None = None) -> tuple[list, Path]:
    """Roll back what stage 02 of a run created, on request; returns (removed objects, work folder).

    Reads the ``applied.jsonl`` of every attempt, newest first (an object created by attempt 1
    and found unchanged by a resumed attempt 2 is removed through attempt 1's record); the
    kubeconfig is ``kubeconfig`` or the one noted in the newest attempt's ``target.json``. The run
    folder is not modified (its audit record stays valid): the record copies and the deletions go
    to ``<run_dir>.rollback-<UTC time>/``, whose ``rollback.json`` marks the run as rolled back.
    """
    from ..kube import Kube

    run_dir = Path(run_dir)
    records = run_records(run_dir)
    if not records:
        raise InstallError(f"{run_dir}: no artifacts/02_cni_install*/{RECORD_NAME} (stage 02 applied nothing in this run, "
                           "or it was a dry run)")
    record = records[0]
    target_file = record.parent / TARGET_NAME
    if kubeconfig is None:
        if not target_file.is_file():
            raise InstallError(f"{target_file}: missing; pass the cluster's kubeconfig explicitly")
        target = json.loads(target_file.read_text())
        kubeconfig, context = target["kubeconfig"], context or target.get("context")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = run_dir.parent / f"{run_dir.name}.rollback-{stamp}"
    kube = Kube.from_kubeconfig(kubeconfig, context)
    removed: list = []
    try:
        for attempt_record in records:  # newest attempt first: what a later attempt created goes first
            removed += rollback_record(kube, attempt_record, work_dir=work, timeout=timeout, progress=progress)
    finally:
        kube.close()
    (work / "rollback.json").write_text(json.dumps({"run": run_dir.name, "record": str(record),
                                                    "records": [str(r) for r in records],
                                                    "removed": [asdict(r) for r in removed]}, indent=2) + "\n")
    return removed, work
