"""Stage 01's verification: the cluster is up and exactly in the "no CNI yet" state.

What Kubespray leaves with ``kube_network_plugin: none`` (and the lab reproduces):

* the API server answers;
* every inventory node is registered (and got a podCIDR from kube-controller-manager);
* every node is NotReady *because* no CNI is initialised ("container runtime network not ready:
  NetworkReady=false reason:NetworkPluginNotReady ... cni plugin not initialized");
* CoreDNS (``k8s-app=kube-dns`` in kube-system) exists and is Pending.

A Ready node or a Running CoreDNS means a CNI is already working on the cluster: stage 02 would
install a second one on top, so that fails here with a message saying so.

:func:`evaluate` works on plain Node/Pod dicts (as the API returns them) so it is tested on
recorded objects; :func:`verify_cluster` fetches them, waiting (bounded) for a cluster that is
still settling: nodes registering, kubelets reporting, CoreDNS being created.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cni_runbook.checks import Check

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
CNI_MARKERS = ("cni plugin not initialized", "NetworkPluginNotReady", "network plugin is not ready")
COREDNS_SELECTOR = "k8s-app=kube-dns"
CHECKS = ("api_reachable", "nodes_registered", "pod_cidrs", "nodes_not_ready_no_cni", "coredns_pending")
ROLE_PREFIX = "node-role.kubernetes.io/"

Say = Callable[[str], None]



@dataclass
class Verification:
    """The outcome: one check per expectation, the nodes table, the server seen."""

    checks: list[Check]
    nodes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=NODE_COLUMNS))
    server: str | None = None
    version: str | None = None
    waited_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.status == PASSED for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAILED]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"name": c.name, "status": c.status.value, "message": c.message} for c in self.checks],
                            columns=["name", "status", "message"])

    def summary(self) -> str:
        if self.ok:
            return (f"cluster without CNI verified: {len(self.nodes)} nodes NotReady (cni plugin not initialized), "
                    f"CoreDNS Pending" + (f", Kubernetes {self.version}" if self.version else ""))
        return "verification failed: " + "; ".join(f"{c.name}: {c.message}" for c in self.failures)


# -- reading Node and Pod objects -----------------------------------------------------------
def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def node_name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", "?"))


def node_roles(node: Mapping[str, Any]) -> list[str]:
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(k[len(ROLE_PREFIX):] for k in labels if k.startswith(ROLE_PREFIX) and k != ROLE_PREFIX)
    return roles or ["<none>"]


def no_cni_reason(cond: Mapping[str, Any] | None) -> bool:
    text = f"{(cond or {}).get('reason', '')} {(cond or {}).get('message', '')}"
    return any(marker.lower() in text.lower() for marker in CNI_MARKERS)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


NODE_COLUMNS = ["name", "roles", "kubelet", "podCIDR", "internal_ip", "ready", "conditions", "ready_message"]


def nodes_frame(nodes: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """name, roles, kubelet version, podCIDR, InternalIP, Ready status, every condition, Ready message."""
    rows = []
    for node in sorted(nodes, key=node_name):
        status = node.get("status") or {}
        spec = node.get("spec") or {}
        ready = condition(node, "Ready") or {}
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
        conditions = ", ".join(f"{c.get('type')}={c.get('status')}" for c in status.get("conditions") or [])
        rows.append({
            "name": node_name(node),
            "roles": ",".join(node_roles(node)),
            "kubelet": (status.get("nodeInfo") or {}).get("kubeletVersion", ""),
            "podCIDR": ",".join(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])) or "<none>",
            "internal_ip": addresses.get("InternalIP", ""),
            "ready": ready.get("status", "Unknown"),
            "conditions": conditions or "<none reported>",
            "ready_message": _short(f"{ready.get('reason', '')}: {ready.get('message', '')}".strip(": ")),
        })
    return pd.DataFrame(rows, columns=NODE_COLUMNS)


# -- the checks -------------------------------------------------------------------------------
def evaluate(
    nodes: Sequence[Mapping[str, Any]],
    coredns_pods: Sequence[Mapping[str, Any]],
    expected_nodes: Sequence[str],
) -> list[Check]:
    """Checks on recorded objects (everything but ``api_reachable``), in :data:`CHECKS` order."""
    checks: list[Check] = []
    by_name = {node_name(n): n for n in nodes}
    expected = list(dict.fromkeys(expected_nodes))

    missing = [n for n in expected if n not in by_name]
    extra = sorted(set(by_name) - set(expected))
    if missing:
        checks.append(Check("nodes_registered", FAILED,
                            f"not registered: {', '.join(missing)} (registered: {', '.join(sorted(by_name)) or 'none'})"))
    else:
        note = f"; also registered, not in the inventory: {', '.join(extra)}" if extra else ""
        checks.append(Check("nodes_registered", PASSED, f"{len(expected)}/{len(expected)} inventory nodes registered{note}"))

    present = [by_name[n] for n in expected if n in by_name]
    no_cidr = [node_name(n) for n in present if not (n.get("spec") or {}).get("podCIDR")]
    if not present:
        checks.append(Check("pod_cidrs", SKIPPED, "no inventory node registered"))
    elif no_cidr:
        checks.append(Check("pod_cidrs", FAILED,
                            f"no podCIDR on {', '.join(no_cidr)}: kube-controller-manager allocates them from "
                            f"kube_pods_subnet (allocate-node-cidrs); CNIs using host-local IPAM need one"))
    else:
        cidrs = ", ".join(f"{node_name(n)} {(n.get('spec') or {})['podCIDR']}" for n in present)
        checks.append(Check("pod_cidrs", PASSED, cidrs))

    problems: list[str] = []
    for node in present:
        name = node_name(node)
        ready = condition(node, "Ready")
        if ready is None:
            problems.append(f"{name} reports no Ready condition yet (kubelet not posting status)")
        elif ready.get("status") == "True":
            problems.append(f"{name} is Ready: a CNI is already working on this cluster "
                            f"(stage 02 expects a cluster without one; remove it or start from a fresh cluster)")
        elif not no_cni_reason(ready):
            problems.append(f"{name} is NotReady for another reason than the missing CNI: "
                            f"{_short(ready.get('reason', '') + ': ' + ready.get('message', ''))}")
    if not present:
        checks.append(Check("nodes_not_ready_no_cni", SKIPPED, "no inventory node registered"))
    elif problems:
        checks.append(Check("nodes_not_ready_no_cni", FAILED, "; ".join(problems)))
    else:
        checks.append(Check("nodes_not_ready_no_cni", PASSED,
                            f"{len(present)} nodes NotReady: container runtime network not ready "
                            f"(cni plugin not initialized)"))

    if not coredns_pods:
        checks.append(Check("coredns_pending", FAILED,
                            f"no CoreDNS pod ({COREDNS_SELECTOR}) in kube-system: Kubespray deploys CoreDNS with "
                            f"dns_mode coredns; a cluster without it cannot pass stage 03's DNS checks"))
    else:
        not_pending = []
        for pod in coredns_pods:
            phase = (pod.get("status") or {}).get("phase", "Unknown")
            if phase != "Pending":
                where = (pod.get("spec") or {}).get("nodeName")
                not_pending.append(f"{(pod.get('metadata') or {}).get('name')} is {phase}"
                                   + (f" on {where}" if where else ""))
        if not_pending:
            checks.append(Check("coredns_pending", FAILED,
                                "; ".join(not_pending) + ": CoreDNS only leaves Pending once a CNI gives it a "
                                "network, so a CNI is already installed"))
        else:
            why = {_short((condition(p, "PodScheduled") or {}).get("reason", "") or "Pending", 40) for p in coredns_pods}
            checks.append(Check("coredns_pending", PASSED,
                                f"{len(coredns_pods)} CoreDNS pod(s) Pending ({', '.join(sorted(why))})"))
    return checks


def settled(nodes: Sequence[Mapping[str, Any]], coredns_pods: Sequence[Mapping[str, Any]],
            expected_nodes: Sequence[str]) -> tuple[bool, str]:
    """Whether the cluster has finished coming up enough to be judged, and what is still missing."""
    by_name = {node_name(n): n for n in nodes}
    waiting = [f"{n} to register" for n in expected_nodes if n not in by_name]
    waiting += [f"{n} to report Ready status" for n in expected_nodes if n in by_name and condition(by_name[n], "Ready") is None]
    waiting += [f"a podCIDR on {n}" for n in expected_nodes if n in by_name and not (by_name[n].get("spec") or {}).get("podCIDR")]
    if not coredns_pods:
        waiting.append("CoreDNS pods")
    return not waiting, ", ".join(waiting)


# -- against a cluster --------------------------------------------------------------------------
def fetch(kube: Any, request_timeout: float = 10) -> tuple[list[dict], list[dict]]:
    """(nodes, CoreDNS pods) as plain dicts."""
    raw = kube.core.list_node(_preload_content=False, _request_timeout=request_timeout)
    nodes = json.loads(raw.data).get("items", [])
    raw = kube.core.list_namespaced_pod("kube-system", label_selector=COREDNS_SELECTOR, _preload_content=False,
                                        _request_timeout=request_timeout)
    return nodes, json.loads(raw.data).get("items", [])


def verify_cluster(
    kubeconfig: Path | str,
    expected_nodes: Sequence[str],
    *,
    context: str | None = None,
    api_timeout: float = 60,
    settle_timeout: float = 120,
    poll_s: float = 2.0,
    say: Say | None = None,
) -> Verification:
    """Connect with ``kubeconfig`` and check the no-CNI state.

    Waits up to ``api_timeout`` seconds for the API server to answer, then up to
    ``settle_timeout`` seconds for the nodes to register and report and CoreDNS to exist;
    the checks are then evaluated once on what is there (a node that is Ready does not get
    better by waiting). The kubeconfig is read by the Kubernetes client only; nothing here
    prints its contents.
    """
    from cni_runbook.kube import Kube, KubeError
    from cni_runbook.kube.client import api_error_message

    say = say or (lambda _m: None)
    skipped = [Check(name, SKIPPED, "the API server did not answer") for name in CHECKS[1:]]
    started = time.monotonic()
    try:
        kube = Kube.from_kubeconfig(kubeconfig, context)
    except KubeError as exc:
        return Verification([Check("api_reachable", FAILED, str(exc)), *skipped])
    try:
        try:
            server = kube.server
        except Exception as exc:  # a kubeconfig the client cannot load: say why, never its content
            return Verification([Check("api_reachable", FAILED, f"cannot load the kubeconfig {kubeconfig}: "
                                       f"{type(exc).__name__}: {_short(str(exc), 200)}"), *skipped])
        deadline = started + api_timeout
        version, last_error = None, ""
        while version is None:
            try:
                version = _version(kube)
            except Exception as exc:  # connection refused, TLS, 5xx while starting...
                last_error = _short(api_error_message(exc), 300)
                if time.monotonic() >= deadline:
                    return Verification([Check("api_reachable", FAILED, f"{server} did not answer within "
                                               f"{api_timeout:.0f}s: {last_error}"), *skipped], server=server)
                time.sleep(poll_s)
        api = Check("api_reachable", PASSED, f"{server} answers: Kubernetes {version}")
        say(f"API server {server} answers: Kubernetes {version}")

        deadline = time.monotonic() + settle_timeout
        last_state = None
        while True:
            nodes, pods = fetch(kube)
            done, state = settled(nodes, pods, expected_nodes)
            if done or time.monotonic() >= deadline:
                break
            if state != last_state:
                say(f"waiting for {state}")
                last_state = state
            time.sleep(poll_s)
        checks = [api, *evaluate(nodes, pods, expected_nodes)]
        return Verification(checks, nodes_frame(nodes), server, version, round(time.monotonic() - started, 1))
    finally:
        kube.close()


def _version(kube: Any) -> str:
    from kubernetes import client

    return client.VersionApi(kube.api).get_code(_request_timeout=10).git_version
