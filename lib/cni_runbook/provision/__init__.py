"""Provisioners and what stages 00/01 work on: hosts, the Kubespray job, the lab, the no-CNI check.

* :func:`stage_hosts` - which hosts a stage works on (``cluster.nodes`` or the lab instance);
* :class:`KubesprayJob` (:mod:`.kubespray_job`) - render, validate and run Kubespray, for stage
  01 and the ``kubespray_custom_cni`` route of stage 02 alike;
* :mod:`.lab` - the lab provisioner (the one module outside ``cni_runbook.lab`` that imports it);
* :func:`verify_cluster` / :func:`evaluate` - the no-CNI verification (API, nodes registered,
  NotReady for the missing CNI, CoreDNS Pending) and :func:`nodes_frame`, the nodes table.

The stages themselves are in :mod:`cni_runbook.stages` (``preflight``, ``cluster``).
"""

from cni_runbook.provision.hosts import (
    HostsError,
    StageHosts,
    ansible_envvars,
    hosts_from_params,
    private_dir,
    stage_hosts,
    target_hosts,
)
from cni_runbook.provision.kubespray_job import KubesprayJob, cluster_vars, kubespray_extras, validate_kubespray
from cni_runbook.provision.verify import Verification, evaluate, nodes_frame, settled, verify_cluster

__all__ = [
    "HostsError",
    "KubesprayJob",
    "StageHosts",
    "Verification",
    "ansible_envvars",
    "cluster_vars",
    "evaluate",
    "hosts_from_params",
    "kubespray_extras",
    "nodes_frame",
    "private_dir",
    "settled",
    "stage_hosts",
    "target_hosts",
    "validate_kubespray",
    "verify_cluster",
]
