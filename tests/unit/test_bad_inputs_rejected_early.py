"""Every bad input of issue 16, given to ``cni-runbook run`` in apply mode on top of params/lab.yaml:
exit 2 with a message naming the file, the key and the expectation, before anything is touched
(no run folder is created, so no stage - and no host or cluster - was reached), and no inline
secret echoed. How fast the YAML bombs are refused: benchmarks/params_bounds.py."""

from __future__ import annotations

import pytest

from cni_runbook import cli
from cni_runbook.params import LAB_FILE

SECRET = "canary-inline-secret-4242"
BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]) + "\n"
GENERIC = "profile: generic, version: null, image_registry: null"

CASES = [
    # (what, site file text, expected in the message)
    ("alias bomb (378 bytes, 9^9 values)", BOMB, "alias bomb"),
    ("3,000-deep nesting", "x: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than 64 levels"),
    ("missing policy file", "policy: {files: [missing.yaml]}", "the policy file does not exist"),
    ("missing cni.source file", f"cni: {{{GENERIC}, source: {{kind: file, path: nope.yml}}}}",
     "the CNI manifest does not exist"),
    ("cni.source file not YAML", f"cni: {{{GENERIC}, source: {{kind: file, path: bad.yml}}}}",
     "the CNI manifest is not valid YAML"),
    ("scenario typo", "policy: {scenarios: [default-deny-ingres]}", "unknown built-in scenario 'default-deny-ingres'"),
    ("waiver typo", "cluster: {preflight: {waivers: [module_openvswich]}}", "did you mean 'module_openvswitch'?"),
    ("proxyAll without kubeAPIServerOverride", "cni: {profile: antrea, config: {antreaProxy: {proxyAll: true}}}",
     "proxyAll: true needs cni.config.kubeAPIServerOverride"),
    ("unknown Antrea setting", "cni: {profile: antrea, config: {antreaProxy: {proxyAl: true}}}",
     "unknown Antrea setting; did you mean"),
    ("cni.config for a profile without settings", "cni: {config: {ipsec: {enabled: true}}}",
     "profile 'lab' has no configuration keys"),
    ("image_registry with a scheme", "cni: {image_registry: 'https://registry.example:5000'}",
     "without a scheme such as https://"),
    ("unknown Antrea release", "cni: {profile: antrea, version: v2.77.0}", "not an Antrea release this runbook knows"),
    ("ansible_host with a trailing space", "cluster: {nodes: [{name: lab-cp1, roles: [kube_control_plane, etcd, "
     "kube_node], ansible_host: '10.99.0.1l '}]}", "expected an IP address or a host name"),
    ("mistyped IPv4 ansible_host", "cluster: {nodes: [{name: lab-cp1, roles: [kube_control_plane, etcd, kube_node], "
     "ansible_host: '10.99.0.1l'}]}", "looks like a mistyped IPv4 address"),
    ("a key nothing reads: validation.timeouts.total_s", "validation: {timeouts: {total_s: 900}}",
     "validation.timeouts.total_s: unknown key"),
    ("a key nothing reads: cni.registry_credentials", "cni: {registry_credentials: {username: u}}",
     "cni.registry_credentials: unknown key"),
    ("inline secret in a list", f"kubespray: {{extra_vars: {{registry_passwords: [{SECRET}]}}}}",
     "'registry_passwords[0]' looks like a secret"),
    ("inline secret in a list item", f"kubespray: {{extra_vars: {{users: [{{name: a, password: {SECRET}}}]}}}}",
     "'users[0].password' looks like a secret"),
    ("inline secret as a number", "kubespray: {extra_vars: {etcd_password: 4242424242}}",
     "'etcd_password' looks like a secret"),
    ("inline secret under cni.config", f"cni: {{profile: antrea, config: {{ipsec: {{psk: {SECRET}}}}}}}",
     "'ipsec.psk' looks like a secret"),
    ("inline secret in Helm values", "cni:\n  profile: generic\n  version: null\n  image_registry: null\n"
     "  source:\n    kind: helm\n    helm:\n      repository_url: https://x\n      chart: c\n"
     f"      values: {{auth: {{apiKey: {SECRET}}}}}", "'auth.apiKey' looks like a secret"),
    ("inline become password", f"cluster: {{ssh: {{become_password: {SECRET}}}}}", "become_password = <hidden>"),
]


@pytest.mark.parametrize("what, text, expected", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_stops_the_run_before_anything_is_touched(tmp_path, capsys, what, text, expected):
    (tmp_path / "bad.yml").write_text("a: [\n")
    site = tmp_path / "site.yaml"
    site.write_text(text + "\n")
    out = tmp_path / "outputs"
    code = cli.main(["--outputs", str(out), "run", "--params", str(LAB_FILE), str(site), "--stages", "all"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "site.yaml" in err, err
    assert SECRET not in err and "4242424242" not in err
    assert not out.exists() or not any(out.iterdir())  # no run folder: no stage ran

