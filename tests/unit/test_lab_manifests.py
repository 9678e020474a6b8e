"""The lab's add-on manifests: kube-router (the lab CNI) and CoreDNS as Kubespray deploys it."""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

from cni_runbook.lab import images

LAB_REGISTRY = "registry.cnilab.local:5000/"
SERVICE_CIDR = ipaddress.ip_network("10.233.0.0/18")
KUBE_ROUTER_BIN = images.build_cache_dir() / f"kube-router-{images.KUBE_ROUTER_VERSION}" / "bin" / "kube-router"


def _load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(images.manifest_path(name).read_text()) if doc]


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def _tolerates(tolerations: list[dict], key: str, effect: str) -> bool:
    """Kubernetes' toleration matching (ToleratesTaint) for a taint without value."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != effect:
            continue
        operator = t.get("operator", "Equal")
        if operator == "Exists" and (not t.get("key") or t["key"] == key):
            return True
        if operator == "Equal" and t.get("key") == key and not t.get("value"):
            return True
    return False


@pytest.fixture(scope="module")
def kube_router() -> list[dict]:
    return _load("kube-router")


@pytest.fixture(scope="module")
def coredns() -> list[dict]:
    return _load("coredns")


@pytest.mark.parametrize("name", ["kube-router", "coredns"])
def test_manifest_is_plain_kubernetes_yaml(name):
    text = images.manifest_path(name).read_text()
    # Kubespray's custom_cni renders manifests with Jinja: no template markup may appear
    assert not re.search(r"\{\{|\{%|\{#", text)
    for doc in _load(name):
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert doc["metadata"]["name"]
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "kube-system"


@pytest.mark.parametrize("name,image", [("kube-router", "kube-router"), ("coredns", "coredns")])
def test_every_image_comes_from_the_lab_registry(name, image):
    refs = {
        c["image"]
        for doc in _load(name)
        if doc["kind"] in ("DaemonSet", "Deployment")
        for c in _containers(_pod_spec(doc))
    }
    assert refs and all(ref.startswith(LAB_REGISTRY) for ref in refs)
    assert refs == {f"{LAB_REGISTRY}{images._REPOS[image]}:{images.image_tag(image)}"}
    for doc in _load(name):
        if doc["kind"] in ("DaemonSet", "Deployment"):
            assert all(c["imagePullPolicy"] == "IfNotPresent" for c in _containers(_pod_spec(doc)))


@pytest.mark.parametrize("name", ["kube-router", "coredns"])
def test_objects_validate_against_the_kubernetes_api_schema(name):
    """The official client's models forbid unknown fields and check types (what a typo'd
    field or a string port would fail on at the API server), without needing a cluster."""
    client = pytest.importorskip("kubernetes.client")
    for doc in _load(name):
        assert doc["apiVersion"] in ("v1", "apps/v1", "rbac.authorization.k8s.io/v1")
        getattr(client, "V1" + doc["kind"]).model_validate(doc)


def test_schema_validation_catches_a_misspelled_field():
    client = pytest.importorskip("kubernetes.client")
    service = _one(_load("coredns"), "Service")
    service["spec"]["clusterIp"] = service["spec"].pop("clusterIP")
    with pytest.raises(ValueError, match="clusterIp"):
        client.V1Service.model_validate(service)


def test_unknown_manifest_is_a_clear_error():
    with pytest.raises(KeyError, match="known: coredns, kube-router"):
        images.manifest_path("flannel")


# --- kube-router ---------------------------------------------------------------------------


def test_rbac_binds_the_daemonset_service_account(kube_router):
    ds = _one(kube_router, "DaemonSet", "kube-router")
    sa = _one(kube_router, "ServiceAccount", _pod_spec(ds)["serviceAccountName"])
    binding = _one(kube_router, "ClusterRoleBinding")
    role = _one(kube_router, "ClusterRole", binding["roleRef"]["name"])
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "kube-system"}
    assert binding["subjects"] == [subject]
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    for needed in [("", "nodes"), ("", "pods"), ("", "namespaces"), ("networking.k8s.io", "networkpolicies"),
                   ("discovery.k8s.io", "endpointslices"), ("coordination.k8s.io", "leases")]:
        assert needed in granted


def test_daemonset_runs_everywhere_including_not_ready_nodes(kube_router):
    spec = _pod_spec(_one(kube_router, "DaemonSet", "kube-router"))
    tolerations = spec["tolerations"]
    for key, effect in [
        ("node.kubernetes.io/not-ready", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/network-unavailable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node-role.kubernetes.io/control-plane", "NoSchedule"),
    ]:
        assert _tolerates(tolerations, key, effect), f"does not tolerate {key}:{effect}"
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"


def test_kube_router_container_flags_probes_and_api_access(kube_router):
    spec = _pod_spec(_one(kube_router, "DaemonSet", "kube-router"))
    (main,) = spec["containers"]
    required = ("--run-router=true", "--run-firewall=true", "--run-service-proxy=false", "--bgp-graceful-restart=true")
    assert set(required) <= set(main["args"])
    assert main["securityContext"]["privileged"] is True
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": 20244}
    env = {e["name"]: e.get("value") for e in main["env"]}
    # in-cluster config through the `kubernetes` Service (kube-proxy runs before any CNI):
    # no lab address baked in, so parallel labs (CNI_RUNBOOK_LAB_INDEX) share the manifest
    assert "KUBERNETES_SERVICE_HOST" not in env
    assert "10.99." not in yaml.safe_dump_all(kube_router)
    assert env["KUBE_ROUTER_CNI_CONF_FILE"] == "/etc/cni/net.d/10-kuberouter.conflist"
    assert "NODE_NAME" in env


def test_mounts_are_backed_by_volumes(kube_router):
    spec = _pod_spec(_one(kube_router, "DaemonSet", "kube-router"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for c in _containers(spec) for m in c["volumeMounts"]}
    for mount in mounts.values():
        assert mount["name"] in volumes
    host_paths = {m: volumes[mounts[m]["name"]].get("hostPath", {}).get("path") for m in mounts}
    assert host_paths["/lib/modules"] == "/lib/modules" and mounts["/lib/modules"]["readOnly"] is True
    assert host_paths["/run/xtables.lock"] == "/run/xtables.lock"
    assert volumes[mounts["/run/xtables.lock"]["name"]]["hostPath"]["type"] == "FileOrCreate"
    assert host_paths["/etc/cni/net.d"] == "/etc/cni/net.d"
    assert host_paths["/host/opt/cni/bin"] == "/opt/cni/bin"


def _conflist(kube_router) -> dict:
    return json.loads(_one(kube_router, "ConfigMap", "kube-router-cfg")["data"]["cni-conf.json"])


def test_conflist_chains_bandwidth_after_bridge_and_portmap(kube_router):
    conf = _conflist(kube_router)
    types = [p["type"] for p in conf["plugins"]]
    assert types == ["bridge", "portmap", "bandwidth"]
    bridge, portmap, bandwidth = conf["plugins"]
    assert bridge["bridge"] == "kube-bridge" and bridge["isDefaultGateway"] is True
    # kube-router writes the node's podCIDR into host-local: the template must not carry one
    assert bridge["ipam"] == {"type": "host-local"}
    assert portmap["capabilities"] == {"portMappings": True}
    assert bandwidth["capabilities"] == {"bandwidth": True}
    assert set(types) | {"host-local", "loopback"} <= set(images.CNI_PLUGINS), "the image ships every plugin used"


@pytest.mark.skipif(not KUBE_ROUTER_BIN.exists(), reason=f"kube-router not built yet ({KUBE_ROUTER_BIN})")
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_install_cni_init_container_runs_in_the_lab_image(kube_router, tmp_path):
    """Run the init container's own script in the real image's root filesystem."""
    ref = images.build_image("kube-router", progress=lambda _: None)  # the lab's cached layout
    index = json.loads((ref.layout / "index.json").read_text())
    blobs = ref.layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    layer = (blobs / manifest["layers"][0]["digest"].split(":")[1]).read_bytes()
    root = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        tar.extractall(root, filter="tar")
    for mount in ("host/opt/cni/bin", "etc/cni/net.d", "etc/kube-router"):
        (root / mount).mkdir(parents=True, exist_ok=True)
    cfg = _one(kube_router, "ConfigMap", "kube-router-cfg")["data"]["cni-conf.json"]
    (root / "etc/kube-router/cni-conf.json").write_text(cfg)

    (init,) = _pod_spec(_one(kube_router, "DaemonSet", "kube-router"))["initContainers"]
    run = lambda: subprocess.run(["chroot", str(root), *init["command"]], capture_output=True, text=True)  # noqa: E731
    first = run()
    assert first.returncode == 0, first.stderr
    installed = sorted(p.name for p in (root / "host/opt/cni/bin").iterdir())
    assert installed == sorted(images.CNI_PLUGINS)
    assert all(os.access(root / "host/opt/cni/bin" / p, os.X_OK) for p in installed)
    conflist = root / "etc/cni/net.d/10-kuberouter.conflist"
    assert json.loads(conflist.read_text()) == json.loads(cfg)

    conflist.write_text(conflist.read_text().replace('"type": "host-local"', '"type": "host-local", "ranges": []'))
    second = run()
    assert second.returncode == 0 and "kept existing" in second.stdout
    assert '"ranges": []' in conflist.read_text(), "a conflist kube-router has filled in is kept"
    assert sorted(p.name for p in (root / "etc/cni/net.d").iterdir()) == ["10-kuberouter.conflist"]


# --- CoreDNS -----------------------------------------------------------------------------------


def test_coredns_service_is_the_cluster_dns_address(coredns):
    svc = _one(coredns, "Service", "coredns")
    assert svc["spec"]["clusterIP"] == "10.233.0.3"
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in SERVICE_CIDR
    ports = {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"  # as Kubespray labels it
    deployment = _one(coredns, "Deployment", "coredns")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_coredns_deployment_matches_kubespray(coredns):
    deployment = _one(coredns, "Deployment", "coredns")
    assert deployment["spec"]["replicas"] == 2
    spec = _pod_spec(deployment)
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["serviceAccountName"] == "coredns"
    anti = spec["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (container,) = spec["containers"]
    assert container["args"] == ["-conf", "/etc/coredns/Corefile"]
    assert container["readinessProbe"]["httpGet"]["port"] == 8181
    assert container["livenessProbe"]["httpGet"]["port"] == 8080
    binding = _one(coredns, "ClusterRoleBinding", "system:coredns")
    assert binding["roleRef"]["name"] == _one(coredns, "ClusterRole")["metadata"]["name"]


def test_corefile_serves_the_cluster_domain_and_forwards_nowhere(coredns):
    corefile = _one(coredns, "ConfigMap", "coredns")["data"]["Corefile"]
    plugins, depth = [], 0
    for line in corefile.splitlines():  # directives directly inside the `.:53 { }` server block
        words = line.split()
        if depth == 1 and words and words[0] != "}":
            plugins.append(words[0])
        depth += line.count("{") - line.count("}")
    assert corefile.startswith(".:53 {") and depth == 0
    for plugin in ("errors", "health", "ready", "kubernetes", "prometheus", "cache", "loop", "reload", "loadbalance"):
        assert plugin in plugins
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile
    assert "prometheus :9153" in corefile
    assert "forward" not in corefile, "the lab is air-gapped: no upstream resolver"


# --- the conflist with the real CNI plugins, in throw-away network namespaces -------------------

_CNI_DRIVER = r'''"""Run a CNI conflist the way containerd's libcni does, in the current network namespace
(the "node"), for a pod network namespace held by a `sleep` process; report what happened."""

import json
import os
import socket
import subprocess
import sys
import time

conflist_path, plugin_dir, data_dir, legacy_bin, out_path = sys.argv[1:6]
conflist = json.load(open(conflist_path))
subnet = "10.233.65.0/24"
runtime = {
    "portMappings": [{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}],
    "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 10_000_000,
                  "egressRate": 10_000_000, "egressBurst": 10_000_000},
}
for plugin in conflist["plugins"]:
    if plugin["type"] == "bridge":  # what kube-router writes from node.spec.podCIDR
        plugin["ipam"]["ranges"] = [[{"subnet": subnet}]]
        plugin["ipam"]["dataDir"] = data_dir

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
pod = subprocess.Popen(["unshare", "--net", "sleep", "120"])
netns = f"/proc/{pod.pid}/ns/net"
while os.readlink(netns) == os.readlink("/proc/self/ns/net"):
    time.sleep(0.01)

env = {"PATH": f"{legacy_bin}:/usr/sbin:/usr/bin:/sbin:/bin", "CNI_CONTAINERID": "cnilab-test",
       "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": plugin_dir}


def invoke(command, plugin, prev):
    conf = {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
    if prev is not None:
        conf["prevResult"] = prev
    caps = {k: runtime[k] for k, on in plugin.get("capabilities", {}).items() if on and k in runtime}
    if caps:
        conf["runtimeConfig"] = caps
    proc = subprocess.run([os.path.join(plugin_dir, plugin["type"])], input=json.dumps(conf).encode(),
                          env={**env, "CNI_COMMAND": command}, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"{command} {plugin['type']} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PATH": env["PATH"]}).stdout


report = {}
result = None
for plugin in conflist["plugins"]:
    result = invoke("ADD", plugin, result)
pod_ip = result["ips"][0]["address"].split("/")[0]
report["pod_ip"] = pod_ip
report["bridge"] = json.loads(sh("ip", "-j", "addr", "show", "dev", "kube-bridge"))[0]["addr_info"][0]["local"]
report["qdiscs"] = sh("tc", "qdisc", "show")
report["nat"] = sh("iptables", "-t", "nat", "-S")

# a pod listener on 8080, reached directly and through the hostPort on the node
listener = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-c",
    "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',8080));s.listen(8)\n"
    "while True:\n c,_=s.accept();c.sendall(b'pod');c.close()"])
time.sleep(0.3)
for name, addr in (("direct", (pod_ip, 8080)), ("hostport", (report["bridge"], 30080))):
    try:
        with socket.create_connection(addr, timeout=3) as c:
            report[name] = c.recv(16).decode()
    except OSError as err:
        report[name] = f"error: {err}"
listener.kill()

for plugin in reversed(conflist["plugins"]):
    invoke("DEL", plugin, result)
report["nat_after_del"] = sh("iptables", "-t", "nat", "-S")
report["links_after_del"] = sh("ip", "-o", "link", "show")
pod.kill()
json.dump(report, open(out_path, "w"), indent=1)
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
@pytest.mark.skipif(
    not all((images._CNI_PLUGIN_DIR / p).exists() for p in images.CNI_PLUGINS),
    reason="Debian package containernetworking-plugins not installed",
)
def test_conflist_works_with_the_cni_plugins_on_this_kernel(kube_router, tmp_path):
    """ADD and DEL the lab conflist like containerd does, for a pod in a private network
    namespace under a private "node" namespace (nothing touches the host's network):
    the pod gets an address, is reachable directly and through a hostPort (portmap with
    legacy iptables), and the bandwidth plugin shapes both directions with tbf."""
    (tmp_path / "conflist.json").write_text(_one(kube_router, "ConfigMap")["data"]["cni-conf.json"])
    (tmp_path / "driver.py").write_text(_CNI_DRIVER)
    legacy = tmp_path / "legacy-bin"
    legacy.mkdir()
    for cmd in ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"):
        (legacy / cmd).symlink_to("/usr/sbin/xtables-legacy-multi")
    (tmp_path / "ipam").mkdir()
    argv = ["unshare", "--net", sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "conflist.json"),
            str(images._CNI_PLUGIN_DIR), str(tmp_path / "ipam"), str(legacy), str(tmp_path / "report.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "report.json").read_text())

    assert report["bridge"] == "10.233.65.1" and report["pod_ip"].startswith("10.233.65.")
    assert report["direct"] == "pod"
    assert report["hostport"] == "pod"
    assert "CNI-HOSTPORT-DNAT" in report["nat"] and "--dport 30080" in report["nat"]
    tbf = [line for line in report["qdiscs"].splitlines() if line.startswith("qdisc tbf")]
    assert len(tbf) == 2 and all("rate 10Mbit" in line for line in tbf)  # pod ingress on the veth, egress on ifb
    assert "--dport 30080" not in report["nat_after_del"]  # the pod's DNAT chain is gone
    assert "veth" not in report["links_after_del"] and "bwp" not in report["links_after_del"]
