"""Stages 00 and 01: preflight the inventory hosts, then a cluster without a CNI, verified.

* :class:`PreflightStage` - stage 00 (fact gathering over SSH with ansible-runner, node x check
  matrix, heatmap, waivers);
* :class:`ClusterStage` - stage 01 with provisioner ``lab``, ``kubespray`` or ``existing``;
* :func:`verify_cluster` / :func:`evaluate` - the no-CNI verification (API, nodes registered,
  NotReady for the missing CNI, CoreDNS Pending) and :func:`nodes_frame`, the nodes table;
* :func:`stage_hosts` - which hosts a stage works on (``cluster.nodes`` or the lab instance).
"""

from cni_runbook.provision.cluster_stage import ClusterStage, cluster_vars, kubespray_extras, validate_kubespray
from cni_runbook.provision.hosts import (
    HostsError,
    StageHosts,
    ansible_envvars,
    hosts_from_params,
    private_dir,
    stage_hosts,
)
from cni_runbook.provision.preflight_stage import (
    PreflightPlan,
    PreflightSetupError,
    PreflightStage,
    applicable_checks,
    plan_preflight,
    preflight_profile,
)
from cni_runbook.provision.verify import Check, Verification, evaluate, nodes_frame, settled, verify_cluster

__all__ = [
    "Check",
    "ClusterStage",
    "HostsError",
    "PreflightPlan",
    "PreflightSetupError",
    "PreflightStage",
    "StageHosts",
    "Verification",
    "ansible_envvars",
    "applicable_checks",
    "cluster_vars",
    "evaluate",
    "hosts_from_params",
    "kubespray_extras",
    "nodes_frame",
    "plan_preflight",
    "preflight_profile",
    "private_dir",
    "settled",
    "stage_hosts",
    "validate_kubespray",
    "verify_cluster",
]
