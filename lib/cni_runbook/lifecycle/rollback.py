"""``cni-runbook rollback RUN_ID`` for a stage-05 upgrade run: restore the recorded previous version.

The newest attempt's ``previous-objects.json`` (the installed objects as they were before the
upgrade) is re-applied, what the upgrade created (its ``upgrade-applied.jsonl``) is deleted and
the previous workloads' rollouts are waited for. The run folder is left as recorded (its audit
record stays valid): what the rollback did goes to ``<run_dir>.rollback-<UTC time>/``.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from .apply import PREVIOUS_NAME, UPGRADE_RECORD, read_previous, restore_previous
from .errors import LifecycleError

STAGE_ID = "05_cni_lifecycle"


def upgrade_records(run_dir: str | Path) -> list[Path]:
    """The ``previous-objects.json`` of a run's stage-05 attempts, newest first."""
    from ..state import artifact_dirs

    found = [d / PREVIOUS_NAME for d in artifact_dirs(Path(run_dir), STAGE_ID)]
    return [p for p in reversed(found) if p.is_file()]


def rollback_upgrade_run(run_dir: str | Path, *, kubeconfig: str | Path | None = None, context: str | None = None,
                         timeout: float = 300, progress=None) -> tuple[str, Path]:
    from ..kube import Kube
    from ..kube.apply import read_record

    run_dir = Path(run_dir)
    records = upgrade_records(run_dir)
    if not records:
        raise LifecycleError(f"{run_dir}: no artifacts/{STAGE_ID}*/{PREVIOUS_NAME} (no stage 05 upgrade was applied in this run)")
    previous = records[0]
    target_file = previous.parent / "target.json"
    if kubeconfig is None:
        if not target_file.is_file():
            raise LifecycleError(f"{target_file}: missing; pass the cluster's kubeconfig explicitly")
        target = json.loads(target_file.read_text())
        kubeconfig, context = target["kubeconfig"], context or target.get("context")
    created = [a for a in read_record(previous.parent / UPGRADE_RECORD) if a.action == "created"]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = run_dir.parent / f"{run_dir.name}.rollback-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    kube = Kube.from_kubeconfig(kubeconfig, context)
    try:
        data = read_previous(previous)
        detail = restore_previous(kube, data, created=created, timeout=timeout, progress=progress)
    finally:
        kube.close()
    (work / "rollback.json").write_text(json.dumps({"run": run_dir.name, "record": str(previous), "version": data.get("version"),
                                                    "detail": detail}, indent=2) + "\n")
    return f"restored {data.get('family')} {data.get('version') or ''}: {detail}", work


__all__ = ["rollback_upgrade_run", "upgrade_records"]
