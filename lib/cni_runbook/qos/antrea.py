"""Antrea Egress bandwidth: the Egress CR with ``spec.bandwidth`` and its feature gates.

Antrea shapes the traffic of an Egress (all Pods it applies to, SNATed to its Egress IP) with
``spec.bandwidth: {rate, burst}`` (crd.antrea.io/v1beta1). The agent only honours it with the
``Egress`` feature gate (beta, on by default) *and* ``EgressTrafficShaping`` (alpha, off by
default) enabled in antrea-agent.conf. Here the Egress is rendered (plan only: the lab cannot
run Antrea's datapath) and the gates are checked in the effective configuration: the
operator's ``cni.config`` overrides over the manifest's antrea-agent.conf (when one is given)
over Antrea's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..cni.antrea import config_feature_gates, file_settings

#: Antrea v2.7.0 defaults of the gates egress shaping needs
GATE_DEFAULTS = {"Egress": True, "EgressTrafficShaping": False}
REQUIRED_GATES = ("Egress", "EgressTrafficShaping")


def egress_object(
    name: str,
    rate: str,
    burst: str | None = None,
    *,
    egress_ip: str | None = None,
    external_ip_pool: str | None = None,
    namespace_selector: Mapping[str, Any] | None = None,
    pod_selector: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An Egress with bandwidth shaping; ``appliedTo`` defaults to the QoS namespace's pods."""
    spec: dict[str, Any] = {"appliedTo": {}}
    if namespace_selector is not None:
        spec["appliedTo"]["namespaceSelector"] = dict(namespace_selector)
    if pod_selector is not None:
        spec["appliedTo"]["podSelector"] = dict(pod_selector)
    if egress_ip:
        spec["egressIP"] = str(egress_ip)
    if external_ip_pool:
        spec["externalIPPool"] = external_ip_pool
    spec["bandwidth"] = {"rate": rate, "burst": burst or rate}
    return {"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "cni-runbook"}}, "spec": spec}


def effective_gates(cni_config: Mapping[str, Any], agent_conf: str | None = None) -> dict[str, tuple[bool, str]]:
    """Each required gate's effective value and where it comes from."""
    flat = file_settings(cni_config or {})
    manifest = config_feature_gates(agent_conf) if agent_conf else {}
    out = {}
    for gate in REQUIRED_GATES:
        key = f"featureGates.{gate}"
        if key in flat:
            out[gate] = (bool(flat[key]), "cni.config")
        elif gate in manifest and agent_conf and _set_explicitly(agent_conf, gate):
            out[gate] = (manifest[gate], "manifest antrea-agent.conf")
        else:
            out[gate] = (GATE_DEFAULTS[gate], "Antrea default")
    return out


def _set_explicitly(conf: str, gate: str) -> bool:
    return any(line.strip().startswith(f"{gate}:") for line in conf.splitlines())


def egress_plan(qos_params: Any, cni_params: Any, agent_conf: str | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """The Egress CR for ``qos.antrea_egress`` (rate defaults to ``qos.bandwidth.egress``) and a
    table of checks: the gates, and that the Egress has an IP source."""
    eg = qos_params.antrea_egress
    rate = eg.rate or qos_params.bandwidth.egress or "100M"
    obj = egress_object(
        "cni-runbook-egress-shaping", rate, eg.burst,
        egress_ip=str(eg.egress_ip) if eg.egress_ip else None, external_ip_pool=eg.external_ip_pool,
        namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": qos_params.namespace}},
    )
    rows = []
    for gate, (value, source) in effective_gates(cni_params.config, agent_conf).items():
        rows.append({"check": f"featureGates.{gate}", "value": value, "source": source,
                     "status": "passed" if value else "failed",
                     "fix": "" if value else f"set cni.config.featureGates.{gate}: true (antrea-agent.conf)"})
    has_ip = bool(eg.egress_ip or eg.external_ip_pool)
    rows.append({"check": "Egress IP source", "value": eg.egress_ip or eg.external_ip_pool or "(none)",
                 "source": "qos.antrea_egress", "status": "passed" if has_ip else "failed",
                 "fix": "" if has_ip else "set qos.antrea_egress.egress_ip or external_ip_pool (the CRD needs one)"})
    return obj, pd.DataFrame(rows, columns=["check", "value", "source", "status", "fix"])
