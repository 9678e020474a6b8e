"""Render a Kubespray YAML inventory from a plain list of hosts.

Groups: ``kube_control_plane``, ``kube_node``, ``etcd``; ``k8s_cluster`` is derived with those
node groups as children, as in Kubespray's sample inventory. Host vars: ``ansible_host``, ``ip``,
``access_ip``, ``ansible_user``, ``ansible_port`` and ``ansible_ssh_private_key_file`` - a key
PATH only; key contents never enter an inventory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CONTROL_PLANE, NODE, ETCD, CLUSTER = "kube_control_plane", "kube_node", "etcd", "k8s_cluster"
GROUPS = (CONTROL_PLANE, NODE, ETCD)
ROLE_ALIASES = {
    "kube_control_plane": CONTROL_PLANE,
    "control_plane": CONTROL_PLANE,
    "control-plane": CONTROL_PLANE,
    "master": CONTROL_PLANE,
    "kube_node": NODE,
    "node": NODE,
    "worker": NODE,
    "etcd": ETCD,
}
# Host vars an operator may not smuggle in through ``vars``: they are rendered from fields.
MANAGED_HOST_VARS = (
    "ansible_host",
    "ip",
    "access_ip",
    "ansible_user",
    "ansible_port",
    "ansible_ssh_private_key_file",
)


class InventoryError(ValueError):
    """The host list cannot be rendered into an inventory."""


@dataclass(frozen=True)
class Host:
    """One inventory host. ``roles`` take Kubespray group names or control_plane/worker/etcd."""

    name: str
    ansible_host: str
    roles: tuple[str, ...]
    ip: str | None = None
    access_ip: str | None = None
    ansible_user: str | None = None
    ansible_port: int | None = None
    ansible_ssh_private_key_file: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)

    @property
    def groups(self) -> tuple[str, ...]:
        return normalise_roles(self.roles, self.name)

    def host_vars(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ansible_host": self.ansible_host}
        for key in ("ip", "access_ip", "ansible_user", "ansible_port", "ansible_ssh_private_key_file"):
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value) if key == "ansible_ssh_private_key_file" else value
        clash = sorted(set(self.vars) & set(MANAGED_HOST_VARS))
        if clash:
            raise InventoryError(f"host {self.name}: set {', '.join(clash)} as host fields, not under vars")
        out.update(self.vars)
        return out


def normalise_roles(roles: Iterable[str] | str, host: str = "?") -> tuple[str, ...]:
    if isinstance(roles, str):
        roles = [roles]
    groups: list[str] = []
    for role in roles:
        group = ROLE_ALIASES.get(str(role).strip().lower())
        if group is None:
            raise InventoryError(
                f"host {host}: unknown role {role!r} (expected one of control_plane, worker, etcd "
                f"or the Kubespray groups {', '.join(GROUPS)})"
            )
        if group not in groups:
            groups.append(group)
    return tuple(g for g in GROUPS if g in groups)


_HOST_FIELDS = {f.name for f in fields(Host)}


def as_host(value: Host | Mapping[str, Any]) -> Host:
    """A :class:`Host` from a Host or a plain dict (``groups`` is accepted for ``roles``)."""
    if isinstance(value, Host):
        return value
    data = dict(value)
    if "groups" in data and "roles" not in data:
        data["roles"] = data.pop("groups")
    unknown = sorted(set(data) - _HOST_FIELDS)
    if unknown:
        raise InventoryError(
            f"host {data.get('name', '?')}: unknown field(s) {', '.join(unknown)} "
            f"(host vars go under 'vars')"
        )
    for required in ("name", "ansible_host", "roles"):
        if not data.get(required):
            raise InventoryError(f"host {data.get('name', '?')}: '{required}' is required")
    roles = data["roles"]
    data["roles"] = (roles,) if isinstance(roles, str) else tuple(roles)
    data["vars"] = dict(data.get("vars") or {})
    return Host(**data)


def as_hosts(hosts: Iterable[Host | Mapping[str, Any]]) -> list[Host]:
    return [as_host(h) for h in hosts]


def render_inventory(hosts: Sequence[Host | Mapping[str, Any]]) -> dict[str, Any]:
    """The inventory as a dict (``all.children.{kube_control_plane,kube_node,etcd,k8s_cluster}``).

    Raises :class:`InventoryError` for duplicate host names and hosts without a role; the
    validation in :mod:`cni_runbook.kubespray.validate` reports the same problems as findings.
    """
    parsed = as_hosts(hosts)
    seen: set[str] = set()
    for host in parsed:
        if host.name in seen:
            raise InventoryError(f"duplicate host {host.name!r}: inventory host names must be unique")
        seen.add(host.name)
        if not host.groups:
            raise InventoryError(f"host {host.name}: no role (give at least one of control_plane, worker, etcd)")
    all_hosts = {h.name: h.host_vars() for h in parsed}
    children: dict[str, Any] = {
        group: {"hosts": {h.name: None for h in parsed if group in h.groups}} for group in GROUPS
    }
    children[CLUSTER] = {"children": {CONTROL_PLANE: None, NODE: None}}
    return {"all": {"hosts": all_hosts, "children": children}}


def inventory_yaml(inventory: Mapping[str, Any]) -> str:
    header = "# Kubespray inventory rendered by cni-runbook. k8s_cluster = kube_control_plane + kube_node.\n"
    return header + yaml.safe_dump(dict(inventory), sort_keys=False, default_flow_style=False)


def write_inventory(hosts: Sequence[Host | Mapping[str, Any]], path: Path | str) -> Path:
    """Render and write ``inventory.yml``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(inventory_yaml(render_inventory(hosts)))
    return path


def group_members(inventory: Mapping[str, Any]) -> dict[str, list[str]]:
    """Resolve group -> host names from a rendered (or hand-written YAML) inventory dict."""
    root = inventory.get("all", inventory)
    children = root.get("children") or {}

    def members(group: str, trail: tuple[str, ...] = ()) -> list[str]:
        if group in trail:
            raise InventoryError(f"group cycle: {' -> '.join((*trail, group))}")
        spec = children.get(group) or {}
        names = list((spec.get("hosts") or {}).keys())
        for child in (spec.get("children") or {}).keys():
            names += [n for n in members(child, (*trail, group)) if n not in names]
        return names

    return {group: members(group) for group in children}


def hosts_from_inventory(inventory: Mapping[str, Any]) -> list[Host]:
    """Read the hosts back from an inventory dict (to validate a rendered or hand-made file)."""
    root = inventory.get("all", inventory)
    host_vars: dict[str, dict[str, Any]] = {n: dict(v or {}) for n, v in (root.get("hosts") or {}).items()}
    groups = group_members(inventory)
    for group in GROUPS:
        for name in groups.get(group, []):
            host_vars.setdefault(name, {})
            child_vars = ((root.get("children") or {}).get(group, {}).get("hosts") or {}).get(name) or {}
            host_vars[name].update(child_vars)
    hosts = []
    for name, hv in host_vars.items():
        roles = tuple(g for g in GROUPS if name in groups.get(g, []))
        extra = {k: v for k, v in hv.items() if k not in MANAGED_HOST_VARS}
        hosts.append(
            Host(
                name=name,
                ansible_host=hv.get("ansible_host", name),
                roles=roles,
                ip=hv.get("ip"),
                access_ip=hv.get("access_ip"),
                ansible_user=hv.get("ansible_user"),
                ansible_port=hv.get("ansible_port"),
                ansible_ssh_private_key_file=hv.get("ansible_ssh_private_key_file"),
                vars=extra,
            )
        )
    return hosts
