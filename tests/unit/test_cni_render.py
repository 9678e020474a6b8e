"""Profiles, generic pass-through, diffs, image references and the surgical YAML editor."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cni_runbook.cni.diff import changed_objects, unified_diff
from cni_runbook.cni.errors import CniError, SettingsError
from cni_runbook.cni.images import mirror_image, parse_image
from cni_runbook.cni.manifests import Manifest
from cni_runbook.cni.profiles import PROFILES, get_renderer, render
from cni_runbook.cni.yamltext import set_config_keys

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared/fixtures/antrea/antrea-v2.7.0-dev-manifest.yml"

FLANNELISH = """# a generic CNI
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: cni, namespace: kube-system}
spec:
  template:
    spec:
      initContainers:
      - name: install
        image: docker.io/example/cni-plugin:v1.0   # the plugin binaries
      containers:
      - image: 'ghcr.io/example/cni:v2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'
        name: cni
"""


def test_profiles_registry():
    assert sorted(PROFILES) == ["antrea", "flannel", "generic", "lab"]
    with pytest.raises(SettingsError, match=r"unknown profile .antera., expected one of antrea, lab, flannel, generic; did you mean .antrea.\?"):
        get_renderer("antera")


def test_generic_passes_through_and_mirrors():
    manifest = Manifest(FLANNELISH, "cni.yml")
    assert render("generic", manifest).rendered == manifest
    mirrored = render("lab", manifest, image_registry="mirror.local:5000/cni").rendered
    assert mirrored.text == FLANNELISH.replace("docker.io/example/cni-plugin:v1.0", "mirror.local:5000/cni/cni-plugin:v1.0").replace(
        "ghcr.io/example/cni:v2@", "mirror.local:5000/cni/cni:v2@")
    with pytest.raises(SettingsError, match=r"cni settings: mtu: profile 'generic' has no configuration keys"):
        render("generic", manifest, settings={"mtu": 1400})


def test_mirror_collision_is_refused():
    two = FLANNELISH.replace("ghcr.io/example/cni:v2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "quay.io/other/cni-plugin:v1.0")
    with pytest.raises(CniError, match=r"images 'docker.io/example/cni-plugin:v1.0' and 'quay.io/other/cni-plugin:v1.0' would both become 'm.local/cni-plugin:v1.0'"):
        render("generic", Manifest(two, "cni.yml"), image_registry="m.local")


def test_image_references():
    ref = parse_image("localhost:5000/a/b-c:1.0@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag, ref.name) == ("localhost:5000", "a/b-c", "1.0", "b-c")
    assert mirror_image("antrea/antrea-agent-ubuntu:v2.7.0", "mirror.local:5000/antrea") == "mirror.local:5000/antrea/antrea-agent-ubuntu:v2.7.0"
    assert mirror_image("registry.k8s.io/pause", "10.0.0.5:5000") == "10.0.0.5:5000/pause"
    with pytest.raises(CniError, match=r"image 'Antrea/Agent': malformed repository"):
        parse_image("Antrea/Agent")


def test_diff_and_changed_objects():
    upstream = Manifest.from_file(FIXTURE)
    rendered = render("antrea", upstream, version="v2.7.0", settings={"tunnelType": "vxlan"}).rendered
    diff = unified_diff(upstream, rendered, context=0)
    assert f"--- upstream: {FIXTURE}" in diff
    assert '-    tunnelType: "geneve"\n+    tunnelType: "vxlan"\n' in diff
    assert sum(1 for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")) == 7
    table = changed_objects(upstream, rendered)
    assert table[["kind", "name", "change", "lines"]].values.tolist() == [
        ["ConfigMap", "antrea-config", "modified", 1],
        ["DaemonSet", "antrea-agent", "modified", 4],
        ["Deployment", "antrea-controller", "modified", 2],
    ]
    assert table.iloc[0]["paths"] == "data.antrea-agent.conf:tunnelType"
    assert unified_diff(upstream, upstream) == ""


CONF = """\
# top comment
featureGates:
#  Egress: true

mode: "a"   # trailing comment
nested:
  # the list
  list:
  - 1
  - 2
  keep: true
empty: {}
#commented: 1
tail: x
"""


@pytest.mark.parametrize(
    ("settings", "changed"),
    [
        ({("featureGates", "Egress"): False}, [("#  Egress: true", "  Egress: false")]),
        ({("mode",): "b"}, [('mode: "a"   # trailing comment', 'mode: "b"   # trailing comment')]),
        ({("commented",): 2}, [("#commented: 1", "commented: 2")]),
        ({("nested", "list"): ["x"]}, [("  list:", '  list: ["x"]'), ("  - 1", None), ("  - 2", None)]),
        ({("featureGates", "New"): True}, [(None, "  New: true")]),
        ({("empty", "key"): 1}, [("empty: {}", "empty:"), (None, "  key: 1")]),
        ({("brand", "new"): "v"}, [(None, "brand:"), (None, '  new: "v"')]),
    ],
)
def test_config_editor(settings, changed):
    import difflib

    for indent in (0, 4):
        text = "".join((" " * indent + line if line.strip() else line) + "\n" for line in CONF.splitlines())
        result = set_config_keys(text, settings, where="conf", indent=indent)
        expected = yaml.safe_load(CONF)
        for path, value in settings.items():
            node = expected
            for key in path[:-1]:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
            node[path[-1]] = value
        assert yaml.safe_load(result) == expected
        a, b = [line[indent:] for line in text.splitlines()], [line[indent:] for line in result.splitlines()]
        pairs = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if tag != "equal":
                old, new = a[i1:i2], b[j1:j2]
                pairs += [(old[k] if k < len(old) else None, new[k] if k < len(new) else None) for k in range(max(len(old), len(new)))]
        assert pairs == changed


def test_config_editor_refuses_to_descend_into_a_scalar():
    with pytest.raises(CniError, match=r"conf: cannot set tail.x: tail holds 'x', not a mapping"):
        set_config_keys(CONF, {("tail", "x"): 1}, where="conf")
