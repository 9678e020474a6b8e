"""Kubespray custom_cni route: group_vars and protection of manifests from Jinja templating."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from cni_runbook.cni.custom_cni import chart_vars, group_vars_yaml, manifest_vars, needs_protection, protect_jinja, write_manifest
from cni_runbook.cni.errors import SettingsError
from cni_runbook.cni.manifests import Manifest, parse_manifest

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared/fixtures/antrea/antrea-v2.7.0-dev-manifest.yml"

GO_TEMPLATE = """---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cni-templates
  namespace: kube-system
data:
  conflist.tpl: |
    {"name": "{{ .Name }}", "mtu": {{ .MTU }}}
    {{- range .Routes }}{{ . }}{{ end }}
    {%- not jinja either %} {# not a comment #} {{{ braces }}}
  note: "{% endraw %} and {% raw %} stay literal"
"""


def jinja_environments():
    """Jinja configured as Ansible's template module may be (trim_blocks is its default)."""
    for trim in (True, False):
        for lstrip in (True, False):
            yield jinja2.Environment(trim_blocks=trim, lstrip_blocks=lstrip, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


@pytest.mark.parametrize("text", [GO_TEMPLATE, "#jinja2: variable_start_string:'[%'\n{{ x }}\n", "plain: text\n", ""])
def test_protected_text_renders_to_the_original(text):
    protected = protect_jinja(text)
    for env in jinja_environments():
        assert env.from_string(protected).render() == text


def test_protection_with_ansible_templar():
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    assert Templar(loader=DataLoader()).template(protect_jinja(GO_TEMPLATE)) == GO_TEMPLATE


def test_unprotected_go_template_would_break():
    with pytest.raises(jinja2.TemplateError):
        jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(GO_TEMPLATE).render()


def test_only_lines_with_jinja_syntax_change(tmp_path):
    antrea = Manifest.from_file(FIXTURE)
    assert not needs_protection(antrea.text)
    assert protect_jinja(antrea.text) == antrea.text
    path = write_manifest(Manifest(antrea.text + GO_TEMPLATE, "combined"), tmp_path / "rendered", "antrea.yml")
    assert path.is_absolute() and path.name == "antrea.yml"
    written = path.read_text().splitlines()
    original = (antrea.text + GO_TEMPLATE).splitlines()
    assert len(written) == len(original)
    assert [i for i, (a, b) in enumerate(zip(original, written)) if a != b] == [len(original) - 4, len(original) - 3, len(original) - 2, len(original) - 1]
    rendered = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True).from_string(path.read_text()).render()
    assert len(parse_manifest(Manifest(rendered, str(path)))) == 48


def test_manifest_vars(tmp_path):
    assert manifest_vars([tmp_path / "antrea.yml"]) == {"kube_network_plugin": "custom_cni", "custom_cni_manifests": [str(tmp_path / "antrea.yml")]}
    with pytest.raises(SettingsError) as err:
        manifest_vars(["rel/antrea.yml", "/a/cni.yml", "/b/cni.yml.j2"])
    assert err.value.problems == [
        "custom_cni_manifests: rel/antrea.yml: expected an absolute path on the Ansible controller",
        "custom_cni_manifests: /b/cni.yml.j2 and /a/cni.yml would both be copied to <kube_config_dir>/cni.yml",
    ]
    with pytest.raises(SettingsError, match="no .j2 suffix"):
        write_manifest(Manifest(""), tmp_path, "antrea.yml.j2")


def test_chart_vars_and_group_vars_yaml():
    from ansible.parsing.yaml.loader import AnsibleLoader
    from ansible.utils.unsafe_proxy import AnsibleUnsafeText

    variables = chart_vars(release_name="antrea", repository_name="antrea", repository_url="https://charts.antrea.io",
                           chart="antrea", version="2.7.0", values={"trafficEncapMode": "encap", "podAnnotations": {"t": "{{ .Release }}"}})
    assert variables["custom_cni_chart_ref"] == "antrea/antrea"
    text = group_vars_yaml(variables)
    assert '  podAnnotations:\n    t: !unsafe "{{ .Release }}"\n' in text
    loaded = AnsibleLoader(text).get_single_data()
    assert loaded == {**variables, "custom_cni_chart_values": {"trafficEncapMode": "encap", "podAnnotations": {"t": "{{ .Release }}"}}}
    assert isinstance(loaded["custom_cni_chart_values"]["podAnnotations"]["t"], AnsibleUnsafeText)
    with pytest.raises(SettingsError) as err:
        chart_vars(release_name="Antrea", repository_name="antrea", repository_url="charts.antrea.io", chart="antrea/antrea", version="")
    assert [p.split(":")[0] for p in err.value.problems] == [
        "custom_cni_chart_release_name", "custom_cni_chart_repository_url", "custom_cni_chart_ref", "custom_cni_chart_version"]
