"""Bring the local lab up and down, and report on it.

``up`` produces what Kubespray leaves with ``kube_network_plugin: none``: the
control plane running, every node registered and NotReady because no CNI is
installed, kube-proxy running on every node and CoreDNS deployed but Pending.
``up(hosts_only=True)`` stops after the bare hosts (namespaces + sshd), which is
what an installer like Kubespray starts from.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..kube import Kube
from ..kube.apply import Applier
from ..kube.wait import watch_until
from . import components, hosts, images_step
from .build import build
from .config import LabConfig
from .sysutil import LabError, missing_prerequisites

Progress = Callable[[str], None]


@dataclass
class ComponentStatus:
    name: str
    state: str
    pid: int | None
    restarts: int
    log: str


def _supervisor_pid(cfg: LabConfig) -> int | None:
    f = cfg.state_dir / "supervisor.pid"
    if not f.exists():
        return None
    pid = int(f.read_text())
    try:  # reap it if it was our own child (started by an earlier `up` in this process)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return pid if hosts.alive(pid) else None


def component_status(cfg: LabConfig) -> list[ComponentStatus]:
    f = cfg.state_dir / "status.json"
    if _supervisor_pid(cfg) is None or not f.exists():
        return []
    data = json.loads(f.read_text())
    return [ComponentStatus(c["name"], c["state"], c["pid"], c["restarts"], c["log"]) for c in data["components"]]


def phase(cfg: LabConfig) -> str:
    """"down", "hosts" (bare hosts only) or "cluster"."""
    if _supervisor_pid(cfg) is None:
        return "down"
    spec = cfg.state_dir / "components.json"
    names = [c["name"] for c in json.loads(spec.read_text())] if spec.exists() else []
    return "cluster" if "kube-apiserver" in names else "hosts"


def _write_components(cfg: LabConfig, comps: list[dict]) -> None:
    (cfg.state_dir / "components.json").write_text(json.dumps(comps, indent=1))


def _start_or_reload_supervisor(cfg: LabConfig) -> None:
    pid = _supervisor_pid(cfg)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        return
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    log = open(cfg.logs_dir / "supervisor.log", "ab")
    lib_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": lib_root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cni_runbook.lab.supervisor", str(cfg.state_dir)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
    )
    (cfg.state_dir / "supervisor.pid").write_text(str(proc.pid))


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _api_get(cfg: LabConfig, path: str, timeout: float = 3) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(cfg.pki_dir / "ca.crt"))
    ctx.load_cert_chain(str(cfg.pki_dir / "admin.crt"), str(cfg.pki_dir / "admin.key"))
    try:
        with urllib.request.urlopen(f"{cfg.api_server}{path}", context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def registered_nodes(cfg: LabConfig) -> list[dict]:
    code, body = _api_get(cfg, "/api/v1/nodes")
    return json.loads(body)["items"] if code == 200 else []


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab creates network namespaces, mounts and cgroups: run it as root")
    missing = missing_prerequisites([c for c in components_commands()])
    if missing:
        raise LabError("missing prerequisites: " + "; ".join(missing))


def components_commands() -> list[str]:
    return ["ip", "nsenter", "unshare", "mount", "containerd", "runc", "iptables-legacy",
            "ipset", "conntrack", "/usr/sbin/sshd", "ssh-keygen", "docker-registry"]


def up(cfg: LabConfig | None = None, hosts_only: bool = False, progress: Progress = print,
       timeout: float = 180) -> str:
    """Bring the lab to the requested phase; returns a one-line summary."""
    cfg = cfg or LabConfig()
    current = phase(cfg)
    wanted = "hosts" if hosts_only else "cluster"
    if current == "cluster" or current == wanted:
        return f"lab already up ({current}); nothing to do"
    _check_prerequisites()
    started = time.monotonic()
    if current == "down":
        stale = hosts.leftovers(cfg)
        if stale:  # e.g. the machine's processes were killed without `lab down`
            progress(f"[lab] removing what an earlier lab left behind ({len(stale)} items)")
            down(cfg, progress=lambda _m: None)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        build(progress)
        progress("[lab] creating hosts: bridge, network/mount/UTS namespaces, cgroups")
        hosts.create_bridge(cfg)
        for node in cfg.nodes:
            hosts.create_node(cfg, node)
        comps = [images_step.registry_component(cfg), *components.host_components(cfg)]
        _write_components(cfg, comps)
        _start_or_reload_supervisor(cfg)
        for node in cfg.nodes:
            hosts.wait_for(lambda n=node: _port_open(str(n.ip), 22), 30, f"sshd on {node.name}")
        progress(f"[lab] hosts up: {', '.join(f'{n.name} ({n.ip})' for n in cfg.nodes)}")
        images_step.publish(cfg, progress)
        if wanted == "hosts":
            return f"lab hosts up in {time.monotonic() - started:.0f}s"
        comps += components.cluster_components(cfg)
        _write_components(cfg, comps)
        _start_or_reload_supervisor(cfg)
        progress("[lab] starting control plane and node agents")
        hosts.wait_for(lambda: _api_get(cfg, "/readyz")[0] == 200, timeout, "kube-apiserver /readyz")
        progress(f"[lab] API server ready at {cfg.api_server}")
        hosts.wait_for(lambda: len([n for n in registered_nodes(cfg) if n["spec"].get("podCIDR")]) == len(cfg.nodes),
                       timeout, "all nodes to register and get a podCIDR")
        elapsed = time.monotonic() - started
        progress(f"[lab] {len(cfg.nodes)} nodes registered after {elapsed:.0f}s")
        _install_addons(cfg, progress)
        return f"lab up in {elapsed:.0f}s: {len(cfg.nodes)} nodes registered, no CNI installed"
    except BaseException:
        progress("[lab] up failed: cleaning up what was started")
        down(cfg, progress=lambda _m: None)
        raise


MANIFESTS = Path(__file__).parent / "manifests"


def _install_addons(cfg: LabConfig, progress: Progress) -> None:
    """What Kubespray does after kubeadm with kube_network_plugin none: role labels and CoreDNS."""
    kube = Kube.from_kubeconfig(cfg.admin_kubeconfig)
    try:
        kube.core.patch_node(cfg.control_plane.name,
                             {"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}})
        objects = [o for o in yaml.safe_load_all((MANIFESTS / "coredns.yaml").read_text()) if o]
        Applier(kube, default_namespace="kube-system").apply(objects)
        replicas = next(o["spec"].get("replicas", 1) for o in objects if o["kind"] == "Deployment")
        watch_until(kube.core.list_namespaced_pod,
                    lambda pods: (len(pods) >= replicas, f"CoreDNS pods created: {len(pods)}/{replicas}"),
                    60, "CoreDNS pods to be created", namespace="kube-system", label_selector="k8s-app=kube-dns")
        progress("[lab] CoreDNS deployed (Pending until a CNI is installed)")
    finally:
        kube.close()


def down(cfg: LabConfig | None = None, progress: Progress = print) -> str:
    """Stop every component and remove every namespace, link, mount, cgroup and rule."""
    cfg = cfg or LabConfig()
    started = time.monotonic()
    pid = _supervisor_pid(cfg)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        hosts.wait_for(lambda: _supervisor_pid(cfg) is None, 15, "the lab supervisor to stop")
    for name in ("supervisor.pid", "components.json", "status.json"):
        (cfg.state_dir / name).unlink(missing_ok=True)
    hosts.delete_all(cfg)
    for node in cfg.nodes:
        _wipe(cfg.node_dir(node))
    _wipe(cfg.state_dir / "etcd")
    left = hosts.leftovers(cfg)
    if left:
        raise LabError("lab down left these behind: " + "; ".join(left))
    msg = f"lab down in {time.monotonic() - started:.1f}s; nothing left behind"
    progress(f"[lab] {msg}")
    return msg


def _wipe(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def node_summary(node: dict) -> tuple[str, str, str]:
    """(name, Ready status, reason/message) of a Node object."""
    ready = next((c for c in node["status"].get("conditions", []) if c["type"] == "Ready"), {})
    return node["metadata"]["name"], ready.get("status", "Unknown"), ready.get("message", "")


def status_text(cfg: LabConfig | None = None) -> str:
    cfg = cfg or LabConfig()
    current = phase(cfg)
    lines = [f"lab: {current}   state: {cfg.state_dir}"]
    if current == "down":
        return "\n".join(lines)
    lines.append(f"{'COMPONENT':<26} {'STATE':<11} {'PID':>7} {'RESTARTS':>8}  LOG")
    for c in component_status(cfg):
        lines.append(f"{c.name:<26} {c.state:<11} {c.pid or '-':>7} {c.restarts:>8}  {c.log}")
    if current == "cluster":
        lines.append(f"API server: {cfg.api_server}   kubeconfig: {cfg.admin_kubeconfig}")
        for name, ready, message in map(node_summary, registered_nodes(cfg)):
            lines.append(f"node {name:<10} Ready={ready:<6} {message[:90]}")
    return "\n".join(lines)


def install_cni(cfg: LabConfig | None = None, progress: Progress = print, timeout: float = 240) -> list:
    """Install the lab CNI (kube-router) through the apply engine and wait for a working network.

    Stage 02 does the same through the runbook (with rendering, records and rollback);
    this shortcut serves the lab's own tests and ``cni-runbook lab up --with-cni``.
    """
    from ..kube.wait import nodes_ready, rollout

    cfg = cfg or LabConfig()
    kube = Kube.from_kubeconfig(cfg.admin_kubeconfig)
    try:
        objects = [o for o in yaml.safe_load_all((MANIFESTS / "kube-router.yaml").read_text()) if o]
        applied = Applier(kube, default_namespace="kube-system").apply(objects)
        rollout(kube, "DaemonSet", "kube-system", "kube-router", timeout=timeout, progress=progress)
        nodes_ready(kube, expected=len(cfg.nodes), timeout=timeout, progress=progress)
        rollout(kube, "Deployment", "kube-system", "coredns", timeout=timeout, progress=progress)
        return applied
    finally:
        kube.close()
