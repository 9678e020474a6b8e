"""Configuration files and command lines of every lab component.

Two groups, started in two steps by the supervisor:
- host components: one sshd per node (the "bare hosts" an installer reaches over SSH);
- cluster components: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
  in the control-plane node, and containerd, kubelet and kube-proxy in every node.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from . import pki
from .config import REGISTRY_NAME, LabConfig, Node, build_dir
from .images import image_ref
from .hosts import nsenter_prefix
from .sysutil import run

LEGACY_IPTABLES = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")


def _component(name: str, argv: list[str], env: dict[str, str] | None = None) -> dict:
    return {"name": name, "argv": argv, "env": env or {}}


def legacy_iptables_dir(cfg: LabConfig) -> Path:
    """A PATH entry where ``iptables`` means iptables-legacy (the lab's one backend)."""
    d = cfg.state_dir / "bin-legacy"
    d.mkdir(parents=True, exist_ok=True)
    for name in LEGACY_IPTABLES:
        link = d / name
        if not link.is_symlink():
            link.symlink_to(f"/usr/sbin/{name.replace('tables', 'tables-legacy', 1)}")
    return d


def _path_env(cfg: LabConfig) -> dict[str, str]:
    return {"PATH": f"{legacy_iptables_dir(cfg)}:{build_dir()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


# --- host components -------------------------------------------------------------
def ssh_setup(cfg: LabConfig) -> None:
    """Operator key pair (for Ansible) and one host key per node."""
    key = cfg.ssh_key
    key.parent.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cni-runbook-lab", "-f", str(key)])
    (key.parent / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (key.parent / "authorized_keys").chmod(0o600)
    for node in cfg.nodes:
        hostkey = cfg.node_dir(node) / "ssh_host_ed25519_key"
        hostkey.parent.mkdir(parents=True, exist_ok=True)
        if not hostkey.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)])
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def sshd_component(cfg: LabConfig, node: Node) -> dict:
    d = cfg.node_dir(node)
    conf = d / "sshd_config"
    conf.write_text(
        "\n".join(
            [
                f"ListenAddress {node.ip}:22",
                f"HostKey {d / 'ssh_host_ed25519_key'}",
                f"AuthorizedKeysFile {cfg.ssh_key.parent / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                f"PidFile {d / 'sshd.pid'}",
                "Subsystem sftp internal-sftp",
                "AcceptEnv LANG LC_*",
            ]
        )
        + "\n"
    )
    return _component(f"sshd-{node.name}", [*nsenter_prefix(cfg, node), "/usr/sbin/sshd", "-D", "-e", "-f", str(conf)])


def host_components(cfg: LabConfig) -> list[dict]:
    ssh_setup(cfg)
    return [sshd_component(cfg, n) for n in cfg.nodes]


# --- cluster components ------------------------------------------------------------
def _bin(name: str) -> str:
    return str(build_dir() / name)


def control_plane_components(cfg: LabConfig, certs: dict[str, pki.KeyPair]) -> list[dict]:
    cp = cfg.control_plane
    p = cfg.pki_dir
    enter = nsenter_prefix(cfg, cp)
    conf = cfg.state_dir / "conf"
    for user, pair in (("controller-manager", "controller-manager"), ("scheduler", "scheduler")):
        pki.write_kubeconfig(conf / f"{user}.conf", cfg.api_server, p / "ca.crt", certs[pair], f"system:kube-{user}")
    etcd_dir = cfg.state_dir / "etcd"
    etcd_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    etcd = [
        _bin("etcd"), "--name", cp.name, "--data-dir", str(etcd_dir),
        "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
        "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", f"{cp.name}=http://127.0.0.1:2380",
        # A throwaway lab cluster on a shared disk: durability is not worth the fsync latency.
        "--unsafe-no-fsync", "--quota-backend-bytes", str(2 * 1024**3),
    ]
    apiserver = [
        _bin("kube-apiserver"),
        "--etcd-servers", "http://127.0.0.1:2379",
        "--advertise-address", str(cp.ip), "--secure-port", "6443",
        "--service-cluster-ip-range", str(cfg.service_cidr),
        "--client-ca-file", str(p / "ca.crt"),
        "--tls-cert-file", str(p / "apiserver.crt"), "--tls-private-key-file", str(p / "apiserver.key"),
        "--kubelet-client-certificate", str(p / "apiserver-kubelet-client.crt"),
        "--kubelet-client-key", str(p / "apiserver-kubelet-client.key"),
        "--kubelet-certificate-authority", str(p / "ca.crt"),
        "--kubelet-preferred-address-types", "InternalIP",
        "--service-account-issuer", f"https://kubernetes.default.svc.{cfg.cluster_domain}",
        "--service-account-key-file", str(p / "sa.pub"),
        "--service-account-signing-key-file", str(p / "sa.key"),
        "--authorization-mode", "Node,RBAC",
        "--enable-admission-plugins", "NodeRestriction",
        "--allow-privileged=true",
        "--requestheader-client-ca-file", str(p / "front-proxy-ca.crt"),
        "--requestheader-allowed-names", "front-proxy-client",
        "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
        "--requestheader-group-headers", "X-Remote-Group",
        "--requestheader-username-headers", "X-Remote-User",
        "--proxy-client-cert-file", str(p / "front-proxy-client.crt"),
        "--proxy-client-key-file", str(p / "front-proxy-client.key"),
        "--profiling=false",
    ]
    controller_manager = [
        _bin("kube-controller-manager"),
        "--kubeconfig", str(conf / "controller-manager.conf"),
        "--authentication-kubeconfig", str(conf / "controller-manager.conf"),
        "--authorization-kubeconfig", str(conf / "controller-manager.conf"),
        "--bind-address", "127.0.0.1", "--leader-elect=false",
        "--cluster-signing-cert-file", str(p / "ca.crt"), "--cluster-signing-key-file", str(p / "ca.key"),
        "--root-ca-file", str(p / "ca.crt"),
        "--service-account-private-key-file", str(p / "sa.key"),
        "--use-service-account-credentials=true",
        "--allocate-node-cidrs=true", "--cluster-cidr", str(cfg.pod_cidr),
        "--node-cidr-mask-size", str(cfg.node_prefix),
        "--service-cluster-ip-range", str(cfg.service_cidr),
        "--controllers", "*,bootstrapsigner,tokencleaner",
        "--profiling=false",
    ]
    scheduler = [
        _bin("kube-scheduler"),
        "--kubeconfig", str(conf / "scheduler.conf"),
        "--authentication-kubeconfig", str(conf / "scheduler.conf"),
        "--authorization-kubeconfig", str(conf / "scheduler.conf"),
        "--bind-address", "127.0.0.1", "--leader-elect=false", "--profiling=false",
    ]
    env = _path_env(cfg)
    return [
        _component("etcd", [*enter, *etcd], env),
        _component("kube-apiserver", [*enter, *apiserver], env),
        _component("kube-controller-manager", [*enter, *controller_manager], env),
        _component("kube-scheduler", [*enter, *scheduler], env),
    ]


def _containerd_config(cfg: LabConfig) -> str:
    return f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  # These machines withhold CAP_SYS_RESOURCE even from root, so no process may lower
  # its oom_score_adj below 0; without this runc fails with "can't get final child's PID".
  restrict_oom_score_adj = true
  sandbox_image = "{image_ref('pause')}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"""


def _registry_hosts(cfg: LabConfig) -> str:
    return f"""server = "http://{cfg.registry_addr}"

[host."http://{cfg.registry_addr}"]
  capabilities = ["pull", "resolve"]
"""


def _kubelet_config(cfg: LabConfig, node: Node) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": str(node.ip),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cfg.cgroup_parent}/{node.name}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "clusterDNS": [str(cfg.cluster_dns)],
        "clusterDomain": cfg.cluster_domain,
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        # Kubernetes 1.35 refuses cgroup v1 unless told otherwise; this machine has v1.
        "failCgroupV1": False,
        "failSwapOn": False,
        "tlsCertFile": "/etc/kubernetes/pki/kubelet.crt",
        "tlsPrivateKeyFile": "/etc/kubernetes/pki/kubelet.key",
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # Three kubelets share one disk with other work: do not evict over shared usage.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "maxPods": 110,
    }


def _kube_proxy_config(cfg: LabConfig, node: Node) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": "/etc/kubernetes/kube-proxy.conf"},
        "mode": "iptables",
        "clusterCIDR": str(cfg.pod_cidr),
        "hostnameOverride": node.name,
        "bindAddress": str(node.ip),
        "healthzBindAddress": f"{node.ip}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Nodes share one kernel: leave the global conntrack table size alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def node_components(cfg: LabConfig, node: Node, certs: dict[str, pki.KeyPair]) -> list[dict]:
    d = cfg.node_dir(node)
    etc_k8s = d / "etc-kubernetes"
    (etc_k8s / "pki").mkdir(parents=True, exist_ok=True)
    shutil.copy(cfg.pki_dir / "ca.crt", etc_k8s / "pki" / "ca.crt")
    kubelet_pair = certs[f"kubelet-{node.name}"]
    for src, dst in ((kubelet_pair.cert, "kubelet.crt"), (kubelet_pair.key, "kubelet.key")):
        shutil.copy(src, etc_k8s / "pki" / dst)
        (etc_k8s / "pki" / dst).chmod(0o600 if dst.endswith(".key") else 0o644)
    pki.write_kubeconfig(etc_k8s / "kubelet.conf", cfg.api_server, cfg.pki_dir / "ca.crt", kubelet_pair, f"system:node:{node.name}")
    pki.write_kubeconfig(etc_k8s / "kube-proxy.conf", cfg.api_server, cfg.pki_dir / "ca.crt", certs["kube-proxy"], "system:kube-proxy")
    (etc_k8s / "kubelet-config.yaml").write_text(yaml.safe_dump(_kubelet_config(cfg, node), sort_keys=False))
    (etc_k8s / "kube-proxy.yaml").write_text(yaml.safe_dump(_kube_proxy_config(cfg, node), sort_keys=False))
    etc_ctr = d / "etc-containerd"
    (etc_ctr / "certs.d" / REGISTRY_NAME).mkdir(parents=True, exist_ok=True)
    (etc_ctr / "config.toml").write_text(_containerd_config(cfg))
    (etc_ctr / "certs.d" / REGISTRY_NAME / "hosts.toml").write_text(_registry_hosts(cfg))
    (d / "etc-cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (d / "opt-cni" / "bin").mkdir(parents=True, exist_ok=True)

    enter = nsenter_prefix(cfg, node)
    env = _path_env(cfg)
    return [
        _component(f"containerd-{node.name}", [*enter, "containerd", "--config", "/etc/containerd/config.toml"], env),
        _component(
            f"kubelet-{node.name}",
            [*enter, _bin("kubelet"), "--config", "/etc/kubernetes/kubelet-config.yaml",
             "--kubeconfig", "/etc/kubernetes/kubelet.conf", "--hostname-override", node.name,
             "--node-ip", str(node.ip)],
            env,
        ),
        _component(f"kube-proxy-{node.name}", [*enter, _bin("kube-proxy"), "--config", "/etc/kubernetes/kube-proxy.yaml"], env),
    ]


def cluster_components(cfg: LabConfig) -> list[dict]:
    certs = pki.generate(cfg)
    pki.write_kubeconfig(cfg.admin_kubeconfig, cfg.api_server, cfg.pki_dir / "ca.crt", certs["admin"], "cnilab-admin")
    comps = control_plane_components(cfg, certs)
    for node in cfg.nodes:
        comps += node_components(cfg, node, certs)
    return comps
