"""group_vars for a Kubespray v2.31 cluster whose CNI this project installs afterwards.

The managed keys come from :class:`ClusterVars`; operator extras are merged on top only where
they do not touch a managed key, unless that key is explicitly allowed (``allow_override``).
Everything is written to ``<inventory_dir>/group_vars/all/cni-runbook.yml`` so every host,
etcd-only hosts included, sees the same values.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

RUNBOOK_PLUGINS = ("none", "cni", "custom_cni")
GROUP_VARS_FILE = Path("group_vars") / "all" / "cni-runbook.yml"


#: the params option an operator sets for each managed key (None: the project fixes its value)
PARAMS_KEYS = {"kube_network_plugin": "kubespray.network_plugin", "kube_service_addresses": "kubespray.kube_service_addresses",
               "kube_pods_subnet": "kubespray.kube_pods_subnet", "kube_network_node_prefix": "kubespray.kube_network_node_prefix",
               "kube_proxy_mode": "kubespray.kube_proxy_mode", "kube_proxy_remove": "kubespray.kube_proxy_remove",
               "kubeconfig_localhost": None}


class ManagedKeyOverride(ValueError):
    """Operator extras tried to change a key this project manages."""

    def __init__(self, keys: list[str], managed: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        self.keys = keys
        detail = "; ".join(f"kubespray.extra_vars.{k}: {extras[k]!r} would override {managed[k]!r}, "
                           + (f"set {PARAMS_KEYS[k]} instead" if PARAMS_KEYS.get(k) else
                              "this project keeps it as it is (remove it from extra_vars)")
                           for k in keys)
        super().__init__(f"managed Kubespray key(s): {detail}")


@dataclass(frozen=True)
class ClusterVars:
    """The Kubespray variables this project manages (defaults = Kubespray v2.31 defaults,
    except the plugin, which is ``none``: the CNI is installed by a later stage)."""

    kube_network_plugin: str = "none"
    kube_service_addresses: str = "10.233.0.0/18"
    kube_pods_subnet: str = "10.233.64.0/18"
    kube_network_node_prefix: int = 24
    kube_proxy_mode: str = "ipvs"
    kube_proxy_remove: bool = False
    kubeconfig_localhost: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MANAGED_KEYS = tuple(f.name for f in fields(ClusterVars))


def as_cluster_vars(value: ClusterVars | Mapping[str, Any] | None) -> ClusterVars:
    if value is None:
        return ClusterVars()
    if isinstance(value, ClusterVars):
        return value
    unknown = sorted(set(value) - set(MANAGED_KEYS))
    if unknown:
        raise ValueError(
            f"unknown cluster variable(s) {', '.join(unknown)}: managed keys are {', '.join(MANAGED_KEYS)}; "
            f"anything else goes into the extras"
        )
    return ClusterVars(**dict(value))


def render_group_vars(
    cluster: ClusterVars | Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
    *,
    allow_override: Collection[str] | bool = (),
) -> dict[str, Any]:
    """Managed keys first, then the extras.

    ``kube_network_plugin`` must be one of none, cni, custom_cni (this project installs the
    CNI itself). An extra that sets a managed key to a different value raises
    :class:`ManagedKeyOverride` unless the key is in ``allow_override`` (or it is ``True``).
    """
    managed = as_cluster_vars(cluster).as_dict()
    if managed["kube_network_plugin"] not in RUNBOOK_PLUGINS:
        raise ValueError(
            f"kube_network_plugin {managed['kube_network_plugin']!r} is not supported here: "
            f"use one of {', '.join(RUNBOOK_PLUGINS)} (the CNI is installed by a later stage)"
        )
    extras = dict(extras or {})
    clashes = sorted(k for k in extras if k in managed and extras[k] != managed[k])
    if allow_override is not True:
        refused = [k for k in clashes if k not in set(allow_override or ())]
        if refused:
            raise ManagedKeyOverride(refused, managed, extras)
    return {**managed, **extras}


class Unsafe(str):
    """A string Ansible must not template (it holds Jinja syntax): written as ``!unsafe "..."``."""


class VarsDumper(yaml.SafeDumper):
    """SafeDumper for Ansible variables: :class:`Unsafe` strings get Ansible's ``!unsafe`` tag, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


VarsDumper.add_representer(Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value), style='"'))


def plain(value: Any) -> Any:
    """``value`` with :class:`Unsafe` strings as plain ``str`` (for JSON/YAML artifacts that are not group_vars)."""
    if isinstance(value, Unsafe):
        return str(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def group_vars_yaml(group_vars: Mapping[str, Any]) -> str:
    header = (
        "# Kubespray group_vars rendered by cni-runbook (managed keys first, operator extras after).\n"
    )
    return header + yaml.dump(dict(group_vars), Dumper=VarsDumper, sort_keys=False, default_flow_style=False)


def write_group_vars(group_vars: Mapping[str, Any], inventory_dir: Path | str) -> Path:
    """Write ``<inventory_dir>/group_vars/all/cni-runbook.yml``; returns the path."""
    path = Path(inventory_dir) / GROUP_VARS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(group_vars_yaml(group_vars))
    return path
