"""Waits and health of an installed CNI: rollouts, APIServices, nodes Ready, CoreDNS, pod health.

:func:`verify_installation` runs the same waits and health for a CNI applied by the engine or by
someone else (Kubespray's custom_cni route). Every wait has a timeout.
"""

from __future__ import annotations

import json
import re

from collections.abc import Sequence
from typing import Any

from .manifests import ManifestObject
from .result import InstallResult, Progress, Step, Timeouts, _say, timed_step

COREDNS_SELECTOR = "k8s-app=kube-dns"
WORKLOAD_KINDS = ("DaemonSet", "Deployment")


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
                timed_step(result, f"rollout {o.ref.kind} {o.ref.namespace}/{o.ref.name}",
                       lambda o=o: _rollout(kube, o, timeouts.rollout_s, say))
        names = [o.ref.name for o in objects if o.ref.kind == "APIService"]
        if names:
            timed_step(result, f"APIServices Available ({len(names)})",
                   lambda: apiservices_available(kube, names, timeout=timeouts.apiservice_s, progress=say))
    timed_step(result, "nodes Ready", lambda: nodes_ready(kube, expected=expected_nodes, timeout=timeouts.nodes_s, progress=say))
    if kube.get("apps/v1", "Deployment", "coredns", "kube-system") is None:
        result.steps.append(Step("CoreDNS Running", "skipped", "no Deployment kube-system/coredns on this cluster"))
    else:
        timed_step(result, "CoreDNS Running", lambda: pods_running(kube, "kube-system", COREDNS_SELECTOR,
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
