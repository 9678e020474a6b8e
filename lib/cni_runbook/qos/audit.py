"""Audit of the CNI's own pods: will the kubelet and the scheduler treat them as critical?

For each pod of the CNI (agents from a DaemonSet, controllers from a Deployment):

==================  ======================================================================
priorityClassName   agents ``system-node-critical``, controllers ``system-cluster-critical``
                    (or node-critical): evicted last, and the scheduler preempts for them
QoS class           not ``BestEffort`` (evicted first under memory pressure): every container
                    requests CPU and memory; a CPU *limit* can throttle the datapath
requests            listed per container
tolerations         agents tolerate every taint (``operator: Exists`` without a key), or at
                    least not-ready / unreachable / network-unavailable and the control plane's
                    NoSchedule, so the network comes up on every node, NotReady ones included
==================  ======================================================================

:func:`audit_pods` is pure (pod dicts in, a DataFrame out); :func:`cni_pods` reads the pods.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from ..cni.profiles import FACTS as PROFILE_FACTS
from ..kube import Kube

#: label selectors of each CNI profile's pods (from the profiles' facts)
PROFILE_SELECTORS = {name: facts.pod_selector for name, facts in PROFILE_FACTS.items() if facts.pod_selector}
#: namespace of each profile's agent in the vendor's manifest, where it differs from cni.namespace
PROFILE_NAMESPACES = {name: facts.agent_namespace for name, facts in PROFILE_FACTS.items() if facts.agent_namespace}
NODE_CRITICAL = "system-node-critical"
CLUSTER_CRITICAL = "system-cluster-critical"
#: taints a node agent must tolerate to start on a node that has no network yet
AGENT_TAINTS = (
    ("node.kubernetes.io/not-ready", "NoSchedule"),
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/network-unavailable", "NoSchedule"),
    ("node-role.kubernetes.io/control-plane", "NoSchedule"),
)


def cni_pods(kube: Kube, namespace: str, profile: str, selector: str | None = None) -> list[dict[str, Any]]:
    """The CNI's pods: by the profile's label selector, or (generic profile) every pod of a
    host-network DaemonSet in the CNI namespace plus the Deployments' pods next to them."""
    selector = selector or PROFILE_SELECTORS.get(profile)
    items = kube.core.list_namespaced_pod(namespace, label_selector=selector or "").items
    if not items and PROFILE_NAMESPACES.get(profile, namespace) != namespace:
        # the vendor's manifest puts the agent in its own namespace (flannel: kube-flannel)
        items = kube.core.list_namespaced_pod(PROFILE_NAMESPACES[profile], label_selector=selector or "").items
    pods = [kube.api.sanitize_for_serialization(p) for p in items]
    if selector:
        return pods
    return [p for p in pods if owner_kind(p) == "DaemonSet" and (p.get("spec") or {}).get("hostNetwork")]


def owner_kind(pod: Mapping[str, Any]) -> str:
    """DaemonSet, Deployment (through its ReplicaSet), StatefulSet, ... or 'Pod'."""
    owners = (pod.get("metadata") or {}).get("ownerReferences") or ()
    kind = next((o.get("kind") for o in owners if o.get("controller")), None) or (owners[0].get("kind") if owners else None)
    return "Deployment" if kind == "ReplicaSet" else (kind or "Pod")


def _tolerates(tolerations: Iterable[Mapping[str, Any]], key: str, effect: str) -> bool:
    for t in tolerations:
        op = t.get("operator", "Equal")
        if t.get("effect") not in (None, "", effect):
            continue
        if op == "Exists" and not t.get("key"):
            return True
        if t.get("key") == key and op in ("Exists", "Equal"):
            return True
    return False


def _requests(container: Mapping[str, Any]) -> dict[str, str]:
    return dict(((container.get("resources") or {}).get("requests") or {}))


def _limits(container: Mapping[str, Any]) -> dict[str, str]:
    return dict(((container.get("resources") or {}).get("limits") or {}))


def audit_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """One row: the facts and the recommendations (``status`` passed when there are none)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    kind = owner_kind(pod)
    agent = kind == "DaemonSet"
    priority = spec.get("priorityClassName") or ""
    qos_class = status.get("qosClass") or "?"
    containers = list(spec.get("containers") or ())
    tolerations = list(spec.get("tolerations") or ())
    advice: list[str] = []

    wanted = (NODE_CRITICAL,) if agent else (CLUSTER_CRITICAL, NODE_CRITICAL)
    if priority not in wanted:
        advice.append(f"set priorityClassName: {wanted[0]} (now {priority or 'none'}) so it is evicted last "
                      "and the scheduler preempts other pods for it")
    no_requests = [c["name"] for c in containers if not {"cpu", "memory"} <= set(_requests(c))]
    if qos_class == "BestEffort":
        advice.append("QoS class BestEffort: set cpu and memory requests on every container "
                      "(BestEffort pods are evicted first under node pressure)")
    elif no_requests:
        advice.append(f"containers without cpu+memory requests: {', '.join(no_requests)}")
    cpu_limited = [c["name"] for c in containers if "cpu" in _limits(c)]
    if cpu_limited:
        advice.append(f"CPU limit on {', '.join(cpu_limited)} can throttle the datapath under load; "
                      "prefer requests without a CPU limit")
    if agent:
        missing = [f"{k}:{e}" for k, e in AGENT_TAINTS if not _tolerates(tolerations, k, e)]
        if missing:
            advice.append("tolerate every taint (`- operator: Exists`) so the agent runs on every node; "
                          f"not tolerated: {', '.join(missing)}")
    if any(t.get("operator") == "Exists" and not t.get("key") for t in tolerations):
        toleration_text = "all taints"
    else:
        toleration_text = ", ".join(
            f"{t.get('key', '*')}{':' + t['effect'] if t.get('effect') else ''}" for t in tolerations) or "none"
    return {
        "pod": meta.get("name", "?"),
        "node": spec.get("nodeName", ""),
        "owner": kind,
        "priorityClassName": priority or "(none)",
        "qosClass": qos_class,
        "requests": "; ".join(f"{c['name']}: " + (", ".join(f"{k}={v}" for k, v in sorted(_requests(c).items())) or "none")
                              for c in containers),
        "limits": "; ".join(f"{c['name']}: " + ", ".join(f"{k}={v}" for k, v in sorted(_limits(c).items()))
                            for c in containers if _limits(c)) or "none",
        "tolerations": toleration_text,
        "status": "passed" if not advice else "warning",
        "recommendations": "\n".join(advice),
    }


def audit_pods(pods: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`audit_pod` for every pod, sorted by owner kind and name."""
    columns = ["pod", "node", "owner", "priorityClassName", "qosClass", "requests", "limits", "tolerations",
               "status", "recommendations"]
    rows = sorted((audit_pod(p) for p in pods), key=lambda r: (r["owner"], r["pod"]))
    return pd.DataFrame(rows, columns=columns)


def audit_check(frame: pd.DataFrame) -> dict[str, Any]:
    """A stage check: recommendations are advice, not failures; no CNI pod found is a failure."""
    if frame.empty:
        return {"name": "qos cni pod audit", "status": "failed", "message": "no CNI pods found to audit"}
    warned = int((frame["status"] == "warning").sum())
    message = f"{len(frame)} CNI pods audited, {warned} with recommendations"
    return {"name": "qos cni pod audit", "status": "passed", "message": message}
