"""Antrea profile rendering against the real Antrea v2.7.0 manifest (../shared/fixtures)."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from cni_runbook.cni.antrea import find_antrea_config, helm_config_checksum, render_antrea
from cni_runbook.cni.errors import SettingsError
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
