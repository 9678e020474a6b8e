"""Server-side apply of an ordered list of objects, with a record for rollback.

The engine:
1. checks the whole set before touching anything (:func:`preflight`): every kind
   is served by the API server or defined by a CRD in the same set, and every
   namespaced object's namespace exists or is created by the set;
2. applies each object with server-side apply under one field manager, telling
   created / configured / unchanged apart (by resourceVersion), waiting for CRDs
   to be Established and refreshing discovery after them;
3. appends every object it touched to a JSON-lines record as it goes, so that
   :func:`rollback` removes exactly what this run created, even after a crash;
4. on any failure, rolls back what it created (nothing is left half-applied)
   and raises :class:`ApplyError` naming the object and the server's message.

``dry_run=True`` sends every request with ``dryRun=All``: the real API server
validates and admits each object and persists nothing. Custom resources whose
CRD is only in the same set cannot be dry-run (the CRD is not persisted) and are
reported as ``skipped``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

from .client import Kube, KubeError, api_error_message, transient
from .wait import crd_established

FIELD_MANAGER = "cni-runbook"
Progress = Callable[[str], None]


class ApplyError(KubeError):
    pass


@dataclass
class Applied:
    api_version: str
    kind: str
    namespace: str | None
    name: str
    action: str  # created | configured | unchanged | dry-run | skipped | deleted
    detail: str = ""

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def _meta(obj: dict) -> tuple[str, str, str | None, str]:
    md = obj.get("metadata") or {}
    return obj.get("apiVersion", ""), obj.get("kind", ""), md.get("namespace"), md.get("name", "")


def _crd_kinds(objects: Iterable[dict]) -> set[tuple[str, str]]:
    """(group, kind) of every CRD in the set."""
    kinds = set()
    for o in objects:
        if o.get("kind") == "CustomResourceDefinition":
            spec = o.get("spec", {})
            kinds.add((spec.get("group", ""), spec.get("names", {}).get("kind", "")))
    return kinds


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def preflight(kube: Kube, objects: list[dict], default_namespace: str = "default") -> list[str]:
    """Problems that would stop the apply, found without changing anything."""
    problems = []
    crd_kinds = _crd_kinds(objects)
    created_ns = {o["metadata"]["name"] for o in objects if o.get("kind") == "Namespace"}
    existing_ns = {n.metadata.name for n in kube.core.list_namespace().items}
    for obj in objects:
        api_version, kind, namespace, name = _meta(obj)
        if not api_version or not kind or not name:
            problems.append(f"an object lacks apiVersion, kind or metadata.name: {json.dumps(obj)[:120]}")
            continue
        try:
            res = kube.resource(api_version, kind)
            namespaced = res.namespaced
        except KubeError:
            if (_group(api_version), kind) not in crd_kinds:
                problems.append(f"{kind} {name}: kind {kind} ({api_version}) is not served by the API server "
                                "and no CustomResourceDefinition in this set defines it")
                continue
            crd = next(o for o in objects if o.get("kind") == "CustomResourceDefinition"
                       and o["spec"].get("names", {}).get("kind") == kind)
            namespaced = crd["spec"].get("scope") == "Namespaced"
        if namespaced:
            ns = namespace or default_namespace
            if ns not in existing_ns and ns not in created_ns:
                problems.append(f"{kind} {ns}/{name}: namespace {ns!r} does not exist and this set does not create it")
    return problems


class Applier:
    """Apply objects in the given order (see the module docstring)."""

    def __init__(self, kube: Kube, field_manager: str = FIELD_MANAGER, dry_run: bool = False,
                 default_namespace: str = "default", progress: Progress | None = None,
                 crd_timeout: float = 60):
        self.kube = kube
        self.field_manager = field_manager
        self.dry_run = dry_run
        self.default_namespace = default_namespace
        self.progress = progress or (lambda _m: None)
        self.crd_timeout = crd_timeout

    def apply(self, objects: list[dict], record: Path | None = None, rollback_on_error: bool = True) -> list[Applied]:
        try:
            problems = preflight(self.kube, objects, self.default_namespace)
        except Exception as exc:  # noqa: BLE001 - a frozen or restarting API server: say what was being applied
            if not transient(exc):
                raise
            first = _meta(objects[0]) if objects else ("", "?", None, "?")
            raise ApplyError(f"checking {len(objects)} object(s) against the cluster before applying them (first: "
                             f"{first[1]} {first[2] + '/' if first[2] else ''}{first[3]}) failed: the API server "
                             f"{self.kube.server} did not answer ({type(exc).__name__}: {str(exc)[:160]})") from None
        if problems:
            raise ApplyError("nothing was applied; the set has problems:\n- " + "\n- ".join(problems))
        done: list[Applied] = []
        dry_crds = _crd_kinds(objects) if self.dry_run else set()
        for index, obj in enumerate(objects, 1):
            try:
                applied = self._apply_one(obj, dry_crds)
            except Exception as exc:  # noqa: BLE001 - any failure must trigger rollback
                api_version, kind, namespace, name = _meta(obj)
                reason = api_error_message(exc) if isinstance(exc, DynamicApiError) else str(exc)
                message = f"applying {kind} {name} (object {index} of {len(objects)}) failed: {reason}"
                if rollback_on_error and not self.dry_run and record is not None:
                    removed = rollback(self.kube, record, progress=self.progress)
                    message += f"\nrolled back {len(removed)} object(s) this run created; nothing is left half-applied"
                raise ApplyError(message) from exc
            done.append(applied)
            if record is not None:
                Path(record).parent.mkdir(parents=True, exist_ok=True)
                with open(record, "a") as f:
                    f.write(json.dumps(asdict(applied)) + "\n")
            self.progress(f"[{index}/{len(objects)}] {applied.ref}: {applied.action}")
        return done

    def _apply_one(self, obj: dict, dry_crds: set) -> Applied:
        api_version, kind, namespace, name = _meta(obj)
        if (_group(api_version), kind) in dry_crds:
            return Applied(api_version, kind, namespace, name, "skipped", "its CRD exists only as a dry-run")
        res = self.kube.resource(api_version, kind)
        ns = (namespace or self.default_namespace) if res.namespaced else None
        body = json.loads(json.dumps(obj))
        if ns:
            body["metadata"]["namespace"] = ns
        before = self.kube.get(api_version, kind, name, ns)
        kwargs = {"dry_run": "All"} if self.dry_run else {}
        result = self.kube.dynamic.server_side_apply(
            res, body=body, namespace=ns, field_manager=self.field_manager, force_conflicts=True, **kwargs)
        if self.dry_run:
            action = "dry-run"
        elif before is None:
            action = "created"
        elif before["metadata"].get("resourceVersion") == result.metadata.resourceVersion:
            action = "unchanged"
        else:
            action = "configured"
        if kind == "CustomResourceDefinition" and not self.dry_run:
            crd_established(self.kube, name, timeout=self.crd_timeout)
            self.kube.refresh_discovery()
        elif kind == "APIService" and not self.dry_run:
            self.kube.refresh_discovery()
        return Applied(api_version, kind, ns, name, action)


def read_record(record: Path) -> list[Applied]:
    if not record.exists():
        return []
    return [Applied(**json.loads(line)) for line in record.read_text().splitlines() if line.strip()]


def rollback(kube: Kube, record: Path, timeout: float = 120, progress: Progress | None = None,
             namespaces_gone: bool = True, pod_grace_s: int | None = None) -> list[Applied]:
    """Delete, newest first, every object the recorded run *created*; wait until gone.

    ``namespaces_gone=False``: a deleted Namespace only has to be terminating (see
    :data:`~cni_runbook.kube.wait.NAMESPACE_DELETION_GRACE_S`); every other object is still
    awaited until gone. Whoever creates the namespace again waits for it first.
    ``pod_grace_s``: the grace period of the Pods deleted (test pods: 0, gone at once)."""
    progress = progress or (lambda _m: None)
    removed = []
    history = read_record(record)
    already_deleted = {(i.kind, i.namespace, i.name) for i in history if i.action == "deleted"}
    doomed = [i for i in reversed(history)
              if i.action == "created" and (i.kind, i.namespace, i.name) not in already_deleted]
    for number, item in enumerate(doomed, 1):
        try:
            res = kube.resource(item.api_version, item.kind)
            grace = {"grace_period_seconds": pod_grace_s} if item.kind == "Pod" and pod_grace_s is not None else {}
            kube.dynamic.delete(res, name=item.name, namespace=item.namespace,
                                propagation_policy="Foreground" if item.kind in ("Namespace",) else "Background", **grace)
        except (NotFoundError, KubeError):
            pass
        removed.append(item)
        progress(f"[{number}/{len(doomed)}] deleted {item.ref}")  # the console keeps the last of these
    deadline = time.monotonic() + timeout
    for item in removed:
        while (obj := kube.get(item.api_version, item.kind, item.name, item.namespace)) is not None:
            if (not namespaces_gone and item.kind == "Namespace"
                    and (obj.get("metadata") or {}).get("deletionTimestamp")):
                break
            if time.monotonic() > deadline:
                raise ApplyError(f"rollback: {item.ref} still exists after {timeout:.0f}s")
            time.sleep(0.5)
    with open(record, "a") as f:
        for item in removed:
            f.write(json.dumps({**asdict(item), "action": "deleted"}) + "\n")
    return removed
