"""Evaluate the facts of preflight/playbook.yml into pass/warn/fail rows per node.

Each row: node, check, status, seen, required. Which checks apply depends on the CNI profile:

* ``generic`` - what Kubespray v2.31 itself checks on facts (memory, ip/access_ip, hostname,
  resolv.conf, systemd) plus kernel, swap, ip_forward, br_netfilter, time sync, free ports;
* ``antrea`` - generic + openvswitch loadable, kernel >= 4.6, Antrea's ports, and the bandwidth
  QoS modules (ifb, sch_tbf, sch_ingress) its chained bandwidth plugin needs;
* ``lab`` - the local lab's network-namespace nodes (no systemd, QoS modules, bridge).

A failing check can be waived by name: it then shows as ``waived`` and is listed in
:attr:`PreflightReport.waived` for the audit record.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from packaging.version import InvalidVersion, Version

PASS, WARN, FAIL, WAIVED = "pass", "warn", "fail", "waived"
STATUSES = (PASS, WARN, FAIL, WAIVED)
STATUS_COLORS = {PASS: "#c6efce", WARN: "#ffeb9c", FAIL: "#ffc7ce", WAIVED: "#d9d9d9"}
HOSTNAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MEMORY_MB = {"kube_control_plane": 1500, "kube_node": 1024}  # Kubespray minimal_*_memory_mb
# kernel config symbol of each module this project probes
KCONFIG = {
    "openvswitch": "OPENVSWITCH",
    "ifb": "IFB",
    "sch_tbf": "NET_SCH_TBF",
    "sch_ingress": "NET_SCH_INGRESS",
    "br_netfilter": "BRIDGE_NETFILTER",
    "bridge": "BRIDGE",
    "overlay": "OVERLAY_FS",
    "veth": "VETH",
    "vxlan": "VXLAN",
    "geneve": "GENEVE",
    "ip_vs": "IP_VS",
    "nf_conntrack": "NF_CONNTRACK",
    "wireguard": "WIREGUARD",
}
QOS_MODULES = ("ifb", "sch_tbf", "sch_ingress")


@dataclass(frozen=True)
class Ports:
    name: str  # check name, e.g. "port_6443_tcp"
    first: int
    last: int
    proto: str  # tcp | udp
    groups: tuple[str, ...]  # inventory groups the check applies to; () = every host
    purpose: str
    # process names (as `ss -p` shows them, at most 15 characters) of the Kubernetes component
    # that holds these ports once the cluster runs: a port held by one of them on a cluster the
    # run already brought up is that cluster's own, not a conflict
    owners: tuple[str, ...] = ()


KUBERNETES_PORTS = (
    Ports("port_6443_tcp", 6443, 6443, "tcp", ("kube_control_plane",), "kube-apiserver", ("kube-apiserver",)),
    Ports("port_2379-2380_tcp", 2379, 2380, "tcp", ("etcd",), "etcd client/peer", ("etcd",)),
    Ports("port_10250_tcp", 10250, 10250, "tcp", (), "kubelet", ("kubelet",)),
    Ports("port_10257_tcp", 10257, 10257, "tcp", ("kube_control_plane",), "kube-controller-manager",
          ("kube-controller",)),
    Ports("port_10259_tcp", 10259, 10259, "tcp", ("kube_control_plane",), "kube-scheduler", ("kube-scheduler",)),
)
ANTREA_PORTS = (
    Ports("port_10349-10351_tcp", 10349, 10351, "tcp", (), "antrea-agent/controller APIs, memberlist"),
    Ports("port_10351_udp", 10351, 10351, "udp", (), "antrea memberlist"),
    Ports("port_6081_udp", 6081, 6081, "udp", (), "Geneve tunnel"),
)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    modules: tuple[str, ...]  # must be loaded, built in or loadable (fail otherwise)
    kernel_min: tuple[tuple[str, str, str], ...]  # (version, status if below, why)
    ports: tuple[Ports, ...]
    require_systemd: bool
    br_netfilter_missing: str  # status when br_netfilter is neither present nor loadable

    @property
    def probe_modules(self) -> list[str]:
        return sorted({*self.modules, "br_netfilter"})


PROFILES = {
    "generic": Profile(
        "generic", "Kubespray's own fact checks plus kernel, swap, forwarding, time and ports",
        modules=(), kernel_min=(("4.19", WARN, "Kubernetes recommends kernel >= 4.19"),),
        ports=KUBERNETES_PORTS, require_systemd=True, br_netfilter_missing=FAIL,
    ),
    "antrea": Profile(
        "antrea", "generic + Antrea: openvswitch module, kernel >= 4.6, Antrea ports, bandwidth QoS modules",
        modules=("openvswitch", *QOS_MODULES),
        kernel_min=(("4.6", FAIL, "Antrea with AntreaProxy needs kernel >= 4.6"),
                    ("4.19", WARN, "Kubernetes recommends kernel >= 4.19")),
        ports=KUBERNETES_PORTS + ANTREA_PORTS, require_systemd=True, br_netfilter_missing=WARN,
    ),
    "lab": Profile(
        "lab", "the local lab's namespace nodes: bridge CNI, bandwidth QoS modules, no systemd",
        modules=("bridge", "veth", *QOS_MODULES),
        kernel_min=(("4.19", WARN, "Kubernetes recommends kernel >= 4.19"),),
        ports=KUBERNETES_PORTS, require_systemd=False, br_netfilter_missing=FAIL,
    ),
}


@dataclass(frozen=True)
class CheckRow:
    node: str
    check: str
    status: str
    seen: str
    required: str
    waived_by: str = ""


def _kv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for token in (text or "").split():
        if "=" in token:
            k, _, v = token.partition("=")
            out[k] = v
    return out


def parse_modules(text: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``probe kernel modules`` output -> ({module: fields}, {proc_modules, lib_modules})."""
    modules: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in (text or "").splitlines():
        kv = _kv(line)
        if "module" in kv:
            modules[kv["module"]] = kv
        elif "proc_modules" in kv:
            env = kv
    return modules, env


def parse_kconfig(text: str) -> dict[str, str]:
    """Kernel config lines -> {SYMBOL: 'y' | 'm' | 'n'}."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        m = re.match(r"^CONFIG_(\w+)=(\w+)", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = re.match(r"^# CONFIG_(\w+) is not set", line.strip())
        if m:
            out[m.group(1)] = "n"
    return out


def parse_listening(text: str) -> set[tuple[str, int]]:
    """``list listening sockets`` output -> {(proto, port)} (ss lines or /proc/net fallback)."""
    return set(listening_holders(text))


_HOLDER = re.compile(r'\("([^"]+)",pid=(\d+)')


def listening_holders(text: str) -> dict[tuple[str, int], list[str]]:
    """``list listening sockets`` output -> {(proto, port): [process names holding it]}.

    ss lines are ``tcp ADDR:PORT users:(("kube-apiserver",pid=42,fd=7))``; the process part is
    absent when ss may not see the owner (not root) and in the /proc/net fallback: then the
    list is empty (holder unknown).
    """
    out: dict[tuple[str, int], list[str]] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("tcp", "udp"):
            port = parts[1].rsplit(":", 1)[-1]
            if port.isdigit():
                names = out.setdefault((parts[0], int(port)), [])
                for name, _pid in _HOLDER.findall(" ".join(parts[2:])):
                    if name not in names:
                        names.append(name)
        elif len(parts) >= 3 and parts[0].startswith("proc"):
            proto = "tcp" if "tcp" in parts[0] else "udp"
            local, state = parts[1], parts[2]
            if proto == "tcp" and state != "0A":  # 0A = LISTEN
                continue
            if proto == "udp" and state != "07":  # 07 = unconnected (bound)
                continue
            out.setdefault((proto, int(local.rsplit(":", 1)[-1], 16)), [])
    return out


def port_check(spec: Ports, holders: Mapping[tuple[str, int], list[str]], *,
               cluster_running: bool = False) -> tuple[str, str]:
    """(status, seen) of one port check.

    A busy port fails and names what holds it. When the run knows that its own cluster already
    runs on these hosts (``cluster_running``), a port held by exactly the Kubernetes component
    that owns it (kube-apiserver on 6443, ...) is that cluster's own and passes, said so.
    """
    busy = sorted(p for proto, p in holders if proto == spec.proto and spec.first <= p <= spec.last)
    if not busy:
        return PASS, "free"
    names = sorted({n for p in busy for n in holders[(spec.proto, p)]})
    unknown = [p for p in busy if not holders[(spec.proto, p)]]
    by = f" by {', '.join(names)}" if names else ""
    seen = f"in use: {', '.join(map(str, busy))}/{spec.proto}{by}"
    own = bool(names) and not unknown and all(any(n.startswith(o) for o in spec.owners) for n in names)
    if own and cluster_running:
        return PASS, f"held by {', '.join(names)} of this very cluster (already running)"
    if own:
        return FAIL, seen + " (a Kubernetes component already runs on this host)"
    return FAIL, seen


def nameservers(resolv_conf: str) -> list[str]:
    return [line.split()[1] for line in (resolv_conf or "").splitlines()
            if line.strip().startswith("nameserver") and len(line.split()) > 1]


def module_state(name: str, probes: Mapping[str, Mapping[str, str]], env: Mapping[str, str],
                 kconfig: Mapping[str, str]) -> tuple[str, str]:
    """(status, seen) for one kernel module: loaded / built-in / loadable, else why not."""
    probe = probes.get(name, {})
    symbol = KCONFIG.get(name)
    config = kconfig.get(symbol) if symbol else None
    if probe.get("loaded") == "yes":
        return PASS, "loaded"
    if probe.get("builtin") == "yes" or config == "y":
        return PASS, f"built-in (CONFIG_{symbol}=y)" if config == "y" else "built-in"
    if probe.get("sysfs") == "yes":
        return PASS, "present (/sys/module)"
    if probe.get("modprobe_rc") == "0":
        return PASS, "loadable (modprobe -n)"
    if probe.get("file", "none") != "none":
        return PASS, f"loadable ({probe['file']})"
    if config == "n":
        return FAIL, f"not available (CONFIG_{symbol} is not set)"
    if config == "m":
        return FAIL, f"CONFIG_{symbol}=m but no module file for this kernel"
    if not kconfig and env.get("proc_modules") != "yes" and env.get("lib_modules") != "yes":
        return WARN, "unknown (no kernel config, /proc/modules or /lib/modules to read)"
    detail = probe.get("modprobe", "").replace("_", " ")
    return FAIL, f"not available ({detail})" if detail else "not available"


def _version(text: str) -> Version | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    try:
        return Version(".".join(g for g in m.groups() if g is not None))
    except InvalidVersion:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _none(value: Any) -> Any:
    return None if value in (None, "", "None") else value


def evaluate_host(report: Mapping[str, Any], profile: Profile, *, kube_proxy_mode: str | None = None,
                  cluster_running: bool = False) -> list[CheckRow]:
    """Rows for one host's ``preflight_report`` (``cluster_running``: see :func:`port_check`)."""
    node = str(report.get("inventory_hostname"))
    groups = set(report.get("groups") or [])
    facts = report.get("facts") or {}
    outputs = report.get("outputs") or {}
    rows: list[CheckRow] = []

    def row(check: str, status: str, seen: Any, required: str) -> None:
        rows.append(CheckRow(node, check, status, str(seen), required))

    rows.append(CheckRow(node, "reachable", PASS, "facts gathered", "SSH + Python"))
    distro = " ".join(str(facts.get(k)) for k in ("distribution", "distribution_version") if _none(facts.get(k)))
    row("os", PASS if facts.get("system") == "Linux" else FAIL, f"{facts.get('system')} {distro}".strip(), "Linux")

    kernel = str(facts.get("kernel") or "")
    kver = _version(kernel)
    kernel_rules = list(profile.kernel_min)
    if kube_proxy_mode == "nftables":
        kernel_rules.insert(0, ("5.13", FAIL, "kube_proxy_mode nftables needs kernel >= 5.13"))
    status, required = PASS, ", ".join(f">= {v} ({below})" for v, below, _ in kernel_rules) or "any"
    if kver is None:
        status = WARN
    else:
        for minimum, below, _why in kernel_rules:
            if kver < Version(minimum):
                status = below if status != FAIL else status
    row("kernel", status, kernel or "unknown", required)

    if profile.require_systemd:
        mgr = facts.get("service_mgr")
        row("systemd", PASS if mgr == "systemd" else FAIL, mgr or "unknown", "systemd (Kubespray asserts it)")

    mem = _int(facts.get("memtotal_mb"))
    need = max([MEMORY_MB[g] for g in groups if g in MEMORY_MB], default=MEMORY_MB["kube_node"])
    row("memory", WARN if mem is None else (PASS if mem >= need else FAIL), f"{mem} MB" if mem is not None else "unknown",
        f">= {need} MB")

    swap = _int(facts.get("swaptotal_mb"))
    row("swap", WARN if swap is None or swap > 0 else PASS, f"{swap} MB" if swap is not None else "unknown",
        "0 MB (Kubespray turns swap off; kubelet refuses it by default)")

    sysctl = _kv(outputs.get("sysctl", "").replace("\n", " "))
    forward = sysctl.get("ip_forward", "unknown")
    row("ip_forward", PASS if forward == "1" else WARN, forward, "1 (Kubespray sets it; the CNI needs it)")

    probes, env = parse_modules(outputs.get("modules", ""))
    kconfig = parse_kconfig(outputs.get("kconfig", ""))
    bridge_nf = sysctl.get("bridge_nf_call_iptables", "absent")
    if bridge_nf != "absent" and bridge_nf != "unknown":
        row("br_netfilter", PASS, f"active (bridge-nf-call-iptables={bridge_nf})", "loaded or loadable")
    else:
        status, seen = module_state("br_netfilter", probes, env, kconfig)
        row("br_netfilter", status if status != FAIL else profile.br_netfilter_missing, seen, "loaded or loadable")

    ip = _none(report.get("ip"))
    addresses = [*(facts.get("all_ipv4_addresses") or []), *(facts.get("all_ipv6_addresses") or [])]
    if ip is None:
        row("ip_local", PASS, "ip not set (Kubespray uses the default-route address)", "ip in the node's addresses")
    else:
        local = ip in addresses
        row("ip_local", PASS if local else FAIL,
            f"{ip} is a local address" if local else f"{ip} not among {', '.join(addresses) or 'no addresses'}",
            "ip in the node's addresses")

    ping = _kv(outputs.get("ping", ""))
    target = report.get("ping_target")
    answered = ping.get("answered", "unknown")
    row("access_ip", {"yes": PASS, "no": FAIL}.get(answered, WARN),
        f"{target}: {'answers' if answered == 'yes' else 'no answer' if answered == 'no' else 'could not test'} ({ping.get('method', '?')})",
        "access_ip answers ping")

    hostname_ok = bool(HOSTNAME_RE.match(node))
    row("hostname", PASS if hostname_ok else FAIL, f"{node} (system: {facts.get('hostname')})",
        "RFC 1123 lower-case name")

    servers = nameservers(outputs.get("resolv_conf", ""))
    row("nameservers", PASS if servers else FAIL, ", ".join(servers) or "none", ">= 1 nameserver in /etc/resolv.conf")

    t = _kv(outputs.get("time", ""))
    source = t.get("source", "none")
    synced: bool | None = None
    if source == "timedatectl":
        synced = t.get("synchronized") == "yes"
    elif source == "chronyc":
        synced = t.get("leap") == "Normal"
    elif source == "ntpstat":
        synced = t.get("rc") == "0"
    elif source == "adjtimex":
        synced = None if _int(t.get("state")) is None else _int(t.get("state")) != 5  # 5 = TIME_ERROR
    row("time_sync", PASS if synced else WARN,
        f"{source}: {'synchronised' if synced else 'not synchronised' if synced is False else 'unknown'}",
        "clock synchronised (NTP)")

    holders = listening_holders(outputs.get("ports", ""))
    for spec in profile.ports:
        if spec.groups and not groups & set(spec.groups):
            continue
        rng = f"{spec.first}" if spec.first == spec.last else f"{spec.first}-{spec.last}"
        status, seen = port_check(spec, holders, cluster_running=cluster_running)
        row(spec.name, status, seen, f"{rng}/{spec.proto} free ({spec.purpose})")

    for module in profile.modules:
        status, seen = module_state(module, probes, env, kconfig)
        row(f"module_{module}", status, seen, "loaded, built-in or loadable")
    return rows


def check_names(profile: str | Profile) -> list[str]:
    """Every check name a profile can produce (what a waiver may name)."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    names = ["reachable", "os", "kernel", *(["systemd"] if p.require_systemd else []), "memory", "swap",
             "ip_forward", "br_netfilter", "ip_local", "access_ip", "hostname", "nameservers", "time_sync"]
    return names + [s.name for s in p.ports] + [f"module_{m}" for m in p.modules]


@dataclass
class PreflightReport:
    profile: str
    rows: list[CheckRow]
    waivers: tuple[str, ...] = ()
    waived: list[CheckRow] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def warnings(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == WARN]

    @property
    def ok(self) -> bool:
        """At least one node evaluated, and no unwaived failure."""
        return bool(self.rows) and not self.failures

    def frame(self) -> pd.DataFrame:
        cols = ["node", "check", "status", "seen", "required", "waived_by"]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.rows], columns=cols)

    def matrix(self) -> pd.DataFrame:
        """node x check table of statuses, checks in evaluation order ("n/a" where not applicable)."""
        frame = self.frame()
        if frame.empty:
            return pd.DataFrame()
        order = list(dict.fromkeys(frame["check"]))
        nodes = list(dict.fromkeys(frame["node"]))
        return frame.pivot(index="node", columns="check", values="status").reindex(index=nodes, columns=order).fillna("n/a")

    def styled_matrix(self) -> Any:
        """The matrix with STATUS_COLORS as cell backgrounds (a pandas Styler)."""
        return self.matrix().style.map(lambda s: f"background-color: {STATUS_COLORS.get(s, '#ffffff')}")

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.rows) for s in STATUSES}
        text = f"preflight ({self.profile}): " + ", ".join(f"{v} {k}" for k, v in counts.items())
        if self.failures:
            text += "; failing: " + ", ".join(f"{r.node}/{r.check}" for r in self.failures)
        return text

    def raise_for_failures(self) -> PreflightReport:
        if self.failures:
            lines = [f"  {r.node}: {r.check}: seen {r.seen}; required {r.required}" for r in self.failures]
            raise PreflightFailed(self, f"{len(self.failures)} preflight check(s) failed "
                                        f"(waive a check by name to go on):\n" + "\n".join(lines))
        return self


class PreflightFailed(RuntimeError):
    def __init__(self, report: PreflightReport, message: str) -> None:
        self.report = report
        super().__init__(message)


def evaluate(
    reports: Mapping[str, Mapping[str, Any]],
    *,
    profile: str = "generic",
    waivers: Collection[str] = (),
    unreachable: Mapping[str, str] | None = None,
    kube_proxy_mode: str | None = None,
    cluster_running: bool = False,
) -> PreflightReport:
    """Rows for every host. ``reports``: host -> preflight_report; ``unreachable``: host -> message.

    ``cluster_running``: the run's own cluster already runs on these hosts (a reused lab), so
    ports held by its own components pass (:func:`port_check`).

    A waiver names a check (e.g. ``module_openvswitch``); its failures become ``waived``.
    Unknown waiver names raise ``ValueError`` so a typo cannot silently waive nothing.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown preflight profile {profile!r}: use one of {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    known = check_names(chosen)
    bad = sorted(set(waivers) - set(known))
    if bad:
        raise ValueError(f"unknown waiver(s) {', '.join(bad)} for profile {profile}: checks are {', '.join(known)}")
    rows: list[CheckRow] = []
    for host, report in reports.items():
        rows += evaluate_host({"inventory_hostname": host, **report}, chosen, kube_proxy_mode=kube_proxy_mode,
                              cluster_running=cluster_running)
    for host, message in (unreachable or {}).items():
        first = (message or "unreachable").splitlines()[0][:200]
        rows.append(CheckRow(host, "reachable", FAIL, first, "SSH + Python"))
    waived: list[CheckRow] = []
    final: list[CheckRow] = []
    for r in rows:
        if r.status == FAIL and r.check in waivers:
            r = CheckRow(r.node, r.check, WAIVED, r.seen, r.required, waived_by=r.check)
            waived.append(r)
        final.append(r)
    return PreflightReport(profile, final, tuple(waivers), waived)


def modules_to_probe(profiles: Iterable[str] = tuple(PROFILES)) -> list[str]:
    return sorted({m for p in profiles for m in PROFILES[p].probe_modules})
