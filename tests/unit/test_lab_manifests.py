"""The lab's add-on manifests: kube-router (the lab CNI) and CoreDNS as Kubespray deploys it."""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import os
import re
import subprocess
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


def test_kube_router_container_flags_probes_and_api_server(kube_router):
    spec = _pod_spec(_one(kube_router, "DaemonSet", "kube-router"))
    (main,) = spec["containers"]
    required = ("--run-router=true", "--run-firewall=true", "--run-service-proxy=false", "--bgp-graceful-restart=true")
    assert set(required) <= set(main["args"])
    assert main["securityContext"]["privileged"] is True
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": 20244}
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert f"https://{env['KUBERNETES_SERVICE_HOST']}:{env['KUBERNETES_SERVICE_PORT']}" == "https://10.99.0.11:6443"
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
