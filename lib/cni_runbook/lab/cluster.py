"""Bring the local lab up and down, and report on it.

``up`` produces what Kubespray leaves with ``kube_network_plugin: none``: the
control plane running, every node registered and NotReady because no CNI is
installed, kube-proxy running on every node and CoreDNS deployed but Pending.
``up(hosts_only=True)`` stops after the bare hosts (namespaces + sshd), which is
what an installer like Kubespray starts from.

``up(cni="flannel")`` prepares the lab for flannel instead of the default lab CNI
(kube-router): the flannel images are published too, and every node's /opt/cni/bin gets the
reference CNI plugins flannel delegates to (bridge, host-local, portmap, loopback, bandwidth),
as Kubespray's ``kube_network_plugin: cni`` leaves a host. Installing flannel itself is stage
02's job (from the vendor's manifest), or :func:`install_cni` with that manifest.
"""

from __future__ import annotations

import json
import os
import shutil
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


#: The CNIs a lab can be prepared for (``up(cni=...)``); kube-router is the default lab CNI.
LAB_CNIS = ("kube-router", "flannel")


def lab_cni(profile: str) -> str:
    """The lab CNI a run with ``cni.profile`` needs the lab prepared for."""
    return "flannel" if profile == "flannel" else "kube-router"


def _check_cni(cni: str) -> None:
    if cni not in LAB_CNIS:
        raise LabError(f"unknown lab CNI {cni!r}; expected one of {', '.join(LAB_CNIS)}")


def install_reference_plugins(cfg: LabConfig, progress: Progress = print) -> list[str]:
    """Put the reference CNI plugins into every node's /opt/cni/bin (what Kubespray's
    ``kube_network_plugin: cni`` does); returns the plugin names. Idempotent."""
    from .images import reference_cni_plugins

    plugins = reference_cni_plugins(progress)
    for node in cfg.nodes:
        bin_dir = cfg.node_dir(node) / "opt-cni" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name, source in plugins.items():
            target = bin_dir / name
            if target.exists() and target.stat().st_size == source.stat().st_size and \
                    target.read_bytes() == source.read_bytes():
                continue
            tmp = bin_dir / f".{name}.tmp"
            shutil.copyfile(source, tmp)
            tmp.chmod(0o755)
            tmp.replace(target)
    progress(f"[lab] reference CNI plugins in /opt/cni/bin of every node: {', '.join(sorted(plugins))}")
    return sorted(plugins)


def prepare_cni(cfg: LabConfig, cni: str, progress: Progress = print) -> None:
    """What a lab that is already up needs before ``cni`` can be installed (images, node plugins)."""
    _check_cni(cni)
    if cni == "kube-router":
        return  # its images are always published; it brings its own plugins
    images_step.publish(cfg, progress, cni=cni)
    install_reference_plugins(cfg, progress)


def up(cfg: LabConfig | None = None, hosts_only: bool = False, progress: Progress = print,
       timeout: float = 180, cni: str = "kube-router") -> str:
    """Bring the lab to the requested phase, prepared for ``cni``; returns a one-line summary."""
    cfg = cfg or LabConfig()
    _check_cni(cni)
    current = phase(cfg)
    wanted = "hosts" if hosts_only else "cluster"
    if current == "cluster" or current == wanted:
        if cni != "kube-router":
            prepare_cni(cfg, cni, progress)
        return f"lab already up ({current}); nothing to do" + (f" (prepared for {cni})" if cni != "kube-router" else "")
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
        images_step.publish(cfg, progress, cni=cni)
        if cni != "kube-router":
            install_reference_plugins(cfg, progress)
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


def install_cni(cfg: LabConfig | None = None, progress: Progress = print, timeout: float = 240,
                cni: str = "kube-router", manifest: str | Path | None = None) -> list:
    """Install a lab CNI through the apply engine and wait for a working network.

    ``kube-router``: the lab's own manifest. ``flannel``: the vendor's ``kube-flannel.yml`` given
    as ``manifest``, rendered by the flannel profile for the lab (images from the lab registry,
    Network = the lab's pod CIDR, bandwidth chained). Stage 02 does the same through the runbook
    (with rendering records and rollback); this shortcut serves the lab's own tests and
    ``cni-runbook lab up --with-cni``.
    """
    from ..cni.flannel import render_flannel
    from ..cni.manifests import Manifest
    from ..kube.wait import nodes_ready, rollout
    from .images import LAB_REGISTRY

    cfg = cfg or LabConfig()
    _check_cni(cni)
    if cni == "kube-router":
        text, agent = (MANIFESTS / "kube-router.yaml").read_text(), ("kube-system", "kube-router")
    else:
        if manifest is None or not Path(manifest).is_file():
            raise LabError(f"installing flannel needs its vendor manifest (kube-flannel.yml): {manifest!r} is not a file")
        vendor = Manifest(Path(manifest).read_text(), str(manifest))
        text = render_flannel(vendor, image_registry=f"{LAB_REGISTRY}/flannel-io", network=str(cfg.pod_cidr),
                              settings={"chain_bandwidth": True}).rendered.text
        agent = ("kube-flannel", "kube-flannel-ds")
    kube = Kube.from_kubeconfig(cfg.admin_kubeconfig)
    try:
        objects = [o for o in yaml.safe_load_all(text) if o]
        applied = Applier(kube, default_namespace="kube-system").apply(objects)
        rollout(kube, "DaemonSet", agent[0], agent[1], timeout=timeout, progress=progress)
        nodes_ready(kube, expected=len(cfg.nodes), timeout=timeout, progress=progress)
        rollout(kube, "Deployment", "kube-system", "coredns", timeout=timeout, progress=progress)
        return applied
    finally:
        kube.close()
