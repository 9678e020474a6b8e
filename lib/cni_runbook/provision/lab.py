"""The lab provisioner: the only module outside ``cni_runbook.lab`` that imports it.

The embedded lab is one provisioner among others. What the stages need of it comes from here:
its hosts (for stages 00/01), bringing its hosts or its cluster up, and the :class:`Target` it
produces (admin kubeconfig, its own image builds for probes and iperf3). Everything else in the
product takes those plain values (a unit test fails if another module imports the lab).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cni_runbook.errors import OperatorError
from cni_runbook.target import Target

Say = Callable[[str], None]

#: the lab's own image builds stand in for these roles (validation/policy/qos image params)
LAB_IMAGES = {"probe": "agnhost", "perf": "iperf3", "iperf3": "iperf3"}


def config(cfg: Any = None) -> Any:
    """The lab instance (``CNI_RUNBOOK_LAB_INDEX``), or ``cfg`` when given."""
    from cni_runbook.lab.config import LabConfig

    return cfg or LabConfig()


def inventory(cfg: Any) -> list[Any]:
    from cni_runbook.lab.inventory import lab_inventory

    return lab_inventory(cfg)


def hosts_up(cfg: Any, mode: str, say: Say) -> str:
    """Bare lab hosts for the preflight; what the lab was: down, hosts, rebuilt or cluster (reused).

    A lab whose cluster already runs (an earlier run, or `lab up`, left it for exploring) is
    rebuilt from bare hosts (``provisioner.lab_running: rebuild``, the default: the runbook
    starts from a cluster without a CNI every time) or kept (``reuse``: its own components then
    hold the Kubernetes ports, which the port checks recognise as this cluster's).
    """
    from cni_runbook.lab import cluster

    phase = cluster.phase(cfg)
    if phase == "cluster" and mode == "rebuild":
        say(f"lab instance {cfg.index} already runs Kubernetes (left by an earlier run): rebuilding it from "
            "bare hosts (provisioner.lab_running: rebuild; `reuse` keeps it)")
        say(cluster.down(cfg, progress=say))
        phase = "rebuilt"
    elif phase == "cluster":
        say(f"lab instance {cfg.index} already runs Kubernetes: reusing it (provisioner.lab_running: reuse); "
            "ports held by its own components are reported as this cluster's")
        return phase
    if phase in ("down", "rebuilt"):
        say(f"lab instance {cfg.index}: bringing up its bare hosts")
        say(cluster.up(cfg, hosts_only=True, progress=say))
    return phase


def cluster_up(cfg: Any, say: Say, timeout: int = 180, cni_profile: str | None = None,
               also: tuple[str, ...] = ()) -> Path:
    """Bring the lab cluster (no CNI) up, prepared for the CNI of ``cni_profile`` (flannel: its
    images and the reference CNI plugins on the nodes) and of every profile of ``also`` (stage
    05's target); a no-op when it is up. Its admin kubeconfig path."""
    from cni_runbook.lab import cluster
    from cni_runbook.lab.sysutil import LabError

    first = cluster.lab_cni(cni_profile or "lab")
    try:
        say(cluster.up(cfg, progress=say, timeout=timeout, cni=first))
        for cni in dict.fromkeys(cluster.lab_cni(p) for p in also):
            if cni != first:
                cluster.prepare_cni(cfg, cni, progress=say)
    except (LabError, TimeoutError, OSError) as exc:
        raise OperatorError(f"lab instance {cfg.index} did not come up: {exc}") from exc
    return Path(cfg.admin_kubeconfig)


def images() -> dict[str, str]:
    from cni_runbook.lab.images import image_ref

    return {role: image_ref(name) for role, name in LAB_IMAGES.items()}


def target(cfg: Any = None, require_up: bool = True) -> Target:
    """The lab as a Target: its admin kubeconfig, its hosts, its registry and image builds."""
    from cni_runbook.lab.images import LAB_REGISTRY

    cfg = config(cfg)
    path = Path(cfg.admin_kubeconfig)
    if require_up and not path.is_file():
        raise OperatorError(f"{path}: the lab is not up (no admin kubeconfig); run `cni-runbook lab up` first")
    from .hosts import target_hosts

    return Target(kubeconfig=str(path), provisioner="lab", hosts=target_hosts(inventory(cfg)), image_registry=LAB_REGISTRY,
                  images=images())
