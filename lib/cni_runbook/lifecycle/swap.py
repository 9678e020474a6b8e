"""Carry out a replacement plan (CNI A -> CNI B); the upgrade is :mod:`.apply`.

Steps (each timed and recorded, in the plan's order): before (``validate``), delete A's API
objects in the plan's deletion order and wait until they and A's pods are gone, clean every
node (``run_on_nodes`` with :func:`~.nodes.cleanup_script`), install B with the stage-02 engine
(rollout, nodes Ready, CoreDNS), restart every controller-owned pod that is not hostNetwork
(node by node: one node's pods, then wait until every such pod is Ready again; or all at once),
after (``validate``), then the leftovers of A still listed on each node (should be none).

On a failure after A's objects were deleted, with ``rollback_on_failure``: B's created objects
are removed, A's recorded objects re-applied (:func:`~.apply.restore_previous`) and the pods
restarted again, so the cluster is back on A.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .apply import PREVIOUS_NAME, LifecycleResult, _failed_tables, _timed, _timed_value, read_previous, restore_previous
from .errors import LifecycleError
from .nodes import cleanup_script, leftovers_found, listing_script, parse_listing

Progress = Callable[[str], None]
RunOnNodes = Callable[[str, str], Mapping[str, str]]  # (name, script) -> host -> stdout


def _say(_m: str) -> None:
    return None


def _list_pods(kube) -> list[dict]:
    return json.loads(kube.core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]


def restartable(pods: list[dict], *, before: str | None = None) -> tuple[list[dict], list[dict]]:
    """(pods to restart, bare pods left alone): not hostNetwork, not terminating, created before
    ``before`` (ISO time; None: any); only controller-owned ones are restarted."""
    restart, bare = [], []
    for pod in pods:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        if spec.get("hostNetwork") or meta.get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if before and (meta.get("creationTimestamp") or "") >= before:
            continue
        (restart if any(o.get("controller") for o in meta.get("ownerReferences") or []) else bare).append(pod)
    return restart, bare


def by_node(pods: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for pod in pods:
        out.setdefault((pod.get("spec") or {}).get("nodeName") or "(unscheduled)", []).append(pod)
    return dict(sorted(out.items()))


def _ready(pod: dict) -> bool:
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
    return (pod.get("status") or {}).get("phase") == "Running" and conds.get("Ready") == "True"


def _wait_pods_ready(kube, namespaces: set[str], timeout: float, say: Progress) -> str:
    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in _list_pods(kube) if p["metadata"]["namespace"] in namespaces
                and not (p.get("spec") or {}).get("hostNetwork") and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        waiting = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods if not _ready(p)]
        if not waiting:
            return f"{len(pods)} pod(s) Ready in {', '.join(sorted(namespaces))}"
        if time.monotonic() > deadline:
            raise LifecycleError(f"pods not Ready after {timeout:.0f} s: {', '.join(waiting[:10])}")
        say(f"waiting for {len(waiting)} pod(s) to be Ready again")
        time.sleep(2)


def restart_pods(kube, *, strategy: str, before: str | None, timeout: float, progress: Progress | None = None) -> str:
    """Delete every restartable pod (see :func:`restartable`) so its controller recreates it on the new CNI."""
    say = progress or _say
    restart, bare = restartable(_list_pods(kube), before=before)
    groups = by_node(restart) if strategy == "node-by-node" else {"all nodes": restart}
    for node, pods in groups.items():
        say(f"restarting {len(pods)} pod(s) on {node}")
        for p in pods:
            try:
                kube.core.delete_namespaced_pod(p["metadata"]["name"], p["metadata"]["namespace"])
            except Exception:  # noqa: BLE001 - already gone
                pass
        _wait_pods_ready(kube, {p["metadata"]["namespace"] for p in pods}, timeout, say)
    note = f"; {len(bare)} bare pod(s) without a controller NOT restarted: " + ", ".join(
        f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in bare[:10]) if bare else ""
    return f"restarted {len(restart)} pod(s), {strategy}{note}"


def delete_objects(kube, rows: list[dict[str, str]], *, timeout: float, progress: Progress | None = None) -> str:
    """Delete the objects (plan.remove rows) in order, then wait until all are gone."""
    say = progress or _say
    gone = []
    for row in rows:
        try:
            res = kube.resource(row["api_version"], row["kind"])
            kube.dynamic.delete(res, name=row["name"], namespace=row["namespace"] or None,
                                propagation_policy="Foreground" if row["kind"] == "Namespace" else "Background")
            say(f"deleted {row['kind']} {row['namespace'] + '/' if row['namespace'] else ''}{row['name']}")
        except Exception:  # noqa: BLE001 - already gone or kind no longer served (its CRD went first)
            pass
        gone.append(row)
    deadline = time.monotonic() + timeout
    for row in gone:
        while True:
            try:
                present = kube.get(row["api_version"], row["kind"], row["name"], row["namespace"] or None) is not None
            except Exception:  # noqa: BLE001 - the kind went with its CRD
                present = False
            if not present:
                break
            if time.monotonic() > deadline:
                raise LifecycleError(f"{row['kind']} {row['name']} still exists after {timeout:.0f} s")
            time.sleep(1)
    return f"deleted {len(gone)} object(s)"


def _wait_no_pods(kube, labels: Mapping[str, str], timeout: float) -> str:
    if not labels:
        return "no pod labels known: not waited"
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    deadline = time.monotonic() + timeout
    while True:
        pods = json.loads(kube.core.list_pod_for_all_namespaces(label_selector=selector, _preload_content=False).data)["items"]
        if not pods:
            return f"no pod with {selector} left"
        if time.monotonic() > deadline:
            raise LifecycleError(f"{len(pods)} pod(s) with {selector} still exist after {timeout:.0f} s")
        time.sleep(1)


def pod_cidrs(kube) -> dict[str, str]:
    nodes = json.loads(kube.core.list_node(_preload_content=False).data)["items"]
    return {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") or "" for n in nodes}


def list_leftovers(kube, facts, run_on_nodes: RunOnNodes, *, new_cni_routes: bool = True):
    """One row per leftover of ``facts``' CNI still on a node: node, what, name (listed after the new
    CNI set up its routes: :func:`~.nodes.leftovers_found`'s ``new_cni_routes``)."""
    import pandas as pd

    cidrs = pod_cidrs(kube)
    out = run_on_nodes("list CNI leftovers", listing_script(facts.leftovers))
    rows = []
    for host, text in sorted(out.items()):
        for row in leftovers_found(parse_listing(text), facts.leftovers, pod_cidrs=cidrs.values(), own_pod_cidr=cidrs.get(host),
                                   new_cni_routes=new_cni_routes):
            rows.append({"node": host, **row})
    return pd.DataFrame(rows, columns=["node", "what", "name"])


def apply_replacement(kube, plan, *, installed, target_objects, record_dir: Path, run_on_nodes: RunOnNodes,
                      timeouts: Any, namespace: str = "kube-system", rollout_timeout_s: float = 300, rollback_on_failure: bool = True,
                      validate: Callable[[], dict[str, Any]] | None = None, disruption: Callable[[], Any] | None = None,
                      progress: Progress | None = None) -> LifecycleResult:
    """The replacement (module docstring). ``installed``: A as read from the cluster (its objects
    are recorded for the rollback); ``target_objects``: B's objects ordered for this cluster."""
    import contextlib

    from ..audit import now
    from ..cni.engine import install

    say = progress or _say
    if not plan.ok:
        raise LifecycleError("the replacement plan was refused: " + "; ".join(plan.refusals))
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    result = LifecycleResult("replace")
    from .apply import record_previous

    result.previous = record_previous(installed, record_dir / PREVIOUS_NAME)
    if validate is not None:
        result.before = _timed_value(result, "before: validation", validate)
    doing, deleted, installed_b = "starting", False, None
    window = disruption() if disruption is not None else contextlib.nullcontext()
    try:
        with window as probe:
            result.disruption = probe
            doing = f"deleting {plan.current.family}'s objects"
            _timed(result, f"delete {len(plan.remove)} object(s) of {plan.current.family}",
                   lambda: delete_objects(kube, plan.remove, timeout=rollout_timeout_s, progress=say))
            deleted = True
            _timed(result, f"{plan.current.family} pods gone", lambda: _wait_no_pods(kube, plan.current.labels, rollout_timeout_s))
            cidrs = pod_cidrs(kube)
            doing = "cleaning the nodes"
            script = cleanup_script(plan.current.leftovers, pod_cidrs=[c for c in cidrs.values() if c])
            _timed(result, "clean the nodes (SSH)", lambda: "; ".join(
                f"{h}: {t.strip().splitlines()[-1] if t.strip() else 'nothing'}" for h, t in run_on_nodes("remove CNI leftovers", script).items()))
            started = now()
            doing = f"installing {plan.target.family}"
            if probe is not None:
                probe.mark(f"install {plan.target.family}")
            installed_b = install(kube, target_objects, record_dir=record_dir / "target-install", timeouts=timeouts,
                                  namespace=namespace, rollback_on_failure=False, progress=say)
            result.steps.append(_step_of(installed_b))
            doing = "restarting the pods"
            _timed(result, f"restart pods ({plan.restart})",
                   lambda: restart_pods(kube, strategy=plan.restart, before=started, timeout=rollout_timeout_s, progress=say))
        if validate is not None:
            doing = "after: validation"
            result.after = _timed_value(result, "after: validation", validate)
            failed = _failed_tables(result.after)
            if failed:
                raise LifecycleError(f"after-checks failed: {failed}")
        result.leftovers = _timed_value(result, f"leftovers of {plan.current.family} on the nodes",
                                        lambda: {"leftovers": list_leftovers(kube, plan.current, run_on_nodes)})["leftovers"]
        if len(result.leftovers):
            result.steps[-1].status = "failed"
            result.steps[-1].detail = f"{len(result.leftovers)} leftover(s) of {plan.current.family} on the nodes"
    except Exception as exc:  # noqa: BLE001 - any failure: back to A when A was removed
        from ..cni.result import InstallError

        if isinstance(exc, InstallError) and exc.result is not None:
            result.steps.append(_step_of(exc.result, failed=True))
        result.error = f"replacement failed while {doing}: {exc}"
        if rollback_on_failure and deleted:
            try:
                from ..kube.apply import rollback

                b_record = record_dir / "target-install" / "applied.jsonl"
                if b_record.is_file():  # what B's install created goes first
                    rollback(kube, b_record, timeout=rollout_timeout_s, progress=say)
                result.rollback_detail = _timed(result, f"rollback: {plan.current.family} restored", lambda: restore_previous(
                    kube, read_previous(result.previous), timeout=rollout_timeout_s, progress=say))
                _timed(result, "rollback: restart pods", lambda: restart_pods(
                    kube, strategy="all-at-once", before=now(), timeout=rollout_timeout_s, progress=say))
                result.rolled_back = True
            except Exception as failed:  # noqa: BLE001 - report both
                result.error += f"\nROLLBACK FAILED: {failed}; the previous objects are recorded in {result.previous}"
    return result


def _step_of(installed, failed: bool = False):
    from .apply import Step

    return Step(f"install the new CNI ({len(installed.applied)} objects)", "failed" if failed or not installed.ok else "passed",
                installed.summary(), sum(s.time_s for s in installed.steps))


__all__ = ["apply_replacement", "by_node", "delete_objects", "list_leftovers", "pod_cidrs", "restart_pods", "restartable"]
