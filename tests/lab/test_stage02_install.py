"""Stage 02's install engine against the real local lab (route "direct").

- the FULL real Antrea v2.7.0 manifest (47 objects) through a server-side dry-run: every object
  admitted by the real API server, nothing persisted (Antrea's datapath cannot run here: no
  openvswitch kernel module);
- bad manifests: a clear error and nothing of them on the cluster afterwards;
- the lab CNI installed by the engine on a fresh no-CNI cluster: DaemonSet rolled out, nodes
  Ready, CoreDNS Running; a second run changes nothing; rollback removes exactly what the run
  created; a final install leaves the lab with its CNI for the next module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cni_runbook import cni as engine
from cni_runbook.cni.errors import ManifestError
from cni_runbook.cni.manifests import Manifest
from cni_runbook.lab.images import LAB_REGISTRY
from cni_runbook.params.schema import Cni

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
ANTREA = ROOT.parent / "shared" / "fixtures" / "antrea" / "antrea-v2.7.0-dev-manifest.yml"
# The lab images live under <registry>/cnilab/...; the mirror rule keeps only the last path component.
LAB_CNI = Cni(profile="lab", version=None, image_registry=f"{LAB_REGISTRY}/cnilab")
FAST = engine.Timeouts(crd_s=30, rollout_s=180, apiservice_s=60, nodes_s=120, coredns_s=180, rollback_s=90)


@pytest.fixture(scope="module")
def kube(lab):
    lab.fresh()  # a no-CNI cluster, as Kubespray leaves it with kube_network_plugin: none
    k = lab.kube()
    yield k
    k.close()


def _present(kube, objects) -> list[str]:
    return [str(o.ref) for o in objects
            if kube.get(o.ref.api_version, o.ref.kind, o.ref.name, o.ref.namespace if o.namespaced else None) is not None]


# --------------------------------------------------------------------------- Antrea dry-run


def test_full_antrea_manifest_passes_a_server_side_dry_run_and_nothing_is_persisted(kube, tmp_path):
    if not ANTREA.is_file():
        pytest.skip(f"{ANTREA} missing (the shared Antrea fixture)")
    objects = engine.objects_for_cluster(Manifest.from_file(ANTREA), kube, namespace="kube-system")
    assert len(objects) == 47
    kinds = {o.ref.kind for o in objects}
    assert {"CustomResourceDefinition", "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
            "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "DaemonSet", "Deployment", "ConfigMap"} <= kinds

    result = engine.install(kube, objects, record_dir=tmp_path, dry_run=True)

    assert result.counts == {"dry-run": 47}  # every object admitted; no custom resources to skip
    skipped = [a.ref for a in result.applied if a.action == "skipped"]
    print(f"Antrea dry-run: {result.summary()}; skipped custom resources: {skipped or 'none'}")
    assert result.steps[0].status == "passed"
    assert not (tmp_path / engine.RECORD_NAME).exists()  # a dry run leaves no rollback record
    assert _present(kube, objects) == []  # nothing persisted


# --------------------------------------------------------------------------- bad manifests

BROKEN_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: s02-broken-ok, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: s02-broken
  labels: {a: b
data: {}
"""
UNKNOWN_KIND = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: s02-unknown-ok, namespace: kube-system}
---
apiVersion: v1
kind: Frobnicator
metadata: {name: s02-frob, namespace: kube-system}
"""
CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.s02.cni-runbook.test}
spec:
  group: s02.cni-runbook.test
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
WIDGET = """\
apiVersion: s02.cni-runbook.test/v1
kind: Widget
metadata: {name: w1, namespace: kube-system}
spec: {size: 3}
"""
MISSING_NAMESPACE = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: s02-sa, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: s02-lost, namespace: s02-no-such-namespace}
"""
LATE_REJECTION = """\
apiVersion: v1
kind: Namespace
metadata: {name: s02-late}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: s02-late-cfg, namespace: s02-late}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: s02-late-deploy, namespace: s02-late}
spec:
  replicas: -1
  selector: {matchLabels: {app: late}}
  template:
    metadata: {labels: {app: late}}
    spec: {containers: [{name: c, image: "registry.invalid/none:1"}]}
"""


def _manifest(tmp_path: Path, name: str, text: str) -> Manifest:
    path = tmp_path / name
    path.write_text(text)
    return Manifest.from_file(path)


def _refs_in(text: str) -> list[tuple[str, str, str | None, str]]:
    """(apiVersion, kind, namespace, name) of every parseable document, for the 'nothing left' checks."""
    import yaml

    out = []
    for chunk in text.split("\n---\n"):
        try:
            body = yaml.safe_load(chunk)
        except yaml.YAMLError:
            continue
        if body:
            out.append((body["apiVersion"], body["kind"], body["metadata"].get("namespace"), body["metadata"]["name"]))
    return out


def _absent(kube, text: str) -> None:
    for api_version, kind, namespace, name in _refs_in(text):
        try:
            assert kube.get(api_version, kind, name, namespace) is None, f"{kind} {name} was left on the cluster"
        except engine.CniError:
            raise
        except Exception as exc:  # noqa: BLE001 - a kind the server does not serve cannot have objects
            assert "does not serve" in str(exc), exc


def test_broken_yaml_names_file_document_and_line_and_applies_nothing(kube, tmp_path):
    manifest = _manifest(tmp_path, "broken.yaml", BROKEN_YAML)
    with pytest.raises(ManifestError) as err:
        engine.objects_for_cluster(manifest, kube, namespace="kube-system")
    message = str(err.value)
    assert f"{tmp_path / 'broken.yaml'}: document 2 (line 4): invalid YAML at line" in message
    _absent(kube, BROKEN_YAML.replace("labels: {a: b\n", ""))


def test_unknown_kind_is_refused_before_anything_is_applied(kube, tmp_path):
    objects = engine.objects_for_cluster(_manifest(tmp_path, "unknown.yaml", UNKNOWN_KIND), kube, namespace="kube-system")
    with pytest.raises(engine.InstallError) as err:
        engine.install(kube, objects, record_dir=tmp_path / "rec")
    message = str(err.value)
    assert message.startswith("nothing was applied")
    assert "unknown.yaml: document 2 (line 4): Frobnicator s02-frob: kind Frobnicator (v1) is not served" in message
    _absent(kube, UNKNOWN_KIND)


def test_custom_resource_whose_crd_is_absent_is_refused(kube, tmp_path):
    with pytest.raises(ManifestError) as err:
        engine.objects_for_cluster(_manifest(tmp_path, "orphan.yaml", WIDGET), kube, namespace="kube-system")
    assert "no CustomResourceDefinition for kind Widget in group s02.cni-runbook.test" in str(err.value)
    assert "expected a CRD like widgets.s02.cni-runbook.test" in str(err.value)


def test_missing_namespace_is_refused_before_anything_is_applied(kube, tmp_path):
    with pytest.raises(ManifestError) as err:
        engine.objects_for_cluster(_manifest(tmp_path, "ns.yaml", MISSING_NAMESPACE), kube, namespace="kube-system")
    assert "ConfigMap s02-no-such-namespace/s02-lost (v1): namespace 's02-no-such-namespace' is neither created" in str(err.value)
    _absent(kube, MISSING_NAMESPACE)


def test_object_rejected_by_the_server_mid_apply_rolls_back_what_the_run_created(kube, tmp_path):
    objects = engine.objects_for_cluster(_manifest(tmp_path, "late.yaml", LATE_REJECTION), kube, namespace="kube-system")
    with pytest.raises(engine.InstallError) as err:
        engine.install(kube, objects, record_dir=tmp_path / "rec", timeouts=FAST)
    message = str(err.value)
    assert "applying Deployment s02-late-deploy (object 3 of 3) failed" in message
    assert "replicas" in message  # the API server's own reason
    assert "rolled back the 2 object(s) this run created; nothing is left half-applied" in message.replace(
        f" (record: {tmp_path / 'rec' / engine.RECORD_NAME})", "")
    assert [a.kind for a in err.value.result.rolled_back] == ["ConfigMap", "Namespace"]
    _absent(kube, LATE_REJECTION)


def test_custom_resource_before_its_crd_in_the_file_is_applied_after_it(kube, tmp_path):
    """Not an error: the engine orders the CRD first, waits until Established, then the CR."""
    text = WIDGET + "---\n" + CRD
    objects = engine.objects_for_cluster(_manifest(tmp_path, "cr-first.yaml", text), kube, namespace="kube-system")
    assert [o.ref.kind for o in objects] == ["CustomResourceDefinition", "Widget"]
    result = engine.install(kube, objects, record_dir=tmp_path / "rec", wait=False)
    assert result.counts == {"created": 2}
    removed = engine.rollback_record(kube, tmp_path / "rec" / engine.RECORD_NAME)
    assert [a.kind for a in removed] == ["Widget", "CustomResourceDefinition"]
    _absent(kube, CRD)


# --------------------------------------------------------------------------- the lab CNI


@pytest.fixture(scope="module")
def lab_cni(kube, tmp_path_factory):
    art = tmp_path_factory.mktemp("stage02")
    prepared = engine.prepare(LAB_CNI, art)
    return prepared, engine.objects_for_cluster(prepared.rendered, kube, namespace="kube-system"), art


def test_prepare_stores_the_source_and_renders_the_lab_manifest_unchanged(lab_cni):
    prepared, objects, art = lab_cni
    assert prepared.source.kind == "file" and (art / "kube-router.yaml.sha256").is_file()
    assert prepared.diff() == ""  # the mirror prefix is the lab registry itself
    assert [o.ref.kind for o in objects] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"]


def test_lab_cni_install_gives_ready_nodes_and_running_coredns(lab, kube, lab_cni, tmp_path_factory):
    _, objects, _ = lab_cni
    record_dir = tmp_path_factory.mktemp("first")
    progress: list[str] = []
    result = engine.install(kube, objects, record_dir=record_dir, timeouts=FAST, expected_nodes=3, progress=progress.append)
    lab.has_cni = True
    assert result.ok and result.counts == {"created": 5}
    assert [s.name for s in result.steps] == ["rollout DaemonSet kube-system/kube-router", "nodes Ready", "CoreDNS Running"]
    assert all(s.status == "passed" for s in result.steps), result.steps_table()
    health = result.health
    assert sorted(health["node"]) == ["lab-cp1", "lab-w1", "lab-w2"]
    assert set(health["phase"]) == {"Running"} and set(health["ready"]) == {"1/1"}
    assert any("3/3 ready" in line for line in progress)  # progress was reported while waiting
    lines = (record_dir / engine.RECORD_NAME).read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["created"] * 5


def test_second_run_reports_zero_changes(kube, lab_cni, tmp_path):
    _, objects, _ = lab_cni
    result = engine.install(kube, objects, record_dir=tmp_path, timeouts=FAST)
    assert result.changes == 0 and result.counts == {"unchanged": 5}
    assert result.ok


def test_rollback_removes_exactly_what_the_run_created(lab, kube, lab_cni, tmp_path):
    _, objects, art = lab_cni
    first = next(p for p in art.parent.glob("first*/" + engine.RECORD_NAME))
    before = first.read_bytes()
    removed = engine.rollback_record(kube, first, work_dir=tmp_path)
    lab.has_cni = False
    assert [a.kind for a in removed] == ["DaemonSet", "ConfigMap", "ClusterRoleBinding", "ClusterRole", "ServiceAccount"]
    assert _present(kube, objects) == []
    assert first.read_bytes() == before  # the run's own record is left as recorded
    assert kube.get("apps/v1", "Deployment", "coredns", "kube-system") is not None  # not this run's: untouched


def test_install_again_leaves_the_lab_with_its_cni(lab, kube, lab_cni, tmp_path):
    _, objects, _ = lab_cni
    result = engine.install(kube, objects, record_dir=tmp_path, timeouts=FAST, expected_nodes=3)
    lab.has_cni = True
    assert result.ok and result.counts == {"created": 5}


def test_antrea_post_checks_read_the_real_api_and_report_a_missing_antrea(kube, tmp_path, monkeypatch):
    """Antrea cannot run here (no openvswitch): the post-checks against the lab must say it is absent."""
    if not ANTREA.is_file():
        pytest.skip(f"{ANTREA} missing (the shared Antrea fixture)")
    monkeypatch.setenv("PATH", "/nonexistent")  # no antctl
    objects = engine.objects_for_cluster(Manifest.from_file(ANTREA), kube, namespace="kube-system")
    checks, output = engine.antrea_post_checks(kube, objects)
    assert [(c.name, c.status) for c in checks] == [
        ("antrea-agent Running on every node", "failed"), ("antrea-controller Ready", "failed"),
        ("Antrea APIServices Available", "failed"), ("antctl check installation", "skipped")]
    assert checks[0].detail == "no agent pod on lab-cp1, lab-w1, lab-w2"
    assert checks[2].detail == ("v1beta2.controlplane.antrea.io: absent; v1beta1.system.antrea.io: absent; "
                                "v1alpha1.stats.antrea.io: absent")
    assert output == ""
