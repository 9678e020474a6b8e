"""Antrea profile rendering against the real Antrea v2.7.0 manifest (../shared/fixtures)."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from cni_runbook.cni.antrea import find_antrea_config, helm_config_checksum, render_antrea
from cni_runbook.cni.errors import CniError, ManifestError, SettingsError
from cni_runbook.cni.manifests import Manifest

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared/fixtures/antrea/antrea-v2.7.0-dev-manifest.yml"


@pytest.fixture(scope="module")
def upstream() -> Manifest:
    return Manifest.from_file(FIXTURE)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old line, new line) pairs of a line-for-line edit; fails if lines were added or removed."""
    a, b = before.splitlines(), after.splitlines()
    pairs = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        assert tag == "replace" and i2 - i1 == j2 - j1, (tag, a[i1:i2], b[j1:j2])
        pairs += list(zip(a[i1:i2], b[j1:j2]))
    return pairs


def test_upstream_checksum_follows_helm_rule(upstream):
    config = find_antrea_config(upstream)
    assert helm_config_checksum(config.document.text) == "f775fbc21f892587d5fe45d620b3a6c63385cb43f9648895ddce8b4732de2ca8"


def test_only_the_changed_lines_differ(upstream):
    rendered = render_antrea(
        upstream,
        version="v2.7.0",
        settings={
            "trafficEncapMode": "hybrid",
            "tunnelType": "vxlan",
            "antreaProxy": {"proxyAll": True},
            "kubeAPIServerOverride": "https://10.0.0.10:6443",
            "featureGates.EgressTrafficShaping": True,
            "egress.exceptCIDRs": ["10.0.0.0/8", "192.168.0.0/16"],
        },
        kube_proxy_remove=True,
    ).rendered
    pairs = changed_lines(upstream.text, rendered.text)
    checksum = helm_config_checksum(find_antrea_config(rendered).document.text)
    old_sum = "f775fbc21f892587d5fe45d620b3a6c63385cb43f9648895ddce8b4732de2ca8"
    assert sorted(pairs) == sorted(
        [
            ('    trafficEncapMode: "encap"', '    trafficEncapMode: "hybrid"'),
            ('    tunnelType: "geneve"', '    tunnelType: "vxlan"'),
            ("      proxyAll: false", "      proxyAll: true"),
            ('    kubeAPIServerOverride: ""', '    kubeAPIServerOverride: "https://10.0.0.10:6443"'),
            ('    kubeAPIServerOverride: ""', '    kubeAPIServerOverride: "https://10.0.0.10:6443"'),
            ("    #  EgressTrafficShaping: false", "      EgressTrafficShaping: true"),
            ("      exceptCIDRs:", '      exceptCIDRs: ["10.0.0.0/8", "192.168.0.0/16"]'),
            (f"        checksum/config: {old_sum}", f"        checksum/config: {checksum}"),
            (f"        checksum/config: {old_sum}", f"        checksum/config: {checksum}"),
        ]
        + [('          image: "antrea/antrea-agent-ubuntu:latest"', '          image: "antrea/antrea-agent-ubuntu:v2.7.0"')] * 3
        + [('          image: "antrea/antrea-controller-ubuntu:latest"', '          image: "antrea/antrea-controller-ubuntu:v2.7.0"')]
    )
    agent = yaml.safe_load(find_antrea_config(rendered).agent)
    assert agent["trafficEncapMode"] == "hybrid"
    assert agent["antreaProxy"] == {**yaml.safe_load(find_antrea_config(upstream).agent)["antreaProxy"], "proxyAll": True}
    assert agent["featureGates"] == {"EgressTrafficShaping": True}
    controller = yaml.safe_load(find_antrea_config(rendered).controller)
    assert controller["kubeAPIServerOverride"] == "https://10.0.0.10:6443"


def test_proxy_all_without_kube_proxy_needs_api_server_override(upstream):
    with pytest.raises(SettingsError, match="kubeAPIServerOverride is required"):
        render_antrea(upstream, version="v2.7.0", settings={"antreaProxy.proxyAll": True}, kube_proxy_remove=True)


def test_unknown_key_is_rejected_with_a_hint(upstream):
    with pytest.raises(SettingsError) as err:
        render_antrea(upstream, version="v2.7.0", settings={"trafficEncapMod": "encap"}, where="site.yaml: cni.settings")
    assert "site.yaml: cni.settings: trafficEncapMod: unknown Antrea setting; did you mean trafficEncapMode?" in str(err.value)


def test_images_pinned_and_mirrored(upstream):
    result = render_antrea(upstream, version="2.7.0", image_registry="mirror.local:5000/antrea/")
    pairs = changed_lines(upstream.text, result.rendered.text)
    assert sorted(set(pairs)) == [
        ('          image: "antrea/antrea-agent-ubuntu:latest"', '          image: "mirror.local:5000/antrea/antrea-agent-ubuntu:v2.7.0"'),
        ('          image: "antrea/antrea-controller-ubuntu:latest"', '          image: "mirror.local:5000/antrea/antrea-controller-ubuntu:v2.7.0"'),
    ]
    assert len(pairs) == 4  # three agent containers, one controller; no config change, no checksum change
    assert result.changes == (
        "image antrea/antrea-agent-ubuntu:latest -> mirror.local:5000/antrea/antrea-agent-ubuntu:v2.7.0",
        "image antrea/antrea-controller-ubuntu:latest -> mirror.local:5000/antrea/antrea-controller-ubuntu:v2.7.0",
    )
    images = {i for o in result.objects() for i in o.images}
    assert images == {"mirror.local:5000/antrea/antrea-agent-ubuntu:v2.7.0", "mirror.local:5000/antrea/antrea-controller-ubuntu:v2.7.0"}


def test_rendering_is_idempotent(upstream):
    settings = {"trafficEncapMode": "noEncap", "featureGates": {"Egress": False, "Multicast": False}, "noSNAT": True}
    once = render_antrea(upstream, version="v2.7.0", settings=settings).rendered
    twice = render_antrea(once, version="v2.7.0", settings=settings).rendered
    assert twice.text == once.text
    config = find_antrea_config(once)
    assert yaml.safe_load(config.agent)["featureGates"] == {"Egress": False, "Multicast": False}
    assert yaml.safe_load(config.controller)["featureGates"] == {"Egress": False, "Multicast": False}


def test_agent_only_gate_stays_out_of_the_controller(upstream):
    rendered = render_antrea(upstream, version="v2.7.0", settings={"featureGates.NodeLatencyMonitor": True, "featureGates.NodeIPAM": False}).rendered
    config = find_antrea_config(rendered)
    assert yaml.safe_load(config.agent)["featureGates"] == {"NodeLatencyMonitor": True}
    assert yaml.safe_load(config.controller)["featureGates"] == {"NodeIPAM": False}


def test_image_of_another_version_is_refused(upstream):
    other = Manifest(upstream.text.replace("antrea-agent-ubuntu:latest", "antrea-agent-ubuntu:v2.6.1"), "antrea-2.6.yml")
    with pytest.raises(SettingsError, match=r"antrea-2.6.yml: image antrea/antrea-agent-ubuntu:v2.6.1 is tagged v2.6.1 but Antrea v2.7.0 was chosen"):
        render_antrea(other, version="v2.7.0")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"featureGates.Egres": True}, "featureGates.Egres: unknown Antrea feature gate; did you mean featureGates.Egress?"),
        ({"featureGates.AntreaProxy": True}, "featureGates.AntreaProxy: AntreaProxy is GA and its gate is gone in Antrea 2.x: use antreaProxy.enable"),
        ({"featureGates.Egress": "yes"}, "featureGates.Egress: expected true or false, got 'yes'"),
        ({"trafficEncapMode": "noencap"}, "trafficEncapMode: expected one of encap, noEncap, hybrid, networkPolicyOnly, got 'noencap'; did you mean 'noEncap'?"),
        ({"tunnelPort": 70000}, "tunnelPort: expected an integer from 0 to 65535, got 70000"),
        ({"egress.exceptCIDRs": ["10.0.0.0/8", "nope"]}, "egress.exceptCIDRs: expected a list of CIDRs (e.g. [\"10.0.0.0/8\"]), 'nope' is not one"),
        ({"kubeAPIServerOverride": "https://x y"}, "kubeAPIServerOverride: expected a host, host:port or https://host:port"),
        ({"trafficEncapMode": "noEncap", "tunnelType": "vxlan"}, "tunnelType: 'vxlan' has no effect with trafficEncapMode 'noEncap' (no tunnel); remove it"),
        ({"trafficEncryptionMode": "wireGuard", "tunnelType": "gre"}, "tunnelType: 'gre' has no effect with trafficEncryptionMode 'wireGuard'"),
        ({"tunnelType": "gre", "tunnelPort": 4000}, "tunnelPort: GRE is an IP protocol without ports"),
        ({"trafficEncapMode": "hybrid", "trafficEncryptionMode": "ipsec"}, "trafficEncryptionMode: 'ipsec' needs trafficEncapMode 'encap'"),
        ({"noSNAT": True}, "noSNAT: true is only valid with trafficEncapMode 'noEncap', got 'encap'"),
        ({"antreaProxy.enable": False, "antreaProxy.proxyAll": True}, "antreaProxy.proxyAll: true needs antreaProxy.enable: true"),
        ({"featureGates.Egress": False, "featureGates.EgressTrafficShaping": True}, "featureGates.EgressTrafficShaping: true needs featureGates.Egress: true"),
        ({"featureGates.Egress": False, "egress.maxEgressIPsPerNode": 4}, "egress.maxEgressIPsPerNode set while featureGates.Egress is false"),
    ],
)
def test_invalid_or_inconsistent_settings(upstream, settings, message):
    with pytest.raises(SettingsError) as err:
        render_antrea(upstream, version="v2.7.0", settings=settings, where="params/site.yaml: cni.config")
    assert any(p.startswith(f"params/site.yaml: cni.config: {message}") for p in err.value.problems), err.value.problems


def test_kube_proxy_remove_needs_proxy_all(upstream):
    with pytest.raises(SettingsError, match="kube_proxy_remove is true, so antreaProxy.proxyAll must be true"):
        render_antrea(upstream, version="v2.7.0", kube_proxy_remove=True)
    ok = render_antrea(upstream, version="v2.7.0", kube_proxy_remove=True,
                       settings={"antreaProxy.proxyAll": True, "kubeAPIServerOverride": "10.0.0.10:6443"})
    assert "antrea-agent.conf: kubeAPIServerOverride = '10.0.0.10:6443'" in ok.changes


def test_all_problems_reported_together(upstream):
    with pytest.raises(SettingsError) as err:
        render_antrea(upstream, version="v2.7.0", settings={"bogus": 1, "tunnelType": "ipip", "featureGates.Nope": True})
    assert [p.split(":")[1].strip() for p in err.value.problems] == ["bogus", "tunnelType", "featureGates.Nope"]


def test_bad_version_and_mirror_are_refused(upstream):
    with pytest.raises(SettingsError, match="antrea version: expected a release version like v2.7.0, got 'latest'"):
        render_antrea(upstream, version="latest")
    with pytest.raises(CniError, match="image_registry: 'https://mirror.local/antrea': expected host"):
        render_antrea(upstream, version="v2.7.0", image_registry="https://mirror.local/antrea")


def test_manifest_without_antrea_config(upstream):
    with pytest.raises(ManifestError, match=r"^other.yml: no ConfigMap antrea-config \(is this an Antrea manifest\?\)$"):
        render_antrea(Manifest("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", "other.yml"), version="v2.7.0")


def test_settings_per_file_as_in_antreas_docs():
    """`cni.config` may use the per-file form operators copy from Antrea's docs."""
    from cni_runbook.cni.antrea import (AGENT_CONF, CONTROLLER_CONF, AntreaConfig, SettingsError, file_settings,
                                        plan_settings)

    def Conf():  # empty config files: only the settings given count
        return AntreaConfig(None, "", "")

    per_file = plan_settings({AGENT_CONF: {"tunnelType": "vxlan", "defaultMTU": 1400},
                              CONTROLLER_CONF: {"featureGates": {"Traceflow": True}}}, Conf(), where="cni.config")
    flat = plan_settings({"tunnelType": "vxlan", "defaultMTU": 1400}, Conf(), where="cni.config")
    assert per_file[AGENT_CONF] == flat[AGENT_CONF]
    assert per_file[CONTROLLER_CONF] == {("featureGates", "Traceflow"): True}
    with pytest.raises(SettingsError, match=r"antrea-controller.conf.tunnelType: tunnelType belongs in antrea-agent.conf"):
        plan_settings({CONTROLLER_CONF: {"tunnelType": "vxlan"}}, Conf(), where="cni.config")
    assert file_settings({"tunnelType": "vxlan", AGENT_CONF: {"featureGates": {"Egress": True}}}) == {
        "tunnelType": "vxlan", "featureGates.Egress": True}
