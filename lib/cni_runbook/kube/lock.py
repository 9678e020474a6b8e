"""One run at a time per cluster: a Lease in the runbook's namespace, held by the run.

Every stage that touches the cluster takes the lock when it opens (plan mode takes none). The
Lease ``cni-runbook/run-lock`` names the holder (``holderIdentity``: the run id; annotations: the
operator and the stage) and is renewed every :data:`RENEW_S` seconds by a thread of the stage's
kernel while the stage applies (:func:`end_stage`: a stage run by hand releases it when it
ends, a stage of the runner leaves it to the runner). A run holding it may take it again (its
next stage, a resume); another run is refused
with :class:`LockHeld` naming the holder and since when. A lock nobody renews (a killed runner)
expires after :data:`DURATION_S` seconds and may then be taken over; the runner releases it when
a run ends, so a second run can follow at once.

Updates use the Lease's resourceVersion, so two runs starting together cannot both win.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from .client import Kube, KubeError

NAMESPACE = "cni-runbook"
LEASE = "run-lock"
DURATION_S = 60
RENEW_S = 15
REQUEST_TIMEOUT_S = 10
_OPERATOR = "cni-runbook.io/operator"
_STAGE = "cni-runbook.io/stage"


class LockHeld(KubeError):
    """Another run holds the cluster's run lock."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _micro(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class Holder:
    run_id: str
    operator: str
    stage: str
    since: dt.datetime | None
    renewed: dt.datetime | None
    duration_s: int

    @property
    def expires(self) -> dt.datetime | None:
        return self.renewed + dt.timedelta(seconds=self.duration_s) if self.renewed else None

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires is None or self.expires <= (now or _now())


def _holder(lease: dict[str, Any]) -> Holder:
    spec = lease.get("spec") or {}
    notes = (lease.get("metadata") or {}).get("annotations") or {}
    return Holder(run_id=spec.get("holderIdentity") or "", operator=notes.get(_OPERATOR, "?"),
                  stage=notes.get(_STAGE, "?"), since=_parse(spec.get("acquireTime")),
                  renewed=_parse(spec.get("renewTime")), duration_s=int(spec.get("leaseDurationSeconds") or 0))


@dataclass
class ClusterLock:
    """The run lock of the cluster behind ``kube``, for ``run_id`` (see module docstring)."""

    kube: Kube
    run_id: str
    operator: str
    stage: str = ""
    duration_s: int = DURATION_S
    renew_s: int = RENEW_S
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def _api(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.kube.api)

    def _read(self) -> dict[str, Any] | None:
        try:
            lease = self._api.read_namespaced_lease(LEASE, NAMESPACE, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.kube.api.sanitize_for_serialization(lease)

    def _body(self, since: dt.datetime, rv: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": LEASE, "namespace": NAMESPACE,
                                "annotations": {_OPERATOR: self.operator, _STAGE: self.stage},
                                "labels": {"app.kubernetes.io/managed-by": "cni-runbook"}}
        if rv:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.run_id, "leaseDurationSeconds": self.duration_s,
                         "acquireTime": _micro(since), "renewTime": _micro(_now())}}

    def _ensure_namespace(self) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "cni-runbook"}}}
        try:
            self.kube.core.create_namespace(body, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def acquire(self) -> Holder | None:
        """Take the lock (or keep it: same run); returns the expired holder taken over, if any.

        Raises :class:`LockHeld` when another run holds a live lock, :class:`KubeError` when the
        API server cannot be asked.
        """
        try:
            return self._acquire()
        except ApiException as exc:
            raise KubeError(f"run lock {NAMESPACE}/{LEASE}: the API server refused: {exc.status} {exc.reason}") from None
        except LockHeld:
            raise
        except Exception as exc:  # connection refused, timeouts: the lock cannot be known
            raise KubeError(f"run lock {NAMESPACE}/{LEASE}: cannot reach the API server ({type(exc).__name__}: {exc})") from None

    def _acquire(self) -> Holder | None:
        self._ensure_namespace()
        for _ in range(3):
            lease = self._read()
            if lease is None:
                try:
                    self._api.create_namespaced_lease(NAMESPACE, self._body(_now()), _request_timeout=REQUEST_TIMEOUT_S)
                    return None
                except ApiException as exc:
                    if exc.status == 409:
                        continue  # another run created it first: read it again
                    raise
            holder = _holder(lease)
            mine = holder.run_id == self.run_id
            if not mine and holder.run_id and not holder.expired():
                since = holder.since.isoformat(timespec="seconds") if holder.since else "?"
                raise LockHeld(
                    f"the cluster is locked by run {holder.run_id} ({holder.operator}, stage {holder.stage}) "
                    f"since {since}; one run at a time per cluster. Wait for it to end, or, if that run is "
                    f"dead, for its lock to expire at {holder.expires.isoformat(timespec='seconds')} "
                    f"(Lease {NAMESPACE}/{LEASE}, {holder.duration_s} s after its last renewal)")
            since = holder.since if mine and holder.since else _now()
            try:
                self._api.replace_namespaced_lease(LEASE, NAMESPACE, self._body(since, lease["metadata"]["resourceVersion"]),
                                                   _request_timeout=REQUEST_TIMEOUT_S)
            except ApiException as exc:
                if exc.status == 409:
                    continue  # changed under us: decide again
                raise
            return None if mine or not holder.run_id else holder
        raise LockHeld(f"run lock {NAMESPACE}/{LEASE}: changed three times while taking it; another run is starting")

    def renew_in_background(self) -> None:
        """Renew the lease every ``renew_s`` seconds until :meth:`stop` (a daemon thread)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.renew_s):
                try:
                    self._acquire()
                except Exception:  # noqa: BLE001 - a missed renewal is retried; expiry is the backstop
                    continue

        self._thread = threading.Thread(target=loop, name="cni-runbook-lock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def release(self) -> bool:
        """Give the lock up if this run holds it; True if it was released."""
        self.stop()
        try:
            lease = self._read()
            if lease is None or _holder(lease).run_id != self.run_id:
                return False
            self._api.delete_namespaced_lease(
                LEASE, NAMESPACE, _request_timeout=REQUEST_TIMEOUT_S,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                    resource_version=lease["metadata"]["resourceVersion"])))
            return True
        except Exception:  # noqa: BLE001 - an unreleased lock expires by itself
            return False


def holder(kube: Kube) -> Holder | None:
    """Who holds the cluster's run lock now (None: nobody, or an expired lock)."""
    lease = ClusterLock(kube, "", "")._read()
    if lease is None:
        return None
    found = _holder(lease)
    return None if found.expired() else found




# --- the one call point of the stages, and the runner's release ------------------------------

_EARLY_STAGES = ("00_preflight", "01_cluster_no_cni")  # may run before there is a cluster to lock


def _cluster(params: Any, state_get: Any) -> Kube | None:
    """The cluster the stages work on (provision.targets.resolve), or None when there is none yet."""
    from ..errors import OperatorError
    from ..provision.targets import resolve

    try:
        target = resolve(params, state_get, require_up=True)
    except OperatorError:
        return None  # no cluster known yet (before stage 01, a lab that is down): nothing to lock
    path = Path(target.kubeconfig) if target.kubeconfig else None
    return Kube.from_kubeconfig(path, target.context) if path is not None and path.is_file() else None


def lock_stage(ctx: Any) -> ClusterLock | None:
    """Take the run lock for a stage (``ctx``: its StageContext); None in plan mode or without a cluster.

    Raises :class:`LockHeld` when another run holds the cluster. A cluster that cannot be asked
    (before stage 01 made it, or down) is not locked: no other run can collide on it either, and
    the stage's own first call says what is wrong with it.
    """
    if ctx.plan:
        return None
    held = getattr(ctx, "lock", None)
    if held is not None:
        return held  # this stage took it already (open_stage, then the stage base)
    from .. import audit

    kube = _cluster(ctx.params, ctx.get)
    if kube is None:
        return None
    lock = ClusterLock(kube, ctx.run_dir.name, audit.operator(), ctx.stage.id)
    try:
        lock.acquire()
    except LockHeld:
        raise
    except KubeError as exc:
        # the cluster cannot be asked (not up yet before stage 01, or down): nothing another run
        # could collide on either; the stage's own first call reports the cluster's state
        if ctx.stage.id not in _EARLY_STAGES:
            print(f"run lock not taken: {exc}", file=sys.stderr)
        kube.close()
        return None
    lock.renew_in_background()
    try:
        ctx.lock = lock
    except AttributeError:  # a context that takes no attributes: the lock is still held and renewed
        pass
    return lock


def runner_holds(run_dir: Path) -> bool:
    """True if this process is a stage kernel of the runner executing the run in ``run_dir``.

    The runner records itself in run.json (``runner``: pid, host, process start) and is the
    kernel's parent process; it takes the lock again for its next stage and releases it when the
    run ends. A stage run any other way (a notebook run by hand in JupyterLab, papermill alone)
    has nobody to release its lock after it: the stage gives it up itself.
    """
    import os
    import socket

    try:
        record = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return False
    runner = record.get("runner") if isinstance(record, dict) else None
    return (record.get("status") == "running" and isinstance(runner, dict)
            and runner.get("host") == socket.gethostname() and int(runner.get("pid") or 0) == os.getppid())


def end_stage(ctx: Any, lock: ClusterLock | None = None) -> str:
    """The end of a stage's hold on the lock (the stage base calls it when ``apply`` ends).

    Renewal stops, and the lock is released unless the runner executes this stage
    (:func:`runner_holds`: it hands the lock to the run's next stage and releases it when the run
    ends). Either way the context forgets it, so an ``apply`` run again in the same kernel takes
    it again. Returns what happened: ``released``, ``kept for the runner``, ``none``.
    """
    lock = lock or getattr(ctx, "lock", None)
    if lock is None:
        return "none"
    lock.stop()
    try:
        if runner_holds(ctx.run_dir):
            return "kept for the runner"
        lock.release()
        return "released"
    finally:
        try:
            ctx.lock = None
        except AttributeError:
            pass
        lock.kube.close()


def release_run(run_id: str, params: Any, state_get: Any) -> bool:
    """Release the run lock at the end of a run (best effort: an unreleased lock expires)."""
    kube = _cluster(params, state_get)
    if kube is None:
        return False
    try:
        return ClusterLock(kube, run_id, "").release()
    finally:
        kube.close()


__all__ = ["ClusterLock", "LockHeld", "Holder", "holder", "lock_stage", "end_stage", "runner_holds", "release_run", "NAMESPACE", "LEASE",
           "DURATION_S", "RENEW_S"]
