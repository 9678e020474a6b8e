"""Carry out a lifecycle plan: before, the ordered apply with rollout waits, after, rollback.

Upgrade (:func:`apply_upgrade`): the installed objects are recorded first
(``previous-objects.json``: the live objects without status and server-owned metadata), then
the new objects are applied in the plan's order (CRDs first; each DaemonSet/Deployment
followed by its rollout wait; a Helm target: the chart's CRDs server-side, then ``helm
upgrade``), then the objects the new rendering dropped are deleted. A failed apply or rollout
(e.g. an image tag that does not exist: the rollout times out) restores the recorded previous
objects and deletes what the upgrade created (:func:`restore_previous`), then waits for the
previous rollout. ``dry_run`` sends the new objects once with ``dryRun=All``.

Replacement (:func:`apply_replacement`): delete the installed CNI's objects, wait until its
pods are gone, clean the nodes over SSH (:mod:`.nodes`), install the target with the stage-02
engine, restart every controller-owned pod that is not hostNetwork (node by node or all at
once), list what is left of the old CNI on every node.

``validate`` (before and after, the same): a callable returning a dict of named result
tables; the stage passes stage 03's suite and stage 04's truth tables (informational tables,
e.g. truth tables under a CNI that does not enforce NetworkPolicy, never fail the operation). ``disruption``: a
context manager factory around the operation (the streaming probe) whose result has
``outages`` (a DataFrame of per-pair outage windows); None: not measured.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cni.manifests import ManifestObject
from .errors import LifecycleError
from .installed import key_of, key_text

Progress = Callable[[str], None]
PREVIOUS_NAME = "previous-objects.json"
UPGRADE_RECORD = "upgrade-applied.jsonl"


def _say(_m: str) -> None:
    return None


@dataclass
class Step:
    name: str
    status: str  # passed | failed | skipped
    detail: str = ""
    time_s: float = 0.0


@dataclass
class LifecycleResult:
    """What the apply did, in order, and how it ended."""

    mode: str
    dry_run: bool = False
    steps: list[Step] = field(default_factory=list)
    applied: list = field(default_factory=list)  # kube.apply.Applied
    rolled_back: bool = False
    rollback_detail: str = ""
    error: str = ""
    before: dict[str, Any] = field(default_factory=dict)  # name -> DataFrame
    after: dict[str, Any] = field(default_factory=dict)
    disruption: Any = None  # DataFrame of outage windows, or None
    leftovers: Any = None  # DataFrame node, what, name (replacement)
    previous: Path | None = None
    identity: list[dict[str, str]] = field(default_factory=list)  # {cni, before, after}: read from the cluster

    @property
    def ok(self) -> bool:
        return not self.error and all(s.status != "failed" for s in self.steps)

    def summary(self) -> str:
        mode = "server-side dry-run of the " if self.dry_run else ""
        text = f"{mode}{self.mode}: {sum(1 for s in self.steps if s.status == 'passed')}/{len(self.steps)} steps passed"
        if self.rolled_back:
            text += f"; ROLLED BACK ({self.rollback_detail})"
        failed = [s for s in self.steps if s.status == "failed"]
        if self.error:
            text += f"; {self.error.splitlines()[0]}"
        elif failed:  # a step that failed without an error: name it and what it saw
            text += "; failed: " + "; ".join(f"{s.name} ({s.detail.splitlines()[0][:200]})" if s.detail else s.name
                                             for s in failed)
        return text

    def checks(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "status": s.status, "message": s.detail, "time_s": round(s.time_s, 2)} for s in self.steps]

    def steps_table(self):
        import pandas as pd

        return pd.DataFrame([{"step": s.name, "status": s.status, "time_s": round(s.time_s, 1), "detail": s.detail}
                             for s in self.steps], columns=["step", "status", "time_s", "detail"])

    def record(self) -> dict[str, Any]:
        out = {"mode": self.mode, "dry_run": self.dry_run, "ok": self.ok, "rolled_back": self.rolled_back,
               "rollback": self.rollback_detail, "error": self.error, "steps": self.checks(),
               "previous": str(self.previous) if self.previous else None, "cni_on_cluster": self.identity}
        measured = self.disruption
        if measured is not None and getattr(measured, "result", None) is not None:
            from .compare import disruption_figures

            out["disruption"] = {**disruption_figures(measured.per_pair()), "summary": measured.result.summary,
                                 "per_pair": measured.per_pair().to_dict("records"),
                                 "per_node": measured.result.nodes.to_dict("records")}
        return out

    def views(self) -> list[tuple[str, Any]]:
        from .. import display

        out = [("steps", display.table(self.steps_table(), caption=self.summary()))]
        if self.identity:
            out.append(("cni before/after", display.table(self.identity, caption="the CNI read from the cluster: before | after")))
        for name in sorted(set(self.before) | set(self.after)):
            from .compare import side_by_side

            out.append((f"before/after {name}", display.table(side_by_side(self.before.get(name), self.after.get(name),
                                                                          key=_result_key(self.before, self.after, name),
                                                                          value=_result_column(self.before, self.after, name)),
                                                             caption=f"{name}: before | after")))
            failures = _failure_rows(self.before.get(name), "before") + _failure_rows(self.after.get(name), "after")
            if failures:
                out.append((f"failures {name}", display.table(failures, caption=f"{name}: what failed, and why")))
        measured = self.disruption
        if measured is not None and getattr(measured, "result", None) is not None:
            from .compare import disruption_figures

            figures = disruption_figures(measured.per_pair())
            out.append(("disruption", display.table(measured.per_pair(), caption=(
                f"disruption per pair: median {figures['median_outage_s']:.2f} s, max {figures['max_outage_s']:.2f} s; "
                + measured.result.summary))))
            out.append(("disruption per node", display.table(measured.result.nodes, caption="disruption per node")))
            out.append(("timeline", display.figure(measured.result.figure(title="probe pairs during the operation"),
                                                   caption="disruption timeline: every probe of every pair during the "
                                                   "operation (green answered, red failed; outage windows outlined; "
                                                   "the steps marked)")))
        elif measured is not None and getattr(measured, "error", ""):
            out.append(("disruption", display.table([{"disruption": f"not measured: {measured.error}"}])))
        if self.leftovers is not None:
            out.append(("leftovers", display.table(self.leftovers, caption="left of the old CNI on the nodes (empty: none)")))
        return out


def _failure_rows(frame, when: str) -> list[dict[str, Any]]:
    """The failed rows of a result table with their reason (``message`` or ``reason``)."""
    if frame is None or not len(frame):
        return []
    status = next((c for c in ("result", "status") if c in frame.columns), None)
    why = next((c for c in ("message", "reason") if c in frame.columns), None)
    key = "set" if "set" in frame.columns else "test"
    if status is None or key not in frame.columns:
        return []
    return [{"when": when, "what": r[key], "why": str(r[why])[:500] if why else ""}
            for _, r in frame[frame[status] == "failed"].iterrows()]


def _result_key(before: dict, after: dict, name: str) -> str:
    frame = before.get(name) if before.get(name) is not None else after.get(name)
    return "set" if "set" in getattr(frame, "columns", ()) else "test"


def _result_column(before: dict, after: dict, name: str) -> str:
    frame = before.get(name) if before.get(name) is not None else after.get(name)
    return next((c for c in ("result", "status") if c in getattr(frame, "columns", ())), "result")


def _timed(result: LifecycleResult, name: str, func: Callable[[], str]) -> str:
    mark = getattr(result.disruption, "mark", None)
    if mark is not None:  # the step's start on the disruption timeline, while it is measured
        mark(name)
    start = time.monotonic()
    try:
        detail = func()
    except Exception as exc:
        result.steps.append(Step(name, "failed", str(exc)[:2000], time.monotonic() - start))
        raise
    result.steps.append(Step(name, "passed", detail or "", time.monotonic() - start))
    return detail


def _body(o: ManifestObject) -> dict:
    body = json.loads(json.dumps(o.body))
    if o.namespaced and o.ref.namespace:
        body.setdefault("metadata", {})["namespace"] = o.ref.namespace
    return body


def record_previous(installed, path: Path) -> Path:
    """Write the installed objects (cleaned live bodies) for a later rollback."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"family": installed.family, "version": installed.version,
                                "objects": list(installed.objects.values())}, indent=1, sort_keys=True) + "\n")
    return path


def read_previous(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise LifecycleError(f"{path}: no such record of the previous objects (expected {PREVIOUS_NAME} of a stage 05 "
                             "upgrade run)")
    return json.loads(Path(path).read_text())


def _rollout(kube, kind: str, namespace: str, name: str, timeout: float, say: Progress) -> str:
    from ..kube.wait import rollout

    return rollout(kube, kind, namespace, name, timeout=timeout, progress=say)


def restore_previous(kube, previous: dict[str, Any], *, created: Sequence[Any] = (), timeout: float = 300,
                     progress: Progress | None = None) -> str:
    """Re-apply the recorded previous objects, delete what the failed upgrade created, wait for the
    previous workloads to roll out again; returns what it did."""
    from ..kube.apply import Applier

    say = progress or _say
    objects = previous.get("objects") or []
    applier = Applier(kube, progress=say)
    crds = [b for b in objects if b.get("kind") == "CustomResourceDefinition"]
    rest = [b for b in objects if b.get("kind") != "CustomResourceDefinition"]
    applier.apply(crds + rest, rollback_on_error=False)
    deleted = 0
    for item in reversed(list(created)):
        try:
            res = kube.resource(item.api_version, item.kind)
            kube.dynamic.delete(res, name=item.name, namespace=item.namespace)
            deleted += 1
        except Exception:  # noqa: BLE001 - already gone
            pass
    for b in rest:
        if b.get("kind") in ("DaemonSet", "Deployment"):
            meta = b["metadata"]
            _rollout(kube, b["kind"], meta.get("namespace"), meta["name"], timeout, say)
    return f"re-applied {len(objects)} recorded object(s), deleted {deleted} the upgrade created"


def apply_upgrade(kube, plan, *, record_dir: Path, dry_run: bool = False, rollout_timeout_s: float = 300,
                  rollback_on_failure: bool = True, helm_chart: Any = None, kubeconfig: str | None = None,
                  validate: Callable[[], dict[str, Any]] | None = None, disruption: Callable[[], Any] | None = None,
                  progress: Progress | None = None) -> LifecycleResult:
    """The upgrade (module docstring). ``plan``: an :class:`~.upgrade.UpgradePlan` without refusals."""
    from ..kube.apply import Applier, ApplyError

    say = progress or _say
    if not plan.ok:
        raise LifecycleError("the upgrade plan was refused: " + "; ".join(plan.refusals))
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    result = LifecycleResult("upgrade", dry_run=dry_run)
    objects = list(plan.objects)
    if dry_run:
        applier = Applier(kube, dry_run=True, progress=say)
        try:
            _timed(result, "server-side dry-run of the new objects", lambda: _dry(applier, objects, record_dir, result))
        except (ApplyError, Exception) as exc:  # noqa: BLE001 - recorded as a failed step
            result.error = f"server-side dry-run rejected the upgrade (nothing was persisted): {exc}"
        return result

    result.previous = record_previous(plan.installed, record_dir / PREVIOUS_NAME)
    if validate is not None:
        result.before = _timed_value(result, "before: validation", validate)
    record = record_dir / UPGRADE_RECORD
    applier = Applier(kube, progress=say)
    doing = "starting"
    window = disruption() if disruption is not None else contextlib.nullcontext()
    probe = None
    try:
        with window as probe:
            result.disruption = probe
            crds = [o for o in objects if o.phase == "crds"]
            if crds:
                doing = "applying the CRDs"
                _timed(result, f"apply {len(crds)} CRD(s)", lambda: _apply(applier, crds, record, result))
            rest = [o for o in objects if o.phase != "crds"]
            if plan.helm_release and helm_chart is not None:
                doing = "helm upgrade"
                _timed(result, f"helm upgrade {plan.helm_release}", lambda: helm_chart(kubeconfig))
                for o in rest:
                    if o.ref.kind in ("DaemonSet", "Deployment"):
                        _timed(result, f"rollout {key_text(key_of(_body(o)))}",
                               lambda o=o: _rollout(kube, o.ref.kind, o.ref.namespace, o.ref.name, rollout_timeout_s, say))
            else:
                batch: list[ManifestObject] = []
                for o in rest:
                    batch.append(o)
                    if o.ref.kind in ("DaemonSet", "Deployment"):
                        doing = f"applying up to {o.ref.kind} {o.ref.name}"
                        _timed(result, f"apply {len(batch)} object(s) up to {o.ref.kind} {o.ref.name}",
                               lambda b=list(batch): _apply(applier, b, record, result))
                        batch = []
                        doing = f"waiting for the rollout of {o.ref.kind} {o.ref.namespace}/{o.ref.name}"
                        _timed(result, f"rollout {o.ref.kind} {o.ref.namespace}/{o.ref.name}",
                               lambda o=o: _rollout(kube, o.ref.kind, o.ref.namespace, o.ref.name, rollout_timeout_s, say))
                if batch:
                    doing = "applying the last objects"
                    _timed(result, f"apply {len(batch)} object(s)", lambda b=list(batch): _apply(applier, b, record, result))
            removed = plan.diff[plan.diff["change"] == "removed"]
            for row in removed.itertuples():
                doing = f"deleting {row.kind} {row.name}"
                _timed(result, f"delete {row.kind} {row.namespace + '/' if row.namespace else ''}{row.name}",
                       lambda row=row: _delete(kube, plan.installed.objects, row))
        if validate is not None:
            doing = "after: validation"
            result.after = _timed_value(result, "after: validation", validate)
            failed = _failed_tables(result.after)
            if failed:
                raise LifecycleError(f"after-checks failed: {failed}")
    except Exception as exc:  # noqa: BLE001 - any failure: back to the recorded objects
        result.error = f"upgrade failed while {doing}: {exc}"
        if rollback_on_failure:
            created = [a for a in result.applied if a.action == "created"]
            try:
                result.rollback_detail = _timed(result, "rollback to the recorded previous objects",
                                                lambda: restore_previous(kube, read_previous(result.previous), created=created,
                                                                         timeout=rollout_timeout_s, progress=say))
                result.rolled_back = True
            except Exception as failed:  # noqa: BLE001 - report both
                result.error += f"\nROLLBACK FAILED: {failed}; `cni-runbook rollback` retries from {result.previous}"
            if validate is not None and result.rolled_back:
                try:
                    result.after = _timed_value(result, "after rollback: validation", validate)
                except Exception as failed:  # noqa: BLE001
                    result.error += f"\nvalidation after the rollback failed: {failed}"
    return result


def _timed_value(result: LifecycleResult, name: str, func: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    def run() -> str:
        holder.update(func())
        return ", ".join(f"{k}: {getattr(v, 'attrs', {}).get('summary', len(v))}" for k, v in holder.items())

    _timed(result, name, run)
    failed = _failed_tables(holder)
    if failed:
        result.steps[-1].detail += f" (failures: {failed})"
    return holder


def _failed_tables(tables: dict[str, Any]) -> str:
    bad = []
    for name, frame in tables.items():
        if getattr(frame, "attrs", {}).get("informational"):
            continue  # e.g. the truth tables under a CNI that does not enforce NetworkPolicy
        column = next((c for c in ("result", "status") if c in getattr(frame, "columns", ())), None)
        if frame is not None and column:
            n = int((frame[column] == "failed").sum())
            if n:
                bad.append(f"{name}: {n} failed")
    return ", ".join(bad)


def _apply(applier, objects: Sequence[ManifestObject], record: Path, result: LifecycleResult) -> str:
    done = applier.apply([_body(o) for o in objects], record=record, rollback_on_error=False)
    result.applied += done
    counts: dict[str, int] = {}
    for a in done:
        counts[a.action] = counts.get(a.action, 0) + 1
    return ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))


def _dry(applier, objects: Sequence[ManifestObject], record_dir: Path, result: LifecycleResult) -> str:
    done = applier.apply([_body(o) for o in objects], record=record_dir / "upgrade-dry-run.jsonl", rollback_on_error=False)
    result.applied = done
    skipped = sum(1 for a in done if a.action == "skipped")
    return (f"{len(done) - skipped} object(s) accepted by the API server (dryRun=All, nothing persisted)"
            + (f"; {skipped} custom resource(s) skipped (their CRD is new in this set)" if skipped else ""))


def _delete(kube, installed_objects: dict, row) -> str:
    body = next((b for k, b in installed_objects.items() if k[1:] == (row.kind, row.namespace, row.name)), None)
    if body is None:
        return "not found: nothing to delete"
    res = kube.resource(body["apiVersion"], row.kind)
    kube.dynamic.delete(res, name=row.name, namespace=row.namespace or None)
    return "deleted"


__all__ = ["LifecycleResult", "PREVIOUS_NAME", "apply_upgrade", "read_previous", "record_previous", "restore_previous"]
