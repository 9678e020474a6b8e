"""Check an inventory and its group_vars before Ansible starts.

A mirror of Kubespray v2.31's ``roles/validate_inventory`` (and of the inventory-only asserts of
``roles/kubernetes/preinstall/tasks/0040-verify-settings.yml``), plus the controller side
(ansible-core version against the checkout's requirements, the checkout itself) and warnings
for known traps. Kubespray stops at the first failed assert, deep into a run; this reports
every problem at once, each with the file, the key path, the value and what was expected.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from cni_runbook.kubespray.inventory import CONTROL_PLANE, ETCD, NODE, Host, normalise_roles
from cni_runbook.kubespray.vars import GROUP_VARS_FILE, RUNBOOK_PLUGINS

ERROR, WARNING = "error", "warning"

# Allowed values, roles/validate_inventory/tasks/main.yml (v2.31.0).
ALLOWED = {
    "kube_network_plugin": (
        "calico", "flannel", "cloud", "cilium", "cni", "kube-ovn", "kube-router", "macvlan", "custom_cni", "none",
    ),
    "dns_mode": ("coredns", "coredns_dual", "manual", "none"),
    "kube_proxy_mode": ("iptables", "ipvs", "nftables"),
    "cert_management": ("script", "none"),
    "resolvconf_mode": ("docker_dns", "host_resolvconf", "none"),
    "etcd_deployment_type": ("host", "docker", "kubeadm"),
    "container_manager": ("docker", "crio", "containerd"),
}
# Booleans Kubespray asserts on, plus the boolean switches this project sets or relies on.
KNOWN_BOOLEANS = (
    "download_run_once", "download_always_pull", "helm_enabled", "openstack_lbaas_enabled",
    "kubeconfig_localhost", "kubectl_localhost", "kube_proxy_remove", "kube_proxy_strict_arp",
    "kubelet_rotate_server_certificates", "kube_network_plugin_multus", "ignore_assert_errors",
    "download_localhost", "kata_containers_enabled", "gvisor_enabled", "kube_external_ca_mode",
    "auto_renew_certificates", "ipv4_stack", "ipv6_stack", "ping_access_ip", "disable_host_nameservers",
)
REMOVED_VARS = ("kubelet_static_pod_path",)  # removed in v2.31.0
KUBE_VERSION_MIN = "1.33.0"  # kube_version_min_required of v2.31.0 (oldest kubelet checksum)
KUBELET_MAX_PODS_DEFAULT = 110
HOSTNAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# ansible (community package) major -> ansible-core minor it ships.
ANSIBLE_TO_CORE = {8: "2.15", 9: "2.16", 10: "2.17", 11: "2.18", 12: "2.19", 13: "2.20"}
# What the release's playbooks/ansible_version.yml enforces, when the checkout says nothing.
CORE_RANGE_BY_KUBESPRAY = {"2.29": ("2.17.3", "2.18.0"), "2.30": ("2.17.3", "2.18.0"), "2.31": ("2.18.0", "2.19.0")}
HA_TRAP_RELEASES = ("2.30", "2.31")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    rule: str
    file: str
    key: str
    value: Any
    expected: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.file}: {self.key} = {self.value!r}: {self.message} (expected: {self.expected})"


class ValidationFailed(ValueError):
    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        errors = [f for f in findings if f.severity == ERROR]
        super().__init__(f"{len(errors)} error(s) before Kubespray starts:\n" + "\n".join(f"  {f}" for f in errors))


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    columns = ["severity", "rule", "file", "key", "value", "expected", "message"]
    return pd.DataFrame([{c: getattr(f, c) for c in columns} for f in findings], columns=columns)


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


def raise_for_errors(findings: Sequence[Finding]) -> Sequence[Finding]:
    """Raise :class:`ValidationFailed` when any finding is an error; else return the findings."""
    if errors(findings):
        raise ValidationFailed(findings)
    return findings


# -- inventory and group_vars -------------------------------------------------------------
def _field(host: Host | Mapping[str, Any], name: str, default: Any = None) -> Any:
    if isinstance(host, Host):
        return getattr(host, name, default)
    if name == "roles" and "roles" not in host:
        return host.get("groups", default)
    return host.get(name, default)


def _groups(host: Host | Mapping[str, Any]) -> tuple[str, ...]:
    try:
        return normalise_roles(_field(host, "roles", ()) or (), str(_field(host, "name", "?")))
    except ValueError:
        return ()


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        return None


def validate_inventory(
    hosts: Sequence[Host | Mapping[str, Any]],
    group_vars: Mapping[str, Any],
    *,
    hosts_file: str = "params.yaml",
    hosts_key: str = "hosts",
    vars_file: str = str(GROUP_VARS_FILE),
    runbook_rules: bool = True,
) -> list[Finding]:
    """Every problem Kubespray's validate_inventory would stop on, and a few it finds later.

    ``hosts`` is the raw host list (plain dicts or :class:`Host`, duplicates allowed so they
    can be reported); ``group_vars`` the merged variables. ``runbook_rules`` adds this
    project's own rules (plugin none/cni/custom_cni, kubeconfig_localhost true).
    """
    out: list[Finding] = []
    v = dict(group_vars)

    def add(severity: str, rule: str, file: str, key: str, value: Any, expected: str, message: str) -> None:
        out.append(Finding(severity, rule, file, key, value, expected, message))

    # Hosts -------------------------------------------------------------------------------
    names = [str(_field(h, "name", "")) for h in hosts]
    counts = Counter(names)
    first_index: dict[str, int] = {}
    for i, (host, name) in enumerate(zip(hosts, names, strict=True)):
        key = f"{hosts_key}[{i}]"
        if name in first_index:
            add(ERROR, "duplicate_host", hosts_file, f"{key}.name", name, "unique host names",
                f"duplicate host {name!r} (also {hosts_key}[{first_index[name]}]); each inventory host must appear once")
        else:
            first_index[name] = i
        if name and not HOSTNAME_RE.match(name):
            add(ERROR, "hostname", hosts_file, f"{key}.name", name, "RFC 1123: lower case a-z, 0-9, '-', '.'",
                "Kubespray refuses this inventory hostname (it becomes the Kubernetes node name)")
        try:
            normalise_roles(_field(host, "roles", ()) or (), name)
            if not _groups(host):
                add(ERROR, "host_roles", hosts_file, f"{key}.roles", [], "at least one of control_plane, worker, etcd",
                    f"host {name!r} has no role")
        except ValueError as exc:
            add(ERROR, "host_roles", hosts_file, f"{key}.roles", _field(host, "roles"), "control_plane, worker, etcd", str(exc))
        for addr_key in ("ip", "access_ip"):
            value = _field(host, addr_key)
            if value is None:
                continue
            try:
                ipaddress.ip_address(str(value))
            except ValueError:
                add(ERROR, "host_address", hosts_file, f"{key}.{addr_key}", value, "an IP address",
                    f"{addr_key} of {name!r} is not an IP address")
    seen_ips: dict[str, int] = {}
    for i, host in enumerate(hosts):
        value = _field(host, "ip")
        if value is None or counts[names[i]] > 1:
            continue
        if str(value) in seen_ips:
            add(ERROR, "duplicate_address", hosts_file, f"{hosts_key}[{i}].ip", value, "one node per address",
                f"{names[i]!r} and {names[seen_ips[str(value)]]!r} share ip {value}")
        else:
            seen_ips[str(value)] = i
    endpoints: dict[tuple[str, Any], int] = {}
    for i, host in enumerate(hosts):
        if counts[names[i]] > 1:
            continue
        endpoint = (str(_field(host, "ansible_host")), _field(host, "ansible_port") or 22)
        if endpoint in endpoints:
            add(WARNING, "duplicate_endpoint", hosts_file, f"{hosts_key}[{i}].ansible_host", f"{endpoint[0]}:{endpoint[1]}",
                "one SSH endpoint per node", f"{names[i]!r} and {names[endpoints[endpoint]]!r} reach the same SSH endpoint")
        else:
            endpoints[endpoint] = i

    unique = [h for i, h in enumerate(hosts) if first_index[names[i]] == i]
    control_plane = [h for h in unique if CONTROL_PLANE in _groups(h)]
    etcd = [h for h in unique if ETCD in _groups(h)]
    cluster = [h for h in unique if {CONTROL_PLANE, NODE} & set(_groups(h))]
    if not control_plane:
        add(ERROR, "control_plane_empty", hosts_file, f"{hosts_key}[*].roles", 0, ">= 1 control_plane host",
            "the kube_control_plane group is empty")
    etcd_type = v.get("etcd_deployment_type", "host")
    if not etcd and etcd_type != "kubeadm":
        add(ERROR, "etcd_empty", hosts_file, f"{hosts_key}[*].roles", 0, "an odd number of etcd hosts (1, 3, 5)",
            "the etcd group is empty; Kubespray needs it unless etcd_deployment_type is kubeadm")
    etcd_count = len(etcd or control_plane)
    if etcd_count and etcd_count % 2 == 0:
        add(ERROR, "etcd_odd", hosts_file, f"{hosts_key}[*].roles", etcd_count, "an odd number of etcd hosts (1, 3, 5)",
            f"{etcd_count} etcd members: an even count cannot keep quorum better than one fewer; "
            f"Kubespray stops on 'even number of etcd hosts'")

    # Variables ---------------------------------------------------------------------------
    for name in REMOVED_VARS:
        if name in v:
            add(ERROR, "removed_var", vars_file, name, v[name], "not set (removed in Kubespray v2.31.0)",
                f"{name} was removed in Kubespray v2.31.0")
    for name in KNOWN_BOOLEANS:
        if name in v and not isinstance(v[name], bool):
            add(ERROR, "boolean", vars_file, name, v[name], "true or false (a YAML boolean)",
                f"{name} must be a real boolean, not {type(v[name]).__name__} {v[name]!r}; "
                f"Kubespray treats a string as truthy")
    for name, allowed in ALLOWED.items():
        if name in v and v[name] not in allowed:
            add(ERROR, "allowed_value", vars_file, name, v[name], " | ".join(allowed),
                f"{name} {v[name]!r} is not supported by Kubespray v2.31")
    plugin = v.get("kube_network_plugin", "calico")
    if runbook_rules and plugin in ALLOWED["kube_network_plugin"] and plugin not in RUNBOOK_PLUGINS:
        add(ERROR, "runbook_plugin", vars_file, "kube_network_plugin", plugin, " | ".join(RUNBOOK_PLUGINS),
            "this runbook installs the CNI itself: Kubespray must deploy none, cni or custom_cni")
    if v.get("etcd_deployment_type") == "docker" and v.get("container_manager", "containerd") != "docker":
        add(ERROR, "allowed_value", vars_file, "etcd_deployment_type", "docker", "host | kubeadm",
            "etcd_deployment_type docker needs container_manager docker")
    if runbook_rules and v.get("kubeconfig_localhost") is not True:
        add(ERROR, "kubeconfig_localhost", vars_file, "kubeconfig_localhost", v.get("kubeconfig_localhost"), "true",
            "the runbook reads <inventory_dir>/artifacts/admin.conf, which Kubespray writes only with kubeconfig_localhost: true")
    if "kube_version" in v:
        raw = str(v["kube_version"])
        try:
            if Version(raw.lstrip("v")) < Version(KUBE_VERSION_MIN):
                add(ERROR, "kube_version", vars_file, "kube_version", raw, f">= {KUBE_VERSION_MIN}",
                    f"Kubespray v2.31 supports Kubernetes {KUBE_VERSION_MIN} and newer")
            elif raw.startswith("v"):
                add(ERROR, "kube_version", vars_file, "kube_version", raw, raw.lstrip("v"),
                    "Kubespray v2.31 writes kube_version without the leading 'v'")
        except InvalidVersion:
            add(ERROR, "kube_version", vars_file, "kube_version", raw, "a version such as 1.35.4", "not a version")

    # CIDRs -------------------------------------------------------------------------------
    nets: dict[str, Any] = {}
    for name, default in (("kube_service_addresses", "10.233.0.0/18"), ("kube_pods_subnet", "10.233.64.0/18")):
        raw = v.get(name, default)
        net = _network(raw)
        if net is None:
            hint = ""
            try:
                hint = f"; did you mean {ipaddress.ip_network(str(raw), strict=False)}?"
            except ValueError:
                pass
            add(ERROR, "cidr", vars_file, name, raw, "an IPv4 network such as 10.233.0.0/18",
                f"{name} = {raw!r} is not a valid network range{hint}")
        elif net.version != 4:
            add(ERROR, "cidr", vars_file, name, raw, "an IPv4 network (IPv6 goes into the *_ipv6 variables)",
                f"{name} must be IPv4")
        else:
            nets[name] = net
    if len(nets) == 2 and nets["kube_pods_subnet"].overlaps(nets["kube_service_addresses"]):
        add(ERROR, "cidr_overlap", vars_file, "kube_pods_subnet", str(nets["kube_pods_subnet"]),
            f"a range disjoint from kube_service_addresses {nets['kube_service_addresses']}",
            "kube_pods_subnet overlaps kube_service_addresses")
    raw_prefix = v.get("kube_network_node_prefix", 24)
    if isinstance(raw_prefix, bool) or not isinstance(raw_prefix, int):
        add(ERROR, "node_prefix", vars_file, "kube_network_node_prefix", raw_prefix, "an integer such as 24",
            "kube_network_node_prefix must be an integer prefix length")
    elif "kube_pods_subnet" in nets:
        pods = nets["kube_pods_subnet"]
        if not pods.prefixlen <= raw_prefix <= 32:
            add(ERROR, "node_prefix", vars_file, "kube_network_node_prefix", raw_prefix,
                f"between {pods.prefixlen} (the kube_pods_subnet prefix) and 32",
                f"each node's pod range must fit inside kube_pods_subnet {pods}")
        else:
            capacity = 2 ** (raw_prefix - pods.prefixlen)
            if plugin != "calico" and capacity < len(cluster):
                add(ERROR, "node_capacity", vars_file, "kube_network_node_prefix", raw_prefix,
                    f">= {len(cluster)} node subnets (one per k8s_cluster host)",
                    f"{pods} split into /{raw_prefix} gives {capacity} node subnet(s) for {len(cluster)} nodes: "
                    f"not enough ipv4 IPs are available for the desired node count")
            max_pods = v.get("kubelet_max_pods", KUBELET_MAX_PODS_DEFAULT)
            addresses = 2 ** (32 - raw_prefix) - 2
            if isinstance(max_pods, int) and not isinstance(max_pods, bool) and max_pods > addresses:
                if plugin not in ("calico", "none"):
                    add(ERROR, "max_pods", vars_file, "kubelet_max_pods", max_pods, f"<= {addresses} for a /{raw_prefix}",
                        "do not schedule more pods on a node than inet addresses are available")
                elif plugin == "none":
                    add(WARNING, "max_pods", vars_file, "kubelet_max_pods", max_pods, f"<= {addresses} for a /{raw_prefix}",
                        "Kubespray skips this check for 'none', but the CNI installed later allocates pod IPs "
                        "from each node's podCIDR: pods beyond its size will not start")
    if plugin == "custom_cni" and not v.get("custom_cni_manifests") and not v.get("custom_cni_chart_release_name"):
        add(ERROR, "custom_cni", vars_file, "custom_cni_manifests", v.get("custom_cni_manifests", []),
            "a non-empty list, or custom_cni_chart_release_name for Helm",
            "custom_cni needs manifests or a Helm chart (Kubespray asserts 'custom_cni_manifests should not be empty')")
    return out


# -- known traps ----------------------------------------------------------------------------
def _release(version: str | None) -> str | None:
    if not version:
        return None
    m = re.match(r"v?(\d+)\.(\d+)", version)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def trap_warnings(
    hosts: Sequence[Host | Mapping[str, Any]],
    group_vars: Mapping[str, Any],
    *,
    kubespray_version: str | None = "2.31.0",
    manifests_dir: Path | str | None = None,
    hosts_file: str = "params.yaml",
    hosts_key: str = "hosts",
    vars_file: str = str(GROUP_VARS_FILE),
) -> list[Finding]:
    """Warnings for combinations known to hurt with Kubespray v2.30/v2.31."""
    out: list[Finding] = []
    plugin = group_vars.get("kube_network_plugin", "calico")
    seen_names: set[str] = set()
    control_plane = 0
    for host in hosts:
        name = str(_field(host, "name", ""))
        if name not in seen_names and CONTROL_PLANE in _groups(host):
            control_plane += 1
        seen_names.add(name)
    release = _release(kubespray_version)
    if control_plane > 1 and plugin in ("none", "cni") and (release is None or release in HA_TRAP_RELEASES):
        which = f"Kubespray v{release}" if release else "Kubespray (version unknown; affects v2.30/v2.31)"
        out.append(Finding(
            WARNING, "trap_ha_no_cni", hosts_file, f"{hosts_key}[*].roles", control_plane, "1 control-plane host, or a fixed Kubespray",
            f"{which} waits for each new control-plane node to be Ready; with kube_network_plugin {plugin!r} nodes stay "
            f"NotReady until the CNI is installed, so an HA run blocks (fixed on master by PR 13280)",
        ))
    if group_vars.get("kubelet_rotate_server_certificates") is True and plugin == "none":
        out.append(Finding(
            WARNING, "trap_rotate_server_certs", vars_file, "kubelet_rotate_server_certificates", True, "false with kube_network_plugin none",
            "kubelet-csr-approver cannot run without a CNI, so the run times out approving kubelet serving "
            "certificates (kubespray issue 10320)",
        ))
    if plugin == "custom_cni":
        base = Path(manifests_dir) if manifests_dir is not None else None
        for i, manifest in enumerate(group_vars.get("custom_cni_manifests") or []):
            path = Path(manifest)
            if not path.is_absolute() and base is not None:
                path = base / path
            key = f"custom_cni_manifests[{i}]"
            if not path.is_file():
                out.append(Finding(ERROR, "custom_cni_manifest", vars_file, key, str(manifest), "an existing file on the controller",
                                   f"manifest {path} does not exist"))
                continue
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if "{{" in line or "{%" in line:
                    out.append(Finding(
                        WARNING, "trap_jinja_in_manifest", str(path), f"line {lineno}", line.strip()[:120],
                        "no '{{' or '{%' (or wrap the manifest in {% raw %}...{% endraw %})",
                        "Kubespray renders custom_cni_manifests with Ansible 'template': Jinja markers here are "
                        "rendered or break the run",
                    ))
                    break
    return out


# -- controller -----------------------------------------------------------------------------
def detect_kubespray_version(kubespray_dir: Path | str) -> str | None:
    """The release of a checkout, from its galaxy.yml (present in every Kubespray release)."""
    galaxy = Path(kubespray_dir) / "galaxy.yml"
    if not galaxy.is_file():
        return None
    try:
        version = (yaml.safe_load(galaxy.read_text()) or {}).get("version")
    except yaml.YAMLError:
        return None
    return str(version) if version else None


def ansible_core_requirement(kubespray_dir: Path | str) -> tuple[SpecifierSet, str]:
    """The ansible-core range a checkout needs, and where it was read.

    Order: ``playbooks/ansible_version.yml`` (what Kubespray asserts at run time), then the
    ``ansible``/``ansible-core`` pin of ``requirements.txt``, then the release's known range.
    """
    root = Path(kubespray_dir)
    version_playbook = root / "playbooks" / "ansible_version.yml"
    if version_playbook.is_file():
        try:
            plays = yaml.safe_load(version_playbook.read_text()) or []
            for play in plays:
                pv = (play or {}).get("vars") or {}
                if "minimal_ansible_version" in pv and "maximal_ansible_version" in pv:
                    spec = SpecifierSet(f">={pv['minimal_ansible_version']},<{pv['maximal_ansible_version']}")
                    return spec, str(version_playbook)
        except (yaml.YAMLError, AttributeError, TypeError):
            pass
    requirements = root / "requirements.txt"
    if requirements.is_file():
        for line in requirements.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^ansible-core\s*([<>=!~].*)$", line)
            if m:
                return SpecifierSet(m.group(1).replace(" ", "")), str(requirements)
            m = re.match(r"^ansible\s*==\s*(\d+)\.", line)
            if m and int(m.group(1)) in ANSIBLE_TO_CORE:
                core = ANSIBLE_TO_CORE[int(m.group(1))]
                major, minor = core.split(".")
                return SpecifierSet(f">={core}.0,<{major}.{int(minor) + 1}.0"), str(requirements)
    release = _release(detect_kubespray_version(root)) or "2.31"
    low, high = CORE_RANGE_BY_KUBESPRAY.get(release, CORE_RANGE_BY_KUBESPRAY["2.31"])
    return SpecifierSet(f">={low},<{high}"), f"Kubespray v{release} (known range)"


def installed_ansible_core() -> str | None:
    try:
        return metadata.version("ansible-core")
    except metadata.PackageNotFoundError:
        return None


def validate_controller(
    kubespray_dir: Path | str,
    *,
    playbook: str = "cluster.yml",
    ansible_core_version: str | None = None,
) -> list[Finding]:
    """The checkout exists with ``playbook``; the installed ansible-core fits its requirement."""
    root = Path(kubespray_dir)
    out: list[Finding] = []
    if not root.is_dir():
        return [Finding(ERROR, "kubespray_dir", str(root), "kubespray_dir", str(root), "a Kubespray checkout directory",
                        "kubespray_dir does not exist")]
    if not (root / playbook).is_file():
        out.append(Finding(ERROR, "kubespray_playbook", str(root), "kubespray_dir", str(root), f"{playbook} at its top level",
                           f"{root} has no {playbook}: not a Kubespray checkout (or the wrong folder)"))
    spec, source = ansible_core_requirement(root)
    installed = ansible_core_version or installed_ansible_core()
    if installed is None:
        out.append(Finding(ERROR, "ansible_core", source, "ansible-core", None, f"ansible-core{spec}",
                           "ansible-core is not installed in this environment"))
    elif Version(installed) not in spec:
        out.append(Finding(ERROR, "ansible_core", source, "ansible-core", installed, f"ansible-core{spec}",
                           f"ansible-core {installed} is outside what this Kubespray checkout accepts "
                           f"(a plain 'pip install ansible-core' brings a newer one; install the checkout's requirements.txt)"))
    return out


def validate_all(
    hosts: Sequence[Host | Mapping[str, Any]],
    group_vars: Mapping[str, Any],
    *,
    kubespray_dir: Path | str | None = None,
    kubespray_version: str | None = None,
    manifests_dir: Path | str | None = None,
    ansible_core_version: str | None = None,
    hosts_file: str = "params.yaml",
    vars_file: str = str(GROUP_VARS_FILE),
) -> list[Finding]:
    """Inventory + variables + traps (+ controller when ``kubespray_dir`` is given), errors first."""
    findings = validate_inventory(hosts, group_vars, hosts_file=hosts_file, vars_file=vars_file)
    if kubespray_dir is not None:
        findings += validate_controller(kubespray_dir, ansible_core_version=ansible_core_version)
        kubespray_version = kubespray_version or detect_kubespray_version(kubespray_dir)
    findings += trap_warnings(hosts, group_vars, kubespray_version=kubespray_version, manifests_dir=manifests_dir,
                              hosts_file=hosts_file, vars_file=vars_file)
    return sorted(findings, key=lambda f: f.severity != ERROR)
