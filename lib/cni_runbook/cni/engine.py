"""Apply a CNI's ordered objects to a cluster in phases (server-side apply), then wait.

:func:`install` applies with the :class:`~cni_runbook.kube.apply.Applier` (field manager
``cni-runbook``) in the phase order of :mod:`cni_runbook.cni.manifests`, in three steps:

- namespaces ... workloads, then wait for every DaemonSet/Deployment rollout;
- custom resources (their admission webhooks are served by those workloads);
- APIServices, then wait until each is ``Available``;

then waits for every node ``Ready`` and CoreDNS ``Running`` (:mod:`.waits`). Every applied
object is appended to ``applied.jsonl`` as it goes; any failure (apply or wait) rolls back what
this run created, unless told not to. ``dry_run=True`` sends everything once with
``dryRun=All`` (nothing persisted). :func:`objects_for_cluster` orders objects against a live
cluster's namespaces and CRDs.
"""

from __future__ import annotations

import json

from collections.abc import Iterable, Sequence
from pathlib import Path

from .manifests import Manifest, ManifestObject, RenderedManifest, ordered_objects
from .result import DRY_RUN_RECORD_NAME, RECORD_NAME, InstallError, InstallResult, Progress, Step, Timeouts, _say, roll_back_created, timed_step
from .waits import WORKLOAD_KINDS, _rollout, _where, apiservices_available, health_table, unhealthy_pods, verify_installation

#: The phases applied before the rollout wait, between it and the APIServices, and last.
STEP_PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("namespaces", "crds", "rbac", "config", "unknown", "services", "webhooks", "workloads")),
    ("custom-resources", ("custom-resources",)),
    ("apiservices", ("apiservices",)),
)


def cluster_facts(kube) -> tuple[list[str], list[str]]:
    """(existing namespaces, API groups of the CRDs already installed) of a live cluster."""
    from kubernetes import client

    namespaces = [n.metadata.name for n in kube.core.list_namespace().items]
    crds = client.ApiextensionsV1Api(kube.api).list_custom_resource_definition().items
    return namespaces, sorted({c.spec.group for c in crds})


def objects_for_cluster(rendered: RenderedManifest | Manifest | Sequence[Manifest], kube, *, namespace: str) -> list[ManifestObject]:
    """Order and check objects against a live cluster's namespaces and installed CRD groups."""
    namespaces, groups = cluster_facts(kube)
    manifests = rendered.rendered if isinstance(rendered, RenderedManifest) else rendered
    return ordered_objects(manifests, existing_namespaces=namespaces, known_api_groups=groups,
                           default_namespace=namespace)


def _bodies(objects: Iterable[ManifestObject]) -> list[dict]:
    """Objects as the Applier takes them, each in the namespace the ordering resolved."""
    out = []
    for o in objects:
        body = json.loads(json.dumps(o.body))
        if o.namespaced and o.ref.namespace:
            body.setdefault("metadata", {})["namespace"] = o.ref.namespace
        out.append(body)
    return out


def install(
    kube,
    objects: Sequence[ManifestObject],
    *,
    record_dir: str | Path,
    dry_run: bool = False,
    namespace: str = "kube-system",
    timeouts: Timeouts = Timeouts(),
    wait: bool = True,
    expected_nodes: int | None = None,
    rollback_on_failure: bool = True,
    progress: Progress | None = None,
) -> InstallResult:
    """Apply ``objects`` (from :func:`prepare` / :func:`objects_for_cluster`) and wait (module docstring).

    The record goes to ``<record_dir>/applied.jsonl`` (``dry-run.jsonl`` for a dry run). On any
    failure, when ``rollback_on_failure``, everything this run created is deleted again and
    :class:`InstallError` says what failed and what was rolled back (``.result`` has the rest).
    """
    from ..kube.apply import Applier, ApplyError, preflight

    say = progress or _say
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    result = InstallResult(dry_run=dry_run)
    objects = sorted(objects, key=lambda o: o.order) if all(o.order for o in objects) else list(objects)
    if not objects:
        raise InstallError("nothing to apply: the manifest has no objects", result)
    bodies = _bodies(objects)

    problems = preflight(kube, bodies, namespace)
    if problems:
        raise InstallError("nothing was applied; the API server cannot take this set:\n- " + "\n- ".join(
            f"{_where(objects, p)}{p}" for p in problems), result)

    applier = Applier(kube, dry_run=dry_run, default_namespace=namespace, progress=say, crd_timeout=timeouts.crd_s)
    if dry_run:
        result.record = record_dir / DRY_RUN_RECORD_NAME
        say(f"server-side dry-run of {len(bodies)} objects (dryRun=All: nothing is persisted)")
        try:
            result.applied = applier.apply(bodies, record=result.record, rollback_on_error=False)
        except ApplyError as exc:
            raise InstallError(f"server-side dry-run rejected the set (nothing was persisted): {exc}", result) from exc
        skipped = [a for a in result.applied if a.action == "skipped"]
        result.steps.append(Step("server-side dry-run", "passed",
                                 f"{len(result.applied) - len(skipped)} objects accepted by the API server"
                                 + (f", {len(skipped)} custom resources skipped (their CRD is only in this set)" if skipped else "")))
        return result

    result.record = record_dir / RECORD_NAME
    doing = "starting"
    try:
        for step, phases in STEP_PHASES:
            chunk = [b for o, b in zip(objects, bodies) if o.phase in phases]
            if not chunk:
                continue
            doing = f"applying {step} ({', '.join(phases)})"
            say(f"applying {step}: {len(chunk)} object(s)")
            result.applied += applier.apply(chunk, record=result.record, rollback_on_error=False)
            if step == "base" and wait:
                doing = "waiting for the rollouts"
                for o in objects:
                    if o.ref.kind in WORKLOAD_KINDS and o.ref.group == "apps":
                        timed_step(result, f"rollout {o.ref.kind} {o.ref.namespace}/{o.ref.name}",
                               lambda o=o: _rollout(kube, o, timeouts.rollout_s, say))
            if step == "apiservices" and wait:
                doing = "waiting for the APIServices"
                names = [o.ref.name for o in objects if o.ref.kind == "APIService"]
                timed_step(result, f"APIServices Available ({len(names)})",
                       lambda: apiservices_available(kube, names, timeout=timeouts.apiservice_s, progress=say))
        if wait:
            doing = "waiting for the nodes and CoreDNS"
            verify_installation(kube, objects, result, timeouts=timeouts, expected_nodes=expected_nodes, progress=say,
                                rollouts=False)
    except Exception as exc:  # noqa: BLE001 - any failure: roll back what this run created
        message = f"CNI install failed while {doing}: {exc}"
        try:
            result.health = health_table(kube, objects)
            message += unhealthy_pods(result.health)
        except Exception:  # noqa: BLE001 - the health table is a best-effort diagnostic here
            pass
        if rollback_on_failure:
            message += roll_back_created(kube, result, timeouts.rollback_s, say)
        else:
            message += f"\nnothing was rolled back (rollback_on_failure=False); `rollback` with {result.record} removes it"
        raise InstallError(message, result) from exc
    return result
