"""Manifest parsing, checks and apply order (real Antrea v2.7.0 manifest + small broken ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_runbook.cni.errors import ManifestError
from cni_runbook.cni.manifests import PHASES, Manifest, objects_table, ordered_objects, parse_manifest, split_documents

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared/fixtures/antrea/antrea-v2.7.0-dev-manifest.yml"

TIER = """---
apiVersion: crd.antrea.io/v1beta1
kind: Tier
metadata:
  name: site
spec:
  priority: 10
"""


@pytest.fixture(scope="module")
def antrea() -> Manifest:
    return Manifest.from_file(FIXTURE)


def test_documents_keep_their_text(antrea):
    docs = split_documents(antrea)
    assert len(docs) == 47
    assert "".join(d.text for d in docs) == antrea.text
    assert docs[0].line == 1 and docs[0].text.startswith("---\n# Source: antrea/crds/antreaagentinfo.yaml\n")


def test_all_47_objects_ordered(antrea):
    objects = ordered_objects(antrea)
    assert len(objects) == 47
    assert [o.order for o in objects] == list(range(1, 48))
    phases = [o.phase for o in objects]
    assert phases == sorted(phases, key=PHASES.index)
    kinds = [o.ref.kind for o in objects]
    assert kinds[:20] == ["CustomResourceDefinition"] * 20
    assert kinds[-3:] == ["APIService"] * 3
    assert kinds.index("ServiceAccount") < kinds.index("ClusterRole") < kinds.index("ClusterRoleBinding") < kinds.index("ConfigMap")
    assert kinds.index("Service") < kinds.index("MutatingWebhookConfiguration") < kinds.index("DaemonSet")
    agent = next(o for o in objects if o.ref.kind == "DaemonSet")
    assert agent.ref.namespace == "kube-system" and agent.images == ("antrea/antrea-agent-ubuntu:latest",) * 3
    assert agent.body["metadata"]["name"] == "antrea-agent" and agent.text.startswith("---\n# Source: antrea/templates/agent/daemonset.yaml")
    assert not any(o.flags for o in objects)


def test_custom_resource_goes_after_its_crd_even_when_written_first(antrea):
    objects = ordered_objects([Manifest(TIER, "tier.yml"), antrea])
    kinds = [o.ref.kind for o in objects]
    tier = kinds.index("Tier")
    assert tier > kinds.index("CustomResourceDefinition") and tier > kinds.index("Deployment")
    assert kinds[tier + 1 :] == ["APIService"] * 3
    assert objects[tier].phase == "custom-resources" and objects[tier].ref.namespace is None  # Tier is cluster-scoped


def test_table(antrea):
    table = objects_table(ordered_objects(antrea))
    assert list(table.columns) == ["order", "phase", "kind", "namespace", "name", "apiVersion", "images", "flags"]
    assert len(table) == 47
    row = table[table.kind == "Deployment"].iloc[0]
    assert (row["namespace"], row["name"], row["images"]) == ("kube-system", "antrea-controller", "antrea/antrea-controller-ubuntu:latest")


def test_broken_yaml_names_file_document_and_line():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  labels: [x\n"
    with pytest.raises(ManifestError) as err:
        parse_manifest(Manifest(text, "broken.yml"))
    message = str(err.value)
    assert message.startswith("broken.yml: document 2 (line 4): invalid YAML at line ")
    assert len(err.value.problems) == 1
    with pytest.raises(ManifestError) as err:
        parse_manifest(Manifest("a: 1\n---\nb: c: d\n", "b2.yml"))
    assert str(err.value) == "b2.yml: document 2 (line 2): invalid YAML at line 3, column 5: mapping values are not allowed in this context"


def test_missing_fields_are_named():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n---\nkind: Secret\nmetadata: {name: s}\n---\n- just\n- a list\n"
    with pytest.raises(ManifestError) as err:
        parse_manifest(Manifest(text, "m.yml"))
    assert err.value.problems == [
        "m.yml: document 1 (line 1): missing or non-string metadata.name (every object needs apiVersion, kind and metadata.name)",
        "m.yml: document 2 (line 4): missing or non-string apiVersion (every object needs apiVersion, kind and metadata.name)",
        "m.yml: document 3 (line 7): expected a mapping (a Kubernetes object), got list",
    ]


def test_custom_resource_without_crd_is_an_error():
    with pytest.raises(ManifestError) as err:
        ordered_objects(Manifest(TIER, "tier.yml"))
    assert str(err.value) == (
        "tier.yml: document 1 (line 1): Tier site (crd.antrea.io/v1beta1): no CustomResourceDefinition for kind Tier "
        "in group crd.antrea.io: expected a CRD like tiers.crd.antrea.io in the manifest, or 'crd.antrea.io' in known_api_groups"
    )
    # a group whose CRDs are already on the cluster is fine
    [tier] = ordered_objects(Manifest(TIER, "tier.yml"), known_api_groups=["crd.antrea.io"])
    assert tier.phase == "custom-resources"


def test_custom_resource_of_an_unserved_version(antrea):
    with pytest.raises(ManifestError, match=r"tiers.crd.antrea.io serves versions v1beta1, not v9"):
        ordered_objects([antrea, Manifest(TIER.replace("v1beta1", "v9"), "tier.yml")])


def test_unknown_builtin_kind_is_flagged_and_placed_after_config():
    text = (
        "apiVersion: apps/v1\nkind: Frobnicator\nmetadata: {name: f, namespace: kube-system}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: kube-system}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: kube-system}\n"
    )
    objects = ordered_objects(Manifest(text, "u.yml"))
    assert [o.ref.kind for o in objects] == ["ConfigMap", "Frobnicator", "Service"]
    assert objects[1].phase == "unknown"
    assert objects[1].flags == ("kind Frobnicator of API group 'apps' is not one this runbook knows: applied after config",)


def test_missing_namespace_is_an_error_unless_created_or_existing():
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: cni-extra}\n"
    with pytest.raises(ManifestError) as err:
        ordered_objects(Manifest(cm, "ns.yml"))
    assert str(err.value) == (
        "ns.yml: document 1 (line 1): ConfigMap cni-extra/c (v1): namespace 'cni-extra' is neither created by the manifest "
        "nor in the existing namespaces (default, kube-node-lease, kube-public, kube-system)"
    )
    assert ordered_objects(Manifest(cm, "ns.yml"), existing_namespaces=["cni-extra"])[0].ref.namespace == "cni-extra"
    created = ordered_objects(Manifest(cm + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: cni-extra}\n", "ns.yml"))
    assert [o.ref.kind for o in created] == ["Namespace", "ConfigMap"]


def test_namespace_defaults_and_duplicates():
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    assert ordered_objects(Manifest(cm, "a.yml"), default_namespace="kube-system")[0].ref.namespace == "kube-system"
    with pytest.raises(ManifestError, match=r"b.yml: document 1 \(line 1\): ConfigMap default/c \(v1\) is defined twice \(first at a.yml: document 1 \(line 1\)\)"):
        ordered_objects([Manifest(cm, "a.yml"), Manifest(cm, "b.yml")])


def test_list_kind_is_refused():
    with pytest.raises(ManifestError, match="kind List is not supported"):
        parse_manifest(Manifest("apiVersion: v1\nkind: List\nmetadata: {name: l}\nitems: []\n", "l.yml"))


def test_comment_only_and_empty_documents_are_skipped():
    text = "# header\n---\n---\n# nothing\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n...\n"
    assert [o.ref.name for o in parse_manifest(Manifest(text))] == ["x"]
    assert "".join(d.text for d in split_documents(Manifest(text))) == text
