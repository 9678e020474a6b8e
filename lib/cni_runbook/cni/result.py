"""What a CNI install did and how long its waits may take: the engine's result types.

:class:`InstallResult` (applied objects, waits and checks as :class:`Step` s, CNI pod health,
rolled-back objects), :class:`Timeouts`, :class:`InstallError` (carries the partial result).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CniError

RECORD_NAME = "applied.jsonl"
DRY_RUN_RECORD_NAME = "dry-run.jsonl"
TARGET_NAME = "target.json"

Progress = Callable[[str], None]


def _say(_message: str) -> None:
    return None


class InstallError(CniError):
    """The install failed; ``result`` holds what was done (applied objects, waits, health)."""

    def __init__(self, message: str, result: InstallResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each wait."""

    crd_s: float = 60
    rollout_s: float = 300
    apiservice_s: float = 180
    nodes_s: float = 300
    coredns_s: float = 300
    rollback_s: float = 180


@dataclass
class Step:
    """One wait or check of the install: ``status`` passed | failed | skipped."""

    name: str
    status: str
    detail: str = ""
    time_s: float = 0.0


@dataclass
class InstallResult:
    """What an install did: applied objects (with action), waits, CNI pod health, post-checks."""

    dry_run: bool
    applied: list = field(default_factory=list)  # kube.apply.Applied
    steps: list[Step] = field(default_factory=list)
    health: Any = None  # pandas DataFrame
    post_checks: list[Step] = field(default_factory=list)
    rolled_back: list = field(default_factory=list)
    record: Path | None = None
    antctl_output: str = ""
    error: str = ""  # set by apply_stage when the install failed (the InstallError's message)

    @property
    def counts(self) -> dict[str, int]:
        """Number of objects per action (created, configured, unchanged, dry-run, skipped)."""
        out: dict[str, int] = {}
        for a in self.applied:
            out[a.action] = out.get(a.action, 0) + 1
        return out

    @property
    def changes(self) -> int:
        """Objects this run created or changed (0 on a repeated run)."""
        return sum(1 for a in self.applied if a.action in ("created", "configured"))

    @property
    def ok(self) -> bool:
        return (all(s.status != "failed" for s in [*self.steps, *self.post_checks])
                and not self.rolled_back and not self.error)

    def applied_table(self):
        import pandas as pd

        rows = [{"kind": a.kind, "namespace": a.namespace or "", "name": a.name, "action": a.action,
                 "detail": a.detail} for a in self.applied]
        return pd.DataFrame(rows, columns=["kind", "namespace", "name", "action", "detail"])

    def steps_table(self):
        import pandas as pd

        rows = [{"step": s.name, "status": s.status, "time_s": round(s.time_s, 1), "detail": s.detail}
                for s in [*self.steps, *self.post_checks]]
        return pd.DataFrame(rows, columns=["step", "status", "time_s", "detail"])

    def checks(self) -> list[dict[str, Any]]:
        """The steps as ``ctx.result`` checks."""
        return [{"name": s.name, "status": s.status, "message": s.detail, "time_s": round(s.time_s, 2)}
                for s in [*self.steps, *self.post_checks]]

    def summary(self) -> str:
        counts = ", ".join(f"{n} {a}" for a, n in sorted(self.counts.items())) or "nothing applied"
        mode = "server-side dry-run: " if self.dry_run else ""
        rolled = f"; rolled back {len(self.rolled_back)} created object(s)" if self.rolled_back else ""
        return f"{mode}{len(self.applied)} objects ({counts}); {self.changes} change(s){rolled}"


def timed_step(result: InstallResult, name: str, func: Callable[[], str]) -> str:
    """Run one wait as a :class:`Step` of ``result``: passed with its detail, or failed (re-raised)."""
    start = time.monotonic()
    try:
        detail = func()
    except Exception as exc:
        result.steps.append(Step(name, "failed", str(exc), time.monotonic() - start))
        raise
    result.steps.append(Step(name, "passed", detail, time.monotonic() - start))
    return detail


def roll_back_created(kube: Any, result: InstallResult, timeout: float, progress: Progress) -> str:
    """After a failed install, remove what this run created (``result.record``); the sentence to
    add to the failure message, which says whether anything may be left behind (a failed rollback
    is reported beside the first failure, never instead of it)."""
    from ..kube.apply import rollback

    try:
        result.rolled_back = rollback(kube, result.record, timeout=timeout, progress=progress)
    except Exception as failed:  # noqa: BLE001 - report both failures, never hide the first
        return (f"\nROLLBACK FAILED: {failed}\nobjects of this run may be left on the cluster; "
                f"{result.record} lists what it created (`cni-runbook rollback` retries)")
    return (f"\nrolled back the {len(result.rolled_back)} object(s) this run created "
            f"(record: {result.record}); nothing is left half-applied")
