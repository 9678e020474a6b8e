"""Stage 02's install engine: obtain the source, render it, apply it in phases, wait, check health.

1. :func:`prepare` - obtain the source into the artifacts (with its sha256), render it with the
   profile (``antrea``, ``lab``, ``generic``; a Helm chart goes through ``helm template``), parse
   and order the objects (:func:`~cni_runbook.cni.manifests.ordered_objects`). The result shows
   what changed against upstream and the table of objects. No cluster is needed.
2. :func:`install` - apply the objects with the :class:`~cni_runbook.kube.apply.Applier`
   (server-side apply, field manager ``cni-runbook``) in the phase order of
   :mod:`cni_runbook.cni.manifests`, in three steps:

   - namespaces ... workloads, then wait for every DaemonSet/Deployment rollout;
   - custom resources (their admission webhooks are served by those workloads);
   - APIServices, then wait until each is ``Available``;

   then wait for every node ``Ready`` and CoreDNS ``Running``, and build the health table of the
   CNI pods. Every applied object is appended to ``applied.jsonl`` as it goes; any failure
   (apply or wait) rolls back what this run created, unless told not to.
   ``dry_run=True`` sends everything once with ``dryRun=All``: the API server validates and
   admits each object and persists nothing (custom resources of a CRD that exists only in the
   same set are reported ``skipped``).
3. :func:`verify_installation` - the same waits and health for a CNI applied by someone else
   (Kubespray's custom_cni route); :func:`antrea_post_checks` - antrea-agent on every node,
   antrea-controller Ready, its APIServices Available, ``antctl check installation`` when antctl
   is on PATH.
4. :func:`rollback_run` - remove exactly what a recorded run created, on request.

Waits all have timeouts (:class:`Timeouts`); long steps report through ``progress``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OperatorError
from ..kube.client import KubeError
from .errors import CniError, ManifestError, SourceError
from .manifests import (
    DEFAULT_EXISTING_NAMESPACES,
    Manifest,
    ManifestObject,
    RenderedManifest,
    objects_table,
    ordered_objects,
)

Progress = Callable[[str], None]

RECORD_NAME = "applied.jsonl"
DRY_RUN_RECORD_NAME = "dry-run.jsonl"
TARGET_NAME = "target.json"
RENDERED_NAME = "rendered.yaml"
LAB_MANIFEST = Path(__file__).resolve().parents[1] / "lab" / "manifests" / "kube-router.yaml"
COREDNS_SELECTOR = "k8s-app=kube-dns"
WORKLOAD_KINDS = ("DaemonSet", "Deployment")

#: The phases applied before the rollout wait, between it and the APIServices, and last.
STEP_PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("namespaces", "crds", "rbac", "config", "unknown", "services", "webhooks", "workloads")),
    ("custom-resources", ("custom-resources",)),
    ("apiservices", ("apiservices",)),
)


class InstallError(CniError):
    """The install failed; ``result`` holds what was done (applied objects, waits, health)."""

    def __init__(self, message: str, result: InstallResult | None = None):
        super().__init__(message)
        self.result = result


def _say(_message: str) -> None:
    return None


# ----------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class Prepared:
    """What stage 02 would apply: the stored source, the rendering and the ordered objects.

    ``source`` is ``None`` (and ``rendered`` too) when the source was not obtained, which only
    happens in plan mode for a remote source (``notes`` says why).
    """

    profile: str
    source: Any  # SourceRecord | None
    rendered: RenderedManifest | None
    objects: tuple[ManifestObject, ...]
    rendered_path: Path | None = None
    notes: tuple[str, ...] = ()

    def objects_table(self):
        """Order, phase, kind, namespace, name, apiVersion, images, flags of every object."""
        return objects_table(self.objects)

    def diff(self) -> str:
        """The unified diff upstream -> rendered ('' when nothing changed)."""
        from .diff import unified_diff

        return unified_diff(self.rendered.upstream, self.rendered.rendered) if self.rendered else ""

    def changed_objects(self):
        """The objects the rendering changed (kind, namespace, name, change, lines, paths)."""
        from .diff import changed_objects

        if self.rendered is None:
            import pandas as pd

            return pd.DataFrame(columns=["kind", "namespace", "name", "change", "lines", "paths"])
        return changed_objects(self.rendered.upstream, self.rendered.rendered)

    def source_table(self):
        """One row: kind, origin, stored file, sha256, size."""
        import pandas as pd

        if self.source is None:
            return pd.DataFrame([{"kind": "-", "origin": "; ".join(self.notes), "file": "", "sha256": "", "size": 0}])
        s = self.source
        return pd.DataFrame([{"kind": s.kind, "origin": s.origin, "file": s.path.name, "sha256": s.sha256, "size": s.size}])

    def images(self) -> list[str]:
        """Every container image the objects run, once each, in apply order."""
        return list(dict.fromkeys(image for o in self.objects for image in o.images))


def _is_remote(cni) -> bool:
    source = cni.source
    if source is None:
        return cni.profile == "antrea"
    return source.kind in ("manifest-url", "helm")


def obtain_source(cni, artifacts: Path, *, timeout: float = 60.0):
    """Fetch or copy the source of ``cni`` (the params' ``cni`` section) into ``artifacts``.

    No source given: ``antrea`` takes the release manifest of ``cni.version``, ``lab`` the lab's
    kube-router manifest shipped with this package. Returns a
    :class:`~cni_runbook.cni.sources.SourceRecord` (path, sha256, origin).
    """
    from . import sources

    artifacts = Path(artifacts)
    src = cni.source
    if src is None:
        if cni.profile == "antrea":
            if not cni.version:
                raise SourceError("cni.version: the antrea profile without cni.source needs a version (e.g. v2.7.0)")
            return sources.antrea_manifest(cni.version, artifacts, timeout=timeout)
        if cni.profile == "lab":
            return sources.local_file(LAB_MANIFEST, artifacts)
        raise SourceError(f"cni.source: profile {cni.profile!r} needs a source (manifest-url, file or helm)")
    if src.kind == "file":
        return sources.local_file(src.path, artifacts)
    if src.kind == "manifest-url":
        filename = "antrea.yml" if cni.profile == "antrea" else None
        return sources.fetch_url(src.url, artifacts, filename=filename, version=cni.version, timeout=timeout)
    helm = src.helm
    return sources.helm_repo_chart(helm.repository_url, helm.chart, artifacts, version=helm.version,
                                   values=helm.values, timeout=timeout)


def source_manifest(record, cni, *, helm: str | None = None) -> Manifest:
    """The manifest of a stored source; a Helm chart is rendered with ``helm template``."""
    if record.kind not in ("helm-repo", "helm-local"):
        return record.manifest()
    from . import helm as helm_route

    values = []
    if record.details.get("values_file"):
        values.append(record.path.parent / record.details["values_file"])
    chart_params = cni.source.helm if cni.source is not None and cni.source.kind == "helm" else None
    if chart_params is not None:
        values = [*map(Path, chart_params.values_files), *values]  # params values win over files
    release = chart_params.release_name if chart_params is not None else record.details.get("chart", "cni")
    manifest = helm_route.template(record.path, release=release, namespace=cni.namespace, values_files=values, helm=helm)
    return Manifest(manifest.text, f"{record.origin} (helm template)")


def render(cni, manifest: Manifest, *, kube_proxy_remove: bool = False, where: str = "cni") -> RenderedManifest:
    """Render ``manifest`` with the profile of ``cni`` (config keys, image pinning and mirror)."""
    from .profiles import render as render_profile

    options: dict[str, Any] = {"image_registry": cni.image_registry, "settings": dict(cni.config or {}),
                               "where": f"{where}.config"}
    if cni.profile == "antrea":
        options.update(version=cni.version, kube_proxy_remove=kube_proxy_remove)
    return render_profile(cni.profile, manifest, **options)


def prepare(
    cni,
    artifacts: str | Path,
    *,
    kube_proxy_remove: bool = False,
    plan: bool = False,
    existing_namespaces: Iterable[str] = DEFAULT_EXISTING_NAMESPACES,
    known_api_groups: Iterable[str] = (),
    helm: str | None = None,
    timeout: float = 60.0,
) -> Prepared:
    """Obtain, render and order (see the module docstring). ``cni`` is the params' ``cni`` section.

    In plan mode a remote source (URL, Helm repository, Antrea's release asset) is not
    downloaded - plan mode touches nothing beyond this machine - and the result says so; point
    ``cni.source`` at a local file or mirror to see the full rendering in a plan.
    The rendered manifest is written to ``<artifacts>/rendered.yaml``.
    """
    artifacts = Path(artifacts)
    if plan and _is_remote(cni):
        from .sources import antrea_manifest_url

        origin = (cni.source.url if cni.source is not None and cni.source.kind == "manifest-url" else
                  cni.source.helm.repository_url if cni.source is not None else antrea_manifest_url(cni.version or ""))
        note = f"plan mode: {origin} is not downloaded (a remote source); the apply run fetches and renders it"
        return Prepared(cni.profile, None, None, (), None, (note,))
    record = obtain_source(cni, artifacts, timeout=timeout)
    manifest = source_manifest(record, cni, helm=helm)
    rendered = render(cni, manifest, kube_proxy_remove=kube_proxy_remove)
    objects = ordered_objects(rendered.rendered, existing_namespaces=existing_namespaces,
                              known_api_groups=known_api_groups, default_namespace=cni.namespace)
    path = artifacts / RENDERED_NAME
    path.write_text(rendered.rendered.text, encoding="utf-8")
    notes = tuple(dict.fromkeys(f"{o.ref}: {flag}" for o in objects for flag in o.flags))
    return Prepared(cni.profile, record, rendered, tuple(objects), path, notes)


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


# ----------------------------------------------------------------------------- install


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


def _timed(result: InstallResult, name: str, func: Callable[[], str]) -> str:
    start = time.monotonic()
    try:
        detail = func()
    except Exception as exc:
        result.steps.append(Step(name, "failed", str(exc), time.monotonic() - start))
        raise
    result.steps.append(Step(name, "passed", detail, time.monotonic() - start))
    return detail


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
                        _timed(result, f"rollout {o.ref.kind} {o.ref.namespace}/{o.ref.name}",
                               lambda o=o: _rollout(kube, o, timeouts.rollout_s, say))
            if step == "apiservices" and wait:
                doing = "waiting for the APIServices"
                names = [o.ref.name for o in objects if o.ref.kind == "APIService"]
                _timed(result, f"APIServices Available ({len(names)})",
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
            from ..kube.apply import rollback

            try:
                result.rolled_back = rollback(kube, result.record, timeout=timeouts.rollback_s, progress=say)
            except Exception as failed:  # noqa: BLE001 - report both failures, never hide the first
                message += (f"\nROLLBACK FAILED: {failed}\nobjects of this run may be left on the cluster; "
                            f"{result.record} lists what it created (`cni-runbook rollback` retries)")
            else:
                message += (f"\nrolled back the {len(result.rolled_back)} object(s) this run created "
                            f"(record: {result.record}); nothing is left half-applied")
        else:
            message += f"\nnothing was rolled back (rollback_on_failure=False); `rollback` with {result.record} removes it"
        raise InstallError(message, result) from exc
    return result


def _where(objects: Sequence[ManifestObject], problem: str) -> str:
    """``file: document N (line L): `` for the object a preflight problem names, if found."""
    for o in objects:
        if re.search(rf"\b{re.escape(o.ref.kind)} (?:\S+/)?{re.escape(o.ref.name)}:", problem):
            return f"{o.where}: "
    return ""


def _rollout(kube, obj: ManifestObject, timeout: float, progress: Progress) -> str:
    from ..kube.wait import rollout

    return rollout(kube, obj.ref.kind, obj.ref.namespace, obj.ref.name, timeout=timeout, progress=progress)


def verify_installation(
    kube,
    objects: Sequence[ManifestObject],
    result: InstallResult | None = None,
    *,
    timeouts: Timeouts = Timeouts(),
    expected_nodes: int | None = None,
    progress: Progress | None = None,
    rollouts: bool = True,
) -> InstallResult:
    """Waits after the CNI objects are on the cluster (by this engine or by Kubespray).

    Rollouts of the set's DaemonSets/Deployments (``rollouts``), its APIServices Available, every
    node Ready, CoreDNS Running (skipped when the cluster has no CoreDNS Deployment), then the
    health table. A failed wait raises (WaitTimeout naming the last state seen).
    """
    from ..kube.wait import nodes_ready, pods_running

    say = progress or _say
    result = result if result is not None else InstallResult(dry_run=False)
    if rollouts:
        for o in objects:
            if o.ref.kind in WORKLOAD_KINDS and o.ref.group == "apps":
                _timed(result, f"rollout {o.ref.kind} {o.ref.namespace}/{o.ref.name}",
                       lambda o=o: _rollout(kube, o, timeouts.rollout_s, say))
        names = [o.ref.name for o in objects if o.ref.kind == "APIService"]
        if names:
            _timed(result, f"APIServices Available ({len(names)})",
                   lambda: apiservices_available(kube, names, timeout=timeouts.apiservice_s, progress=say))
    _timed(result, "nodes Ready", lambda: nodes_ready(kube, expected=expected_nodes, timeout=timeouts.nodes_s, progress=say))
    if kube.get("apps/v1", "Deployment", "coredns", "kube-system") is None:
        result.steps.append(Step("CoreDNS Running", "skipped", "no Deployment kube-system/coredns on this cluster"))
    else:
        _timed(result, "CoreDNS Running", lambda: pods_running(kube, "kube-system", COREDNS_SELECTOR,
                                                                timeout=timeouts.coredns_s, progress=say))
    result.health = health_table(kube, objects)
    return result


def apiservices_available(kube, names: Sequence[str], *, timeout: float = 180, progress: Progress | None = None) -> str:
    """Wait (watch) until every APIService in ``names`` has condition Available=True."""
    from kubernetes import client

    from ..kube.wait import watch_until

    wanted = set(names)
    api = client.ApiregistrationV1Api(kube.api)

    def pred(items):
        state = {}
        for item in items:
            name = item["metadata"]["name"]
            if name in wanted:
                conds = {c["type"]: c for c in (item.get("status") or {}).get("conditions") or []}
                available = conds.get("Available", {})
                state[name] = (available.get("status") == "True", available.get("reason", "no status yet"))
        missing = sorted(wanted - set(state))
        waiting = sorted(f"{n} ({reason})" for n, (ok, reason) in state.items() if not ok)
        done = not missing and not waiting
        text = f"APIServices Available: {len(wanted) - len(missing) - len(waiting)}/{len(wanted)}"
        if waiting or missing:
            text += "; waiting for " + ", ".join(waiting + [f"{n} (absent)" for n in missing])
        return done, text

    return watch_until(api.list_api_service, pred, timeout, f"APIServices {', '.join(sorted(wanted))} to be Available", progress)


# ----------------------------------------------------------------------------- health


HEALTH_COLUMNS = ["workload", "pod", "node", "phase", "ready", "restarts", "waiting"]


def pod_health_rows(workloads: Sequence[dict], pods: Sequence[dict]) -> list[dict[str, Any]]:
    """One row per pod of the given DaemonSets/Deployments (dicts as the API returns them).

    A pod belongs to a workload when it is in its namespace and matches its
    ``spec.selector.matchLabels``. ``ready`` is ``n/m`` ready containers, ``restarts`` the sum of
    container restarts, ``waiting`` the reasons of waiting containers (CrashLoopBackOff...).
    """
    rows = []
    for wl in workloads:
        meta = wl.get("metadata") or {}
        match = ((wl.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        for pod in pods:
            pmeta = pod.get("metadata") or {}
            labels = pmeta.get("labels") or {}
            if pmeta.get("namespace") != meta.get("namespace") or not match or any(labels.get(k) != v for k, v in match.items()):
                continue
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            ready = sum(1 for s in statuses if s.get("ready"))
            n = len((pod.get("spec") or {}).get("containers") or []) or len(statuses)
            waiting = sorted({(s.get("state") or {}).get("waiting", {}).get("reason", "") for s in statuses} - {""})
            rows.append({
                "workload": f"{wl.get('kind')} {meta.get('name')}",
                "pod": pmeta.get("name"),
                "node": (pod.get("spec") or {}).get("nodeName") or "(unscheduled)",
                "phase": (pod.get("status") or {}).get("phase", "Unknown"),
                "ready": f"{ready}/{n}",
                "restarts": sum(int(s.get("restartCount", 0)) for s in statuses),
                "waiting": ", ".join(waiting),
            })
    return sorted(rows, key=lambda r: (r["workload"], r["node"], r["pod"]))


def unhealthy_pods(health, limit: int = 10) -> str:
    """Lines naming the CNI pods that are not Running with all containers ready ('' if none)."""
    if health is None or health.empty:
        return ""
    bad = health[(health["phase"] != "Running") | health["ready"].map(lambda r: r.split("/")[0] != r.split("/")[1])]
    lines = [f"  {r.pod} on {r.node}: {r.phase}, ready {r.ready}, restarts {r.restarts}"
             + (f" ({r.waiting})" if r.waiting else "") for r in bad.head(limit).itertuples()]
    more = f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else ""
    return ("\nCNI pods not ready:\n" + "\n".join(lines) + more) if lines else ""


def health_table(kube, objects: Sequence[ManifestObject]):
    """The health table (:func:`pod_health_rows`) of the CNI pods of ``objects``, from the cluster."""
    import pandas as pd

    workloads, pods = [], []
    for o in objects:
        if o.ref.kind in WORKLOAD_KINDS and o.ref.group == "apps":
            live = kube.get(o.ref.api_version, o.ref.kind, o.ref.name, o.ref.namespace)
            if live is not None:
                workloads.append(live)
    for ns in sorted({w["metadata"]["namespace"] for w in workloads}):
        pods += json.loads(kube.core.list_namespaced_pod(ns, _preload_content=False).data)["items"]
    return pd.DataFrame(pod_health_rows(workloads, pods), columns=HEALTH_COLUMNS)


# ----------------------------------------------------------------------------- Antrea


ANTREA_AGENT = "antrea-agent"
ANTREA_CONTROLLER = "antrea-controller"
_ANTCTL_SUMMARY = re.compile(r"(\d+)\s+succeeded,\s*(\d+)\s+failed,\s*(\d+)\s+skipped", re.IGNORECASE)


def antrea_checks(
    *,
    nodes: Sequence[dict],
    agent_pods: Sequence[dict],
    controller: dict | None,
    apiservices: Sequence[dict],
    expected_apiservices: Sequence[str] = (),
) -> list[Step]:
    """Antrea's post-install checks from objects as the API returns them (no cluster needed).

    - antrea-agent: one pod Running and Ready on every node;
    - antrea-controller: the Deployment's ready replicas equal its replicas (at least 1);
    - APIServices: each of ``expected_apiservices`` (default: every ``*.antrea.io`` one given)
      exists with condition Available=True.
    """
    checks = []
    node_names = sorted(n["metadata"]["name"] for n in nodes)
    running: dict[str, bool] = {}
    for pod in agent_pods:
        node = (pod.get("spec") or {}).get("nodeName")
        conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
        ok = (pod.get("status") or {}).get("phase") == "Running" and conds.get("Ready") == "True"
        running[node] = running.get(node, False) or ok
    missing = [n for n in node_names if n not in running]
    not_ready = [n for n in node_names if n in running and not running[n]]
    if not node_names:
        checks.append(Step("antrea-agent Running on every node", "failed", "the cluster lists no nodes"))
    elif missing or not_ready:
        detail = "; ".join(filter(None, [f"no agent pod on {', '.join(missing)}" if missing else "",
                                         f"agent not Running+Ready on {', '.join(not_ready)}" if not_ready else ""]))
        checks.append(Step("antrea-agent Running on every node", "failed", detail))
    else:
        checks.append(Step("antrea-agent Running on every node", "passed", f"{len(node_names)}/{len(node_names)} nodes"))

    if controller is None:
        checks.append(Step("antrea-controller Ready", "failed", "Deployment antrea-controller not found"))
    else:
        want = (controller.get("spec") or {}).get("replicas", 1)
        ready = (controller.get("status") or {}).get("readyReplicas") or 0
        status = "passed" if want >= 1 and ready >= want else "failed"
        checks.append(Step("antrea-controller Ready", status, f"{ready}/{want} replicas ready"))

    expected = list(expected_apiservices) or sorted(a["metadata"]["name"] for a in apiservices
                                                     if a["metadata"]["name"].endswith(".antrea.io"))
    by_name = {a["metadata"]["name"]: a for a in apiservices}
    bad = []
    for name in expected:
        conds = {c["type"]: c for c in ((by_name.get(name) or {}).get("status") or {}).get("conditions") or []}
        available = conds.get("Available")
        if name not in by_name:
            bad.append(f"{name}: absent")
        elif not available or available.get("status") != "True":
            bad.append(f"{name}: {(available or {}).get('reason', 'no Available condition')}")
    if not expected:
        checks.append(Step("Antrea APIServices Available", "failed", "no *.antrea.io APIService found"))
    else:
        checks.append(Step("Antrea APIServices Available", "failed" if bad else "passed",
                           "; ".join(bad) if bad else f"{len(expected)}/{len(expected)} Available"))
    return checks


def antctl_check_installation(kubeconfig: str | Path, *, antctl: str | None = None, namespace: str | None = None,
                              timeout: float = 900) -> tuple[Step, str]:
    """Run ``antctl check installation`` (when antctl is on PATH); returns the check and its output.

    The kubeconfig is passed through ``KUBECONFIG``; the summary line "X succeeded, Y failed,
    Z skipped" decides the status (any failed test fails the check).
    """
    binary = shutil.which(antctl or "antctl")
    if binary is None:
        return Step("antctl check installation", "skipped", "antctl is not on PATH; stage 03 covers the same scenarios"), ""
    command = [binary, "check", "installation"] + (["--namespace", namespace] if namespace else [])
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    start = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return Step("antctl check installation", "failed", f"did not finish within {timeout:g} s", timeout), ""
    output = (done.stdout + ("\n" + done.stderr if done.stderr.strip() else "")).strip()
    return parse_antctl_output(output, done.returncode, time.monotonic() - start), output


def parse_antctl_output(output: str, returncode: int, time_s: float = 0.0) -> Step:
    """The check for ``antctl check installation``'s output (its summary line and exit code)."""
    found = _ANTCTL_SUMMARY.findall(output)
    if found:
        ok, failed, skipped = map(int, found[-1])
        status = "passed" if failed == 0 and returncode == 0 else "failed"
        return Step("antctl check installation", status, f"{ok} succeeded, {failed} failed, {skipped} skipped", time_s)
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return Step("antctl check installation", "failed" if returncode else "passed", f"exit {returncode}: {last}", time_s)


def antrea_post_checks(kube, objects: Sequence[ManifestObject], *, namespace: str = "kube-system",
                       antctl: str | None = None, antctl_timeout: float = 900) -> tuple[list[Step], str]:
    """Antrea post-checks against the cluster (see :func:`antrea_checks`) plus antctl; returns (checks, antctl output)."""
    from kubernetes import client

    nodes = json.loads(kube.core.list_node(_preload_content=False).data)["items"]
    agent_ns = next((o.ref.namespace for o in objects if o.ref.kind == "DaemonSet" and o.ref.name == ANTREA_AGENT), namespace)
    pods = json.loads(kube.core.list_namespaced_pod(agent_ns, label_selector="component=antrea-agent",
                                                    _preload_content=False).data)["items"]
    controller = kube.get("apps/v1", "Deployment", ANTREA_CONTROLLER, agent_ns)
    apiservices = json.loads(client.ApiregistrationV1Api(kube.api).list_api_service(_preload_content=False).data)["items"]
    expected = [o.ref.name for o in objects if o.ref.kind == "APIService"]
    checks = antrea_checks(nodes=nodes, agent_pods=pods, controller=controller, apiservices=apiservices,
                           expected_apiservices=expected)
    step, output = antctl_check_installation(kube.kubeconfig, antctl=antctl, timeout=antctl_timeout)
    return [*checks, step], output


# ----------------------------------------------------------------------------- the stage


def apply_stage(ctx, prepared: Prepared, *, timeouts: Timeouts = Timeouts(), progress: Progress | None = print,
                antctl_timeout: float = 900) -> InstallResult:
    """Stage 02 outside plan mode: connect, check the objects against the cluster, apply by the
    params' route, wait, health, Antrea post-checks. Never raises for a failed install: the
    returned result has ``error`` set (and what was rolled back), so the notebook can show it all
    and record a failed result.

    Route ``direct``: :func:`install` (``cni.server_dry_run`` -> dry run, no waits). Route
    ``kubespray_custom_cni``: the inventory and group_vars are rendered from the params into the
    artifacts and Kubespray's network step applies the protected manifest
    (:mod:`cni_runbook.cni.kubespray_route`); a server dry-run never goes through Kubespray.
    """
    from ..kube import Kube

    params, cni = ctx.params, ctx.params.cni
    if prepared.rendered is None:
        return InstallResult(dry_run=cni.server_dry_run, error="nothing rendered: " + "; ".join(prepared.notes))
    kubeconfig, context = kubeconfig_for(params, ctx.get)
    kube = Kube.from_kubeconfig(kubeconfig, context)
    result = InstallResult(dry_run=cni.server_dry_run)
    try:
        compatible = compatibility_step(cni, kube.version(), kube_from="the live API server")
        result.steps.append(compatible)
        if compatible.status == "failed":
            result.error = f"refused: {compatible.detail}"
            return result
        objects = objects_for_cluster(prepared.rendered, kube, namespace=cni.namespace)
        write_target(ctx.artifacts, kubeconfig, context)
        if cni.route == "kubespray_custom_cni" and not cni.server_dry_run:
            result = _kubespray_route(ctx, prepared, kube, objects, timeouts=timeouts, progress=progress)
        else:
            result = install(kube, objects, record_dir=ctx.artifacts, dry_run=cni.server_dry_run, namespace=cni.namespace,
                             timeouts=timeouts, progress=progress)
        if cni.profile == "antrea" and not cni.server_dry_run:
            checks, result.antctl_output = antrea_post_checks(kube, objects, namespace=cni.namespace,
                                                              antctl_timeout=antctl_timeout)
            result.post_checks += checks
    except (InstallError, ManifestError, SourceError, KubeError) as exc:
        result = getattr(exc, "result", None) or result
        result.error = str(exc)
    finally:
        kube.close()
    return result


def compatibility_step(cni, kube_version: str | None, *, kube_from: str) -> Step:
    """The CNI's compatibility with the Kubernetes version (:mod:`cni_runbook.lifecycle.compat`) as a
    step: ``failed`` when unsupported and not accepted (``cni.compatibility.accept_unsupported``)."""
    from ..lifecycle.compat import check_kube

    check = check_kube(cni.profile, cni.version, kube_version, declared=cni.compatibility, kube_from=kube_from,
                       accept=cni.compatibility.accept_unsupported)
    status = check.as_check()["status"]
    return Step("CNI supports the Kubernetes version", status, f"{check.status}: {check.detail} [{check.source}]")


def _kubespray_route(ctx, prepared: Prepared, kube, objects, *, timeouts: Timeouts, progress: Progress | None) -> InstallResult:
    from ..kubespray import ClusterVars, Host, write_inventory_dir
    from .kubespray_route import install_via_kubespray, write_custom_cni

    params = ctx.params
    ks, ssh = params.kubespray, params.cluster.ssh
    hosts = [Host(name=n.name, ansible_host=n.ansible_host, roles=tuple(n.roles),
                  ip=str(n.ip) if n.ip else None, access_ip=str(n.access_ip) if n.access_ip else None,
                  ansible_user=ssh.user, ansible_port=ssh.port,
                  ansible_ssh_private_key_file=str(ssh.key_file) if ssh.key_file else None)
             for n in params.cluster.nodes]
    cluster = ClusterVars(kube_network_plugin="custom_cni", kube_service_addresses=str(ks.kube_service_addresses),
                          kube_pods_subnet=str(ks.kube_pods_subnet), kube_network_node_prefix=ks.kube_network_node_prefix,
                          kube_proxy_mode=ks.kube_proxy_mode, kube_proxy_remove=ks.kube_proxy_remove)
    extras = dict(ks.extra_vars) | ({"kube_version": ks.kube_version} if ks.kube_version else {})
    files = write_inventory_dir(ctx.artifacts / "inventory", hosts, cluster, extras)
    write_custom_cni(prepared.rendered.rendered, files.inventory_dir)
    _, result = install_via_kubespray(kube, objects, kubespray_dir=ks.dir, inventory=files.inventory, run_dir=ctx.run_dir,
                                      record_dir=ctx.artifacts, timeouts=timeouts, redact=ctx.redactor.text,
                                      progress=progress)
    return result


# ----------------------------------------------------------------------------- rollback


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

    Takes the newest attempt's ``applied.jsonl``; the kubeconfig is ``kubeconfig`` or the one
    noted in that attempt's ``target.json``. The run folder is not modified (its audit record
    stays valid): the record copy and the deletions go to ``<run_dir>.rollback-<UTC time>/``.
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
    try:
        removed = rollback_record(kube, record, work_dir=work, timeout=timeout, progress=progress)
    finally:
        kube.close()
    (work / "rollback.json").write_text(json.dumps({"run": run_dir.name, "record": str(record),
                                                    "removed": [asdict(r) for r in removed]}, indent=2) + "\n")
    return removed, work


def kubeconfig_for(params, state_get: Callable[[str], Any]) -> tuple[Path, str | None]:
    """The kubeconfig (path, context) stage 02 works with (:func:`cni_runbook.kube.cluster_kubeconfig`)."""
    from ..provision import targets

    try:
        target = targets.resolve(params, state_get)
    except OperatorError as exc:
        raise InstallError(str(exc)) from None
    return target.kubeconfig_path, target.context


__all__ = [
    "InstallError",
    "InstallResult",
    "ManifestError",
    "Prepared",
    "Step",
    "Timeouts",
    "antctl_check_installation",
    "antrea_checks",
    "antrea_post_checks",
    "apiservices_available",
    "apply_stage",
    "cluster_facts",
    "compatibility_step",
    "health_table",
    "install",
    "kubeconfig_for",
    "obtain_source",
    "objects_for_cluster",
    "parse_antctl_output",
    "pod_health_rows",
    "prepare",
    "render",
    "rollback_record",
    "rollback_run",
    "run_records",
    "source_manifest",
    "verify_installation",
    "write_target",
]
