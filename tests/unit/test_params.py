"""Params: layering, provenance in messages, every error kind, secret references."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cni_runbook.params import DEFAULTS_FILE, LAB_FILE, Params, ParamsError, load_params
from cni_runbook.params.loader import parse_set

ROOT = Path(__file__).resolve().parents[2]
NODE = "{name: n1, roles: [kube_control_plane, etcd], ansible_host: 192.0.2.1}"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(*args, **kwargs) -> list[str]:
    with pytest.raises(ParamsError) as info:
        load_params(*args, **kwargs)
    return info.value.problems


# --- layering --------------------------------------------------------------------------------

def test_defaults_file_matches_schema_defaults():
    assert load_params([]).params == Params()


@pytest.mark.parametrize("path", [LAB_FILE, *sorted((ROOT / "params" / "examples").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_shipped_params_files_validate(path):
    # kubespray-custom-cni.yaml names the site's own manifest file (not shipped): schema only
    assert load_params([path], static_checks=path.name != "kubespray-custom-cni.yaml").params.site


def test_layers_override_in_order_and_mappings_merge(tmp_path):
    a = write(tmp_path, "a.yaml", """
        site: one
        kubespray: {kube_proxy_mode: iptables, extra_vars: {a: 1, b: 2}}
        policy: {scenarios: [default-deny, allow-dns]}
        """)
    b = write(tmp_path, "b.yaml", """
        kubespray: {extra_vars: {b: 3}}
        policy: {scenarios: [only-this]}
        """)
    p = load_params([a, b], ["site=two", "kubespray.kube_network_node_prefix=25"], static_checks=False).params
    assert p.site == "two"  # --set beats files
    assert p.kubespray.kube_proxy_mode == "iptables"  # a beats defaults
    assert p.kubespray.extra_vars == {"a": 1, "b": 3}  # mappings merge key by key
    assert p.policy.scenarios == ["only-this"]  # lists replace
    assert p.kubespray.kube_network_node_prefix == 25  # --set values are YAML-typed
    assert p.kubespray.version == "v2.31.0"  # untouched defaults stay


def test_set_reaches_into_lists_and_creates_mappings(tmp_path):
    site = write(tmp_path, "s.yaml", f"cluster: {{nodes: [{NODE}]}}\n")
    p = load_params([site], ["cluster.nodes[0].ip=192.0.2.9", "kubespray.extra_vars.etcd_deployment_type=host"]).params
    assert str(p.cluster.nodes[0].ip) == "192.0.2.9"
    assert p.kubespray.extra_vars == {"etcd_deployment_type": "host"}


def test_inline_sections_sit_between_files_and_set(tmp_path):
    site = write(tmp_path, "s.yaml", "site: from-file\nqos: {tolerance_pct: 5}\n")
    p = load_params([site], ["qos.tolerance_pct=7"], inline={"site": "inline", "qos": {"enabled": False}, "cni": None}).params
    assert (p.site, p.qos.enabled, p.qos.tolerance_pct) == ("inline", False, 7)


def test_relative_paths_resolve_against_the_file_that_set_them(tmp_path):
    site = write(tmp_path, "sub/site.yaml", """
        policy: {files: [policies/deny.yaml]}
        cluster: {ssh: {key_file: ./keys/id, become_password: file:../pw.txt}}
        """) if (tmp_path / "sub").mkdir() is None else None
    p = load_params([site], static_checks=False).params  # the files need not exist for this
    assert p.policy.files == [str(tmp_path / "sub" / "policies" / "deny.yaml")]
    assert p.cluster.ssh.key_file == str(tmp_path / "sub" / "keys" / "id")
    assert p.cluster.ssh.become_password == f"file:{tmp_path / 'pw.txt'}"


def test_stage_references_are_normalised():
    run = load_params([], ["run.stages=[2, preflight, 03_validation]", "run.timeouts.stages={4: 60}"]).params.run
    assert run.stages == ["02_cni_install", "00_preflight", "03_validation"]
    assert run.timeouts.for_stage("04_policy_qos") == 60
    assert run.timeouts.for_stage("00_preflight") == 1800


def test_files_are_hashed_in_layering_order(tmp_path):
    site = write(tmp_path, "s.yaml", "site: x\n")
    files = load_params([site]).files
    assert [f["path"] for f in files] == [str(DEFAULTS_FILE), str(site)]
    assert all(len(f["sha256"]) == 64 for f in files)


# --- error messages: file, key path, value, expectation --------------------------------------

def test_unknown_key_names_file_line_and_suggests(tmp_path):
    site = write(tmp_path, "s.yaml", "cni:\n  profil: lab\n")
    (msg,) = problems([site])
    assert msg == f"{site}:2: cni.profil: unknown key; did you mean 'profile'?"


def test_unknown_key_without_close_match_lists_known_keys(tmp_path):
    site = write(tmp_path, "s.yaml", "qos: {zzz: 1}\n")
    (msg,) = problems([site])
    assert "qos.zzz: unknown key; known keys: enabled, bandwidth, tolerance_pct" in msg


def test_unknown_top_level_section_and_set_key():
    (msg,) = problems([], ["kubspray.version=v2.31.0"])
    assert msg == "--set kubspray.version: kubspray: unknown key; did you mean 'kubespray'?"


def test_wrong_value_names_value_and_expectation(tmp_path):
    site = write(tmp_path, "s.yaml", "kubespray:\n  network_plugin: calico\n")
    (msg,) = problems([site])
    assert msg == f"{site}:2: kubespray.network_plugin = 'calico': input should be 'none', 'cni' or 'custom_cni'"


def test_wrong_type_in_a_list_item(tmp_path):
    site = write(tmp_path, "s.yaml", f"cluster:\n  nodes:\n    - {NODE}\n    - {{name: n2, roles: [master], ansible_host: h}}\n")
    (msg,) = problems([site])
    assert msg.startswith(f"{site}:4: cluster.nodes[1].roles[0] = 'master': input should be 'kube_control_plane'")


def test_missing_required_key(tmp_path):
    site = write(tmp_path, "s.yaml", "cluster:\n  nodes:\n    - {roles: [etcd, kube_control_plane]}\n")
    msgs = problems([site])
    assert f"{site}:3: cluster.nodes[0].name: required key is missing" in msgs
    assert f"{site}:3: cluster.nodes[0].ansible_host: required key is missing" in msgs


def test_cross_field_rules(tmp_path):
    site = write(tmp_path, "s.yaml", "kubespray: {kube_pods_subnet: 10.233.0.0/17}\n")
    (msg,) = problems([site])
    assert msg.endswith("kubespray.kube_service_addresses: 10.233.0.0/18 overlaps kube_pods_subnet 10.233.0.0/17; "
                        "expected two disjoint networks")
    assert problems([], ["kubespray.network_plugin=custom_cni"])[0].endswith(
        "cni.route: 'direct' with kubespray.network_plugin 'custom_cni': route 'kubespray_custom_cni' goes with "
        "network_plugin 'custom_cni', and only with it")
    assert problems([], ["qos.tolerance_pct=0"])[0].startswith("--set qos.tolerance_pct: qos.tolerance_pct = 0: input should be")
    assert "provisioner.kubeconfig: provisioner 'existing' needs the path of its kubeconfig" in problems([], ["provisioner.kind=existing"])[0]
    site = write(tmp_path, "e.yaml", f"cluster: {{nodes: [{NODE}, {NODE.replace('n1', 'n2')}]}}\n")
    assert "the number of etcd nodes must be odd, got 2" in problems([site])[0]


def test_several_problems_are_reported_at_once(tmp_path):
    site = write(tmp_path, "s.yaml", "site: Bad_Site\nqos: {tolerance_pct: 0}\nrun: {stages: [9]}\n")
    msgs = problems([site])
    assert len(msgs) == 3
    assert any("run.stages[0] = 9: unknown stage 9" in m for m in msgs)


@pytest.mark.parametrize("text, expected", [
    ("site: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping of sections"),
    ("site: a\nsite: b\n", ":2: site: duplicate key"),
])
def test_malformed_files(tmp_path, text, expected):
    site = write(tmp_path, "s.yaml", text)
    (msg,) = problems([site])
    assert msg.startswith(str(site)) and expected in msg


def test_unreadable_file(tmp_path):
    (msg,) = problems([tmp_path / "nope.yaml"])
    assert "nope.yaml: cannot read params file" in msg


@pytest.mark.parametrize("expr, expected", [
    ("no-equals-sign", "--set no-equals-sign: expected key.path=value"),
    ("a..b=s3cr3t", "--set a..b: '' is not a key"),
    ("cluster.nodes[3].ip=1.2.3.4", "--set cluster.nodes[3].ip: cluster.nodes[3]: no such list item"),
    ("site.x=1", "--set site.x: site is not a mapping"),
])
def test_bad_set_expressions(expr, expected):
    (msg,) = problems([], [expr])
    assert msg.startswith(expected)


def test_parse_set_types_values():
    assert parse_set("a.b[2].c=[1, x]") == (("a", "b", 2, "c"), [1, "x"])
    assert parse_set("run.plan=true") == (("run", "plan"), True)


# --- secrets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ref", ["env:BECOME_PW", "file:/etc/pw", "/etc/pw", "~/pw", "./pw"])
def test_secret_fields_accept_references(ref):
    p = load_params([], [f"cluster.ssh.become_password={ref}"]).params
    assert p.cluster.ssh.become_password.endswith(ref.split(":")[-1].lstrip(".~"))


@pytest.mark.parametrize("value", ["hunter2-password", "env:1BAD", "env:A-B", "'file:'"])
def test_inline_secrets_are_rejected_and_not_echoed(value):
    (msg,) = problems([], [f"cluster.ssh.become_password={value}"])
    assert "cluster.ssh.become_password = <hidden>" in msg
    assert "secret reference" in msg or "needs a path" in msg
    assert msg.startswith("--set cluster.ssh.become_password: ")
    assert "hunter2" not in msg


def test_secret_looking_keys_in_free_form_mappings(tmp_path):
    site = write(tmp_path, "s.yaml", """
        kubespray: {extra_vars: {registry: {admin_password: s3cr3t-inline}}}
        cni: {config: {apiToken: tok-inline-123}}
        """)
    msgs = problems([site])
    assert any("'registry.admin_password' looks like a secret" in m for m in msgs)
    assert any("'apiToken' looks like a secret" in m for m in msgs)
    assert not any("s3cr3t-inline" in m or "tok-inline-123" in m for m in msgs)
    ok = write(tmp_path, "ok.yaml", "kubespray: {extra_vars: {registry_password: env:REG_PW}}\n")
    assert load_params([ok]).params.kubespray.extra_vars == {"registry_password": "env:REG_PW"}


def test_kubeconfig_and_key_are_secret_references():
    p = load_params([], ["provisioner.kubeconfig=/etc/kube.conf", "cluster.ssh.key_file=/k",
                         "kubespray.extra_vars={registry_password: 'env:P'}"]).params
    assert sorted(p.secret_refs()) == ["/etc/kube.conf", "/k", "env:P"]


CANARY_INLINE = "canary-inline-secret-4242"


@pytest.mark.parametrize("text, key", [
    # in a list, nested in a list item, as a number, under cni.config's psk
    (f"kubespray: {{extra_vars: {{registry_passwords: [{CANARY_INLINE}]}}}}", "registry_passwords[0]"),
    (f"kubespray: {{extra_vars: {{users: [{{name: a, password: {CANARY_INLINE}}}]}}}}", "users[0].password"),
    ("kubespray: {extra_vars: {etcd_password: 4242424242}}", "etcd_password"),
    (f"cni: {{config: {{ipsec: {{psk: {CANARY_INLINE}}}}}}}", "ipsec.psk"),
    ("cni:\n  profile: generic\n  source:\n    kind: helm\n    helm:\n      repository_url: https://x\n      chart: c\n"
     f"      values: {{auth: {{apiKey: {CANARY_INLINE}}}}}", "auth.apiKey"),
])
def test_inline_secrets_nested_in_lists_numbers_and_cni_config(tmp_path, text, key):
    msgs = problems([write(tmp_path, "s.yaml", text + "\n")])
    assert any(f"'{key}' looks like a secret" in m for m in msgs), msgs
    assert not any(CANARY_INLINE in m or "4242424242" in m for m in msgs)


# --- static checks before anything is touched (params/checks.py) ------------------------------

ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]) + "\n"


@pytest.mark.parametrize("text, expected", [
    (ALIAS_BOMB, "alias bomb"),
    ("x: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than 64 levels"),
])
def test_yaml_bombs_are_refused(tmp_path, text, expected):
    """(how fast: benchmarks/params_bounds.py)"""
    assert len(ALIAS_BOMB) < 700
    (msg,) = problems([write(tmp_path, "bomb.yaml", text)])
    assert expected in msg and "bomb.yaml" in msg


@pytest.mark.parametrize("text, expected", [
    ("policy: {files: [missing.yaml]}", "policy.files[0] = '{d}/missing.yaml': the policy file does not exist"),
    ("cni: {profile: generic, source: {kind: file, path: nope.yml}}",
     "cni.source.path = '{d}/nope.yml': the CNI manifest does not exist"),
    ("cni: {profile: generic, source: {kind: file, path: bad.yml}}", "the CNI manifest is not valid YAML"),
    ("policy: {scenarios: [default-deny-ingres]}", "policy.scenarios: unknown built-in scenario 'default-deny-ingres'"),
    ("cluster: {preflight: {waivers: [module_openvswich]}}",
     "cluster.preflight.waivers[0] = 'module_openvswich': no preflight check has this name; did you mean 'module_openvswitch'?"),
    ("cni: {config: {antreaProxy: {proxyAll: true}}}", "proxyAll: true needs cni.config.kubeAPIServerOverride"),
    ("cni: {config: {antreaProxy: {proxyAl: true}}}", "cni.config.antreaProxy.proxyAl: unknown Antrea setting; did you mean"),
    ("cni: {image_registry: 'https://registry.example:5000'}", "without a scheme such as https://"),
    ("cni: {version: v2.77.0}", "cni.version = 'v2.77.0': not an Antrea release this runbook knows"),
    ("cluster: {nodes: [{name: n1, roles: [kube_control_plane, etcd, kube_node], ansible_host: '10.99.0.1l '}]}",
     "cluster.nodes[0].ansible_host = '10.99.0.1l ': expected an IP address or a host name"),
    ("cluster: {nodes: [{name: n1, roles: [kube_control_plane, etcd, kube_node], ansible_host: '10.99.0.1l'}]}",
     "looks like a mistyped IPv4 address"),
])
def test_static_checks_name_file_key_and_expectation(tmp_path, text, expected):
    (tmp_path / "bad.yml").write_text("a: [\n")
    site = write(tmp_path, "s.yaml", text + "\n")
    msgs = problems([site])
    assert any(expected.format(d=tmp_path) in m for m in msgs), msgs
    assert all(m.startswith(f"{site}:") or m.startswith("s.yaml:") for m in msgs), msgs


def test_static_checks_pass_for_good_inputs(tmp_path):
    (tmp_path / "deny.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d, namespace: x}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n")
    site = write(tmp_path, "s.yaml", """
        policy: {files: [deny.yaml], scenarios: [default-deny-ingress]}
        cluster: {preflight: {waivers: [module_openvswitch]}}
        cni: {version: v2.6.1, image_registry: 'mirror.local:5000/antrea',
              config: {antreaProxy: {proxyAll: true}, kubeAPIServerOverride: 'https://10.0.0.1:6443'}}
        """)
    p = load_params([site]).params
    assert p.cni.image_registry == "mirror.local:5000/antrea"


def test_stage_timeouts_can_be_set_by_stage_id():
    run = load_params([], ["run.timeouts.stages.02_cni_install=600"]).params.run
    assert run.timeouts.for_stage("02_cni_install") == 600


def test_keys_nothing_reads_are_gone():
    msgs = problems([], ["validation.timeouts.total_s=900", "cni.registry_credentials={username: u}"])
    assert any("validation.timeouts.total_s: unknown key" in m for m in msgs)
    assert any("cni.registry_credentials: unknown key" in m for m in msgs)
