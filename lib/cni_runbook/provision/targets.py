"""Which cluster the stages after 01 work on: :func:`resolve` returns the :class:`Target`.

The one stage 01 handed over in the run state when there is one (``target``, or the older
``kubeconfig``/``kube_context`` keys); else by provisioner: ``existing`` -> ``provisioner.kubeconfig``,
``lab`` -> the lab provisioner's Target (a stage run on its own against a lab that is up);
``kubespray`` needs stage 01 to have run in this run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cni_runbook.errors import OperatorError
from cni_runbook.params import secrets
from cni_runbook.target import STATE_KEY, Target


def _param_hosts(params: Any) -> tuple:
    from .hosts import hosts_from_params, target_hosts

    try:
        return target_hosts(hosts_from_params(params))
    except ValueError:  # an env reference as key: the hosts still have names and addresses
        return ()


class NoTarget(OperatorError):
    """No cluster to work on: stage 01 did not run in this run and the params name none."""


def resolve(params: Any, state_get: Callable[[str], Any], require_up: bool = True) -> Target:
    """The Target of a stage after 01 (see module docstring); ``require_up=False`` in plan mode."""
    handed = Target.from_dict(state_get(STATE_KEY))
    if handed is not None:
        return handed
    kind = params.provisioner.kind
    if kind == "lab":
        from . import lab

        return lab.target(require_up=require_up)
    kubeconfig = state_get("kubeconfig")
    if kubeconfig:
        return Target(kubeconfig=kubeconfig, context=state_get("kube_context") or params.provisioner.context,
                      provisioner=kind)
    if kind == "existing" and params.provisioner.kubeconfig:
        path = secrets.reference_path(params.provisioner.kubeconfig) or params.provisioner.kubeconfig
        return Target(kubeconfig=str(path), context=params.provisioner.context, provisioner=kind,
                      hosts=_param_hosts(params))
    if not require_up:  # plan mode: stage 01 planned but provisioned nothing; the params' nodes stand in
        return Target(provisioner=kind, hosts=_param_hosts(params))
    raise NoTarget(f"provisioner {kind!r}: stage 01 handed over no cluster in the run state "
                   "(run 01_cluster_no_cni first, in the same run)")
