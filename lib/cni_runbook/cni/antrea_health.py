"""Antrea post-install checks: antrea-agent on every node, antrea-controller Ready, its APIServices
Available, and ``antctl check installation`` when antctl is on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

from collections.abc import Sequence
from pathlib import Path

from .manifests import ManifestObject
from .result import Step

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
