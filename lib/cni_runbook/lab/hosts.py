"""The lab's "hosts": one network + mount + UTS namespace per node, on a lab bridge.

Each node gets
- a network namespace ``cnilab<i>-<node>`` with ``eth0`` (its address on the bridge
  ``cnilab<i>``) and a default route via the bridge's host address,
- a persistent mount namespace (bind-mounted file under ``<state>/ns``) in which the
  node-specific folders are bind-mounted over the standard paths (``/var/lib/kubelet``,
  ``/etc/cni``, ``/opt/cni``, ``/var/lib/containerd`` ...), so DaemonSets that mount
  host paths see that node's files, exactly as on a real host,
- a UTS namespace with its own hostname,
- a cgroup parent ``/cnilab<i>/<node>`` in every cgroup v1 hierarchy (the kubelet's cgroupRoot).

Processes enter a node with ``nsenter`` (not ``ip netns exec``, which remounts /sys
and hides the cgroup mounts from runc).

On the host, two iptables rules keep lab traffic on the bridge: bridged frames
between nodes are accepted, anything from the bridge to another interface is dropped.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from .config import LabConfig, Node
from .sysutil import LabError, quiet, run

#: node-local folder name -> path it is mounted over inside the node's mount namespace.
NODE_MOUNTS: dict[str, str] = {
    "etc-kubernetes": "/etc/kubernetes",
    "etc-containerd": "/etc/containerd",
    "etc-cni": "/etc/cni",
    "opt-cni": "/opt/cni",
    "var-lib-cni": "/var/lib/cni",
    "var-lib-containerd": "/var/lib/containerd",
    "run-containerd": "/run/containerd",
    "var-lib-kubelet": "/var/lib/kubelet",
    "var-log-pods": "/var/log/pods",
    "var-log-containers": "/var/log/containers",
    "run-netns": "/run/netns",
    "run-flannel": "/run/flannel",  # flanneld's subnet.env, read by the flannel CNI plugin: per node
}
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd")

_FORWARD_RULES = (
    ["-i", "{br}", "-o", "{br}", "-j", "ACCEPT", "-m", "comment", "--comment", "{br}: bridged node traffic"],
    ["-i", "{br}", "!", "-o", "{br}", "-j", "DROP", "-m", "comment", "--comment", "{br}: keep lab traffic on the lab bridge"],
    ["-o", "{br}", "!", "-i", "{br}", "-j", "DROP", "-m", "comment", "--comment", "{br}: nothing routed into the lab"],
)


def nsenter_prefix(cfg: LabConfig, node: Node) -> list[str]:
    """argv prefix that runs a command inside ``node`` (network, mount and UTS namespaces)."""
    ns = cfg.ns_dir
    return [
        "nsenter", f"--net=/var/run/netns/{node.netns}",
        f"--mount={ns / (node.name + '.mnt')}", f"--uts={ns / (node.name + '.uts')}", "--",
    ]


def _rules(cfg: LabConfig) -> list[list[str]]:
    return [[a.format(br=cfg.bridge) for a in rule] for rule in _FORWARD_RULES]


#: Host folders the labs created as mount points (shared by every lab instance of this boot).
CREATED_DIRS_FILE = Path("/run/cni-runbook-lab/created-host-dirs.json")


def _created_dirs_file(cfg: LabConfig) -> Path:
    CREATED_DIRS_FILE.parent.mkdir(parents=True, exist_ok=True)
    return CREATED_DIRS_FILE


def other_labs_running(cfg: LabConfig) -> list[str]:
    """Network namespaces of other lab instances that still exist on this machine."""
    netns = Path("/var/run/netns")
    if not netns.is_dir():
        return []
    return sorted(p.name for p in netns.iterdir()
                  if p.name.startswith("cnilab") and not p.name.startswith(f"{cfg.name}-"))


def _link_exists(name: str) -> bool:
    return quiet(["ip", "link", "show", name])


def create_bridge(cfg: LabConfig) -> None:
    if not _link_exists(cfg.bridge):
        run(["ip", "link", "add", cfg.bridge, "type", "bridge"])
    run(["ip", "addr", "replace", f"{cfg.gateway}/{cfg.network.prefixlen}", "dev", cfg.bridge])
    run(["ip", "link", "set", cfg.bridge, "up"])
    for rule in _rules(cfg):
        if not quiet(["iptables", "-C", "FORWARD", *rule]):
            run(["iptables", "-I", "FORWARD", "1", *rule])


def _ensure_ns_dir(cfg: LabConfig) -> None:
    ns = cfg.ns_dir
    ns.mkdir(parents=True, exist_ok=True)
    if not quiet(["mountpoint", "-q", str(ns)]):
        run(["mount", "--bind", str(ns), str(ns)])
        run(["mount", "--make-private", str(ns)])


def _record_created_dirs(cfg: LabConfig, paths: list[str]) -> None:
    f = _created_dirs_file(cfg)
    known = set(json.loads(f.read_text())) if f.exists() else set()
    known.update(paths)
    f.write_text(json.dumps(sorted(known)))


def _cgroup_dirs(node: Node) -> list[Path]:
    return [CGROUP_ROOT / c / node.lab / node.name for c in CGROUP_CONTROLLERS if (CGROUP_ROOT / c).is_dir()]


def _create_cgroups(node: Node) -> None:
    for d in _cgroup_dirs(node):
        d.mkdir(parents=True, exist_ok=True)
        if d.parts[-3] == "cpuset":
            for parent in (d.parent, d):
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (parent / knob).read_text().strip():
                        (parent / knob).write_text((parent.parent / knob).read_text())


def create_node(cfg: LabConfig, node: Node) -> None:
    """Create the node's namespaces, veth, address, routes, mounts and cgroups."""
    if not quiet(["ip", "netns", "pids", node.netns]):
        run(["ip", "netns", "add", node.netns])
    if not _link_exists(node.host_veth):
        run(["ip", "link", "add", node.host_veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns])
    run(["ip", "link", "set", node.host_veth, "master", cfg.bridge, "up"])
    ns = ["ip", "-n", node.netns]
    run([*ns, "link", "set", "lo", "up"])
    run([*ns, "addr", "replace", f"{node.ip}/{cfg.network.prefixlen}", "dev", "eth0"])
    run([*ns, "link", "set", "eth0", "up"])
    run([*ns, "route", "replace", "default", "via", str(cfg.gateway)])
    for key, value in (("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1")):
        run(["ip", "netns", "exec", node.netns, "sysctl", "-qw", f"{key}={value}"])

    _ensure_ns_dir(cfg)
    mnt, uts = cfg.ns_dir / f"{node.name}.mnt", cfg.ns_dir / f"{node.name}.uts"
    if not (quiet(["mountpoint", "-q", str(mnt)]) and quiet(["mountpoint", "-q", str(uts)])):
        node_dir = cfg.node_dir(node)
        created = []
        for local, target in NODE_MOUNTS.items():
            (node_dir / local).mkdir(parents=True, exist_ok=True)
            if not os.path.isdir(target):
                created.append(target)
                Path(target).mkdir(parents=True)
        _record_created_dirs(cfg, created)
        hosts = node_dir / "hosts"
        lines = ["127.0.0.1 localhost", f"{cfg.gateway} {cfg.name}-host"]
        lines += [f"{n.ip} {n.name}" for n in cfg.nodes]
        hosts.write_text("\n".join(lines) + "\n")
        # The new mount namespace starts as a copy of the host's, including the namespace
        # files other labs (and `ip netns`) have bind-mounted. Drop those copies first: a
        # copy would keep another lab's namespaces alive after that lab is taken down.
        drop_ns_copies = ("awk '{for (i = 7; $i != \"-\"; i++); if ($(i + 1) == \"nsfs\") print $5}' "
                          "/proc/self/mountinfo | sort -r | while read -r m; do umount -l \"$m\"; done")
        script = [drop_ns_copies, f"hostname {node.name}"]
        script += [f"mount --bind {node_dir / local} {target}" for local, target in NODE_MOUNTS.items()]
        script.append(f"mount --bind {hosts} /etc/hosts")
        mnt.touch()
        uts.touch()
        run(["unshare", f"--mount={mnt}", f"--uts={uts}", "--propagation", "private", "--",
             "sh", "-ec", "; ".join(script)])
    _create_cgroups(node)


def _pids_in_node(cfg: LabConfig, node: Node) -> set[int]:
    """Processes living in the node: in its netns or mount ns, or in its cgroups."""
    targets = set()
    for path in (Path("/var/run/netns") / node.netns, cfg.ns_dir / f"{node.name}.mnt"):
        try:
            targets.add(os.stat(path).st_ino)
        except OSError:
            pass
    pids: set[int] = set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        for kind in ("net", "mnt"):
            try:
                if os.stat(entry / "ns" / kind).st_ino in targets:
                    pids.add(int(entry.name))
            except OSError:
                pass
    for d in _cgroup_dirs(node):
        for procs in d.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    pids.discard(me)
    return pids


def kill_node_processes(cfg: LabConfig, node: Node, grace: float = 3.0) -> int:
    """TERM then KILL every process left in the node; returns how many were found."""
    pids = _pids_in_node(cfg, node)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = {p for p in pids if Path(f"/proc/{p}").exists() and alive(p)}
            if not pids:
                return 0
            time.sleep(0.1)
    return len(pids)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _remove_cgroups(node: Node) -> None:
    for d in _cgroup_dirs(node):
        if not d.exists():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            quiet_rmdir(sub)
        quiet_rmdir(d)
        quiet_rmdir(d.parent)  # /cnilab<i>, once the last node is gone


def quiet_rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def delete_node(cfg: LabConfig, node: Node) -> None:
    kill_node_processes(cfg, node)
    for f in (cfg.ns_dir / f"{node.name}.mnt", cfg.ns_dir / f"{node.name}.uts"):
        quiet(["umount", str(f)])
        f.unlink(missing_ok=True)
    quiet(["ip", "link", "del", node.host_veth])
    quiet(["ip", "netns", "del", node.netns])
    _remove_cgroups(node)


def delete_all(cfg: LabConfig) -> None:
    """Remove every node, the bridge, the host iptables rules and the ns mount."""
    for node in cfg.nodes:
        delete_node(cfg, node)
    for rule in _rules(cfg):
        while quiet(["iptables", "-D", "FORWARD", *rule]):
            pass
    quiet(["ip", "link", "del", cfg.bridge])
    if cfg.ns_dir.exists():
        quiet(["umount", str(cfg.ns_dir)])
    f = _created_dirs_file(cfg)
    # Removing a folder that is a mount point in another mount namespace detaches that
    # mount there: only the last lab standing may remove the shared mount-point folders.
    if f.exists() and not other_labs_running(cfg):
        for target in sorted(json.loads(f.read_text()), key=len, reverse=True):
            try:
                os.rmdir(target)
            except OSError:
                pass
        f.unlink()


def leftovers(cfg: LabConfig) -> list[str]:
    """Everything of the lab still present on the host (empty list when clean)."""
    found = []
    if _link_exists(cfg.bridge):
        found.append(f"bridge {cfg.bridge}")
    for node in cfg.nodes:
        if Path(f"/var/run/netns/{node.netns}").exists():
            found.append(f"network namespace {node.netns}")
        if _link_exists(node.host_veth):
            found.append(f"veth {node.host_veth}")
        found += [f"cgroup {d}" for d in _cgroup_dirs(node) if d.exists()]
        found += [f"process {p}" for p in sorted(_pids_in_node(cfg, node))]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point == str(cfg.state_dir) or mount_point.startswith(f"{cfg.state_dir}/"):
            found.append(f"mount {mount_point}")
    rules = run(["iptables", "-S", "FORWARD"], check=False).stdout
    found += [f"iptables rule: {r}" for r in rules.splitlines() if f"{cfg.bridge}:" in r]
    return found


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll ``predicate`` until it returns a truthy value, or raise LabError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
