"""The Antrea profile: config keys, image pinning and mirroring on Antrea's own manifest.

:func:`render_antrea` edits the upstream ``antrea.yml`` surgically: only the lines of the changed
settings, images and ``checksum/config`` annotations differ; every comment and every other line
stays byte for byte (see :mod:`cni_runbook.cni.yamltext`).

Settings are dotted keys (or nested mappings, flattened to dotted keys); each goes to the config
file(s) of the ``antrea-config`` ConfigMap where Antrea reads it (``SETTINGS``): e.g.
``kubeAPIServerOverride`` to both antrea-agent.conf and antrea-controller.conf, ``Egress``
feature gate to both, ``EgressTrafficShaping`` to the agent only.

Image pinning: Antrea's images (repository ``antrea/...`` or a name starting with ``antrea-``)
tagged ``latest`` or untagged get the chosen version's tag (``v2.7.0``); an image already tagged
with another version is refused (the manifest and the version disagree). Mirroring follows
:mod:`cni_runbook.cni.images` (``mirror.local:5000/antrea`` ->
``mirror.local:5000/antrea/antrea-agent-ubuntu:v2.7.0``).

``checksum/config`` pod-template annotations (Antrea's Helm-built manifests carry one, so that a
config change restarts the Pods) are recomputed the way Helm computes them - the SHA-256 of the
antrea-config document without its ``---`` and ``# Source`` header lines - but only when the
config changed and only where the upstream manifest has one.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any


from .errors import CniError, ManifestError, SettingsError
from .images import check_mirror_prefix, mirror_image, parse_image, rewrite_document_images
from .manifests import Document, Manifest, RenderedManifest, split_documents
from .yamltext import load_yaml, block_scalar, block_text, replace_block_scalar, set_config_keys

AGENT_CONF = "antrea-agent.conf"
CONTROLLER_CONF = "antrea-controller.conf"
CONFIGMAP_NAME = "antrea-config"

#: Feature gates of Antrea v2.7.0 (antrea-agent.conf / antrea-controller.conf). Gates found in the
#: manifest's own config comments are accepted as well, so a newer Antrea needs no code change.
AGENT_FEATURE_GATES: frozenset[str] = frozenset(
    "AllAlpha AllBeta PreferSameTrafficDistribution CleanupStaleUDPSvcConntrack Traceflow PacketCapture "
    "AntreaPolicy FlowExporter NetworkPolicyStats Egress AntreaIPAM Multicast Multicluster SecondaryNetwork "
    "ServiceExternalIP TrafficControl IPsecCertAuth SupportBundleCollection L7NetworkPolicy LoadBalancerModeDSR "
    "EgressTrafficShaping EgressSeparateSubnet NodeNetworkPolicy NodeLatencyMonitor BGPPolicy "
    "NFTablesHostNetworkMode AntreaNodeConfig".split()
)
CONTROLLER_FEATURE_GATES: frozenset[str] = frozenset(
    "AllAlpha AllBeta Traceflow AntreaPolicy NetworkPolicyStats Multicast Egress NodeIPAM AntreaIPAM "
    "ServiceExternalIP IPsecCertAuth ExternalNode SupportBundleCollection Multicluster L7NetworkPolicy "
    "AdminNetworkPolicy ClusterNetworkPolicy".split()
)
#: Gates that Antrea 2.x no longer has, with what replaces them.
REMOVED_FEATURE_GATES: dict[str, str] = {
    "AntreaProxy": "AntreaProxy is GA and its gate is gone in Antrea 2.x: use antreaProxy.enable",
    "NodePortLocal": "NodePortLocal is GA and its gate is gone in Antrea 2.x: use nodePortLocal.enable in the manifest",
}

ENCAP_MODES = ("encap", "noEncap", "hybrid", "networkPolicyOnly")
TUNNEL_TYPES = ("geneve", "vxlan", "gre", "stt")
ENCRYPTION_MODES = ("none", "ipsec", "wireGuard")

_AGENT, _CONTROLLER, _BOTH = (AGENT_CONF,), (CONTROLLER_CONF,), (AGENT_CONF, CONTROLLER_CONF)


def _enum(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        near = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
        near += [a for a in allowed if isinstance(value, str) and a.lower() == value.lower()]
        hint = f"; did you mean {near[-1]!r}?" if near else ""
        return f"expected one of {', '.join(allowed)}, got {value!r}{hint}"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {value!r}"


def _integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"expected an integer from {low} to {high}, got {value!r}"
        return None

    return check


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {value!r}"


def _api_server(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string (host, host:port or https://host:port), got {value!r}"
    if value and not re.fullmatch(r"(https?://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?/?", value):
        return f"expected a host, host:port or https://host:port (e.g. https://10.0.0.10:6443), got {value!r}"
    return None


def _cidr_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected a list of CIDRs (e.g. [\"10.0.0.0/8\"]), got {value!r}"
    for item in value:
        try:
            if not isinstance(item, str) or "/" not in item:
                raise ValueError
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"expected a list of CIDRs (e.g. [\"10.0.0.0/8\"]), {item!r} is not one"
    return None


@dataclass(frozen=True)
class SettingSpec:
    """A supported Antrea setting: which config file(s) it goes to and how its value is checked."""

    files: tuple[str, ...]
    check: Callable[[Any], str | None]
    help: str


#: Supported settings (dotted keys of antrea-agent.conf / antrea-controller.conf), besides
#: ``featureGates.<Gate>`` (booleans).
SETTINGS: dict[str, SettingSpec] = {
    "trafficEncapMode": SettingSpec(_AGENT, _enum(*ENCAP_MODES), "how inter-node Pod traffic is carried"),
    "tunnelType": SettingSpec(_AGENT, _enum(*TUNNEL_TYPES), "tunnel protocol in encap/hybrid mode"),
    "tunnelPort": SettingSpec(_AGENT, _integer(0, 65535), "UDP/TCP tunnel port, 0 = the protocol's IANA port"),
    "trafficEncryptionMode": SettingSpec(_AGENT, _enum(*ENCRYPTION_MODES), "encryption of inter-node Pod traffic"),
    "noSNAT": SettingSpec(_AGENT, _boolean, "do not SNAT Pod egress traffic (noEncap only)"),
    "defaultMTU": SettingSpec(_AGENT, _integer(0, 65535), "MTU of Pod interfaces, 0 = discover"),
    "transportInterface": SettingSpec(_AGENT, _string, "Node interface used for tunnels/routing"),
    "wireGuard.port": SettingSpec(_AGENT, _integer(1, 65535), "WireGuard UDP port"),
    "antreaProxy.enable": SettingSpec(_AGENT, _boolean, "AntreaProxy on/off"),
    "antreaProxy.proxyAll": SettingSpec(_AGENT, _boolean, "AntreaProxy serves all Service traffic (kube-proxy replacement)"),
    "kubeAPIServerOverride": SettingSpec(_BOTH, _api_server, "API server address when kube-proxy is removed"),
    "egress.exceptCIDRs": SettingSpec(_AGENT, _cidr_list, "destinations Egress never SNATs"),
    "egress.maxEgressIPsPerNode": SettingSpec(_AGENT, _integer(1, 255), "Egress IPs per Node"),
}


def flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"antreaProxy": {"proxyAll": True}}`` -> ``{"antreaProxy.proxyAll": True}`` (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def file_settings(settings: Mapping[str, Any], conf: str = AGENT_CONF) -> dict[str, Any]:
    """The flat settings of one config file: the flat form plus that file's per-file section."""
    flat = flatten_settings({k: v for k, v in settings.items() if k not in (AGENT_CONF, CONTROLLER_CONF)})
    flat.update(flatten_settings(settings.get(conf) or {}))
    return flat


def config_feature_gates(conf_text: str) -> dict[str, bool]:
    """Feature gates named in a config's top-level ``featureGates:`` (set or commented-out), with their values."""
    gates: dict[str, bool] = {}
    inside = False
    for line in conf_text.splitlines():
        stripped = line.strip()
        if stripped and not line.startswith((" ", "#")):  # a top-level key
            inside = bool(re.fullmatch(r"featureGates:\s*(\{\s*\})?", stripped))
            continue
        m = re.fullmatch(r"#?\s*([A-Z][A-Za-z0-9]*):\s*(true|false)", stripped)
        if inside and m:
            gates[m.group(1)] = m.group(2) == "true"
    return gates


@dataclass(frozen=True)
class AntreaConfig:
    """The two config texts of an antrea-config ConfigMap (as embedded, de-indented) and where they are."""

    document: Document
    agent: str
    controller: str

    @property
    def agent_values(self) -> dict:
        return load_yaml(self.agent) or {}

    @property
    def controller_values(self) -> dict:
        return load_yaml(self.controller) or {}


def find_antrea_config(manifest: Manifest) -> AntreaConfig:
    """Locate the antrea-config ConfigMap of an Antrea manifest; raises ManifestError if absent."""
    return _antrea_config(split_documents(manifest), manifest.source)


def _antrea_config(documents: list[Document], source: str) -> AntreaConfig:
    for doc in documents:
        body = doc.body
        if isinstance(body, dict) and body.get("kind") == "ConfigMap" and (body.get("metadata") or {}).get("name") == CONFIGMAP_NAME:
            data = body.get("data") or {}
            missing = [k for k in (AGENT_CONF, CONTROLLER_CONF) if not isinstance(data.get(k), str)]
            if missing:
                raise ManifestError(f"{doc.where}: ConfigMap {CONFIGMAP_NAME} has no data.{' nor data.'.join(missing)}")
            return AntreaConfig(doc, data[AGENT_CONF], data[CONTROLLER_CONF])
    raise ManifestError(f"{source}: no ConfigMap {CONFIGMAP_NAME} (is this an Antrea manifest?)")


def plan_settings(
    settings: Mapping[str, Any],
    config: AntreaConfig,
    *,
    kube_proxy_remove: bool = False,
    where: str = "antrea settings",
) -> dict[str, dict[tuple[str, ...], Any]]:
    """Check ``settings`` and split them per config file: {conf name: {key path: value}}.

    Raises :class:`SettingsError` listing every unknown key (with a "did you mean"), invalid value
    and inconsistent combination, each prefixed with ``where`` (the params file and key).
    ``settings`` is flat (``antreaProxy: {proxyAll: true}``) or per file as in Antrea's docs
    (``antrea-agent.conf: {antreaProxy: ...}``, ``antrea-controller.conf: {...}``), or both.
    """
    only: dict[str, str] = {}  # key -> the one config file the operator put it under
    flat_input = {k: v for k, v in settings.items() if k not in (AGENT_CONF, CONTROLLER_CONF)}
    flat = flatten_settings(flat_input)
    problems: list[str] = []
    for conf in (AGENT_CONF, CONTROLLER_CONF):
        for key, value in flatten_settings(settings.get(conf) or {}).items():
            if key in flat and flat[key] != value:
                problems.append(f"{where}: {conf}.{key}: also set to {flat[key]!r} outside {conf}; set it once")
            flat[key] = value
            only[key] = conf
    agent_gates = AGENT_FEATURE_GATES | set(config_feature_gates(config.agent))
    controller_gates = CONTROLLER_FEATURE_GATES | set(config_feature_gates(config.controller))
    plan: dict[str, dict[tuple[str, ...], Any]] = {AGENT_CONF: {}, CONTROLLER_CONF: {}}

    for key, value in flat.items():
        if key.startswith("featureGates."):
            gate = key.split(".", 1)[1]
            if gate in REMOVED_FEATURE_GATES:
                problems.append(f"{where}: {key}: {REMOVED_FEATURE_GATES[gate]}")
                continue
            if gate not in agent_gates | controller_gates:
                near = difflib.get_close_matches(gate, sorted(agent_gates | controller_gates), n=1, cutoff=0.6)
                hint = f"did you mean featureGates.{near[0]}? " if near else ""
                problems.append(f"{where}: {key}: unknown Antrea feature gate; {hint}known gates: {', '.join(sorted(agent_gates | controller_gates))}")
                continue
            if not isinstance(value, bool):
                problems.append(f"{where}: {key}: expected true or false, got {value!r}")
                continue
            for conf, gates in ((AGENT_CONF, agent_gates), (CONTROLLER_CONF, controller_gates)):
                if gate in gates and only.get(key, conf) == conf:
                    plan[conf][("featureGates", gate)] = value
            if key in only and gate not in (agent_gates if only[key] == AGENT_CONF else controller_gates):
                problems.append(f"{where}: {only[key]}.{key}: not a feature gate of {only[key]}")
            continue
        spec = SETTINGS.get(key)
        if spec is None:
            candidates = sorted(SETTINGS) + ["featureGates.<Gate>"]
            near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6) or [c for c in candidates if c.lower() == key.lower()]
            hint = f"did you mean {near[0]}? " if near else ""
            problems.append(f"{where}: {key}: unknown Antrea setting; {hint}supported: {', '.join(candidates)}")
            continue
        problem = spec.check(value)
        if problem:
            problems.append(f"{where}: {key}: {problem}")
            continue
        if key in only and only[key] not in spec.files:
            problems.append(f"{where}: {only[key]}.{key}: {key} belongs in {' and '.join(spec.files)}")
            continue
        for conf in spec.files:
            plan[conf][tuple(key.split("."))] = value
    if problems:
        raise SettingsError(problems)
    problems = _consistency(flat, config, kube_proxy_remove=kube_proxy_remove, where=where)
    if problems:
        raise SettingsError(problems)
    return {conf: edits for conf, edits in plan.items() if edits}


def _consistency(flat: dict[str, Any], config: AntreaConfig, *, kube_proxy_remove: bool, where: str) -> list[str]:
    """Problems of the effective agent config (upstream values overridden by ``flat``)."""
    upstream = config.agent_values
    defaults = {"trafficEncapMode": "encap", "tunnelType": "geneve", "trafficEncryptionMode": "none",
                "antreaProxy.enable": True, "antreaProxy.proxyAll": False, "kubeAPIServerOverride": "", "noSNAT": False}
    gate_defaults = config_feature_gates(config.agent)

    def effective(key: str) -> Any:
        if key in flat:
            return flat[key]
        node: Any = upstream
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
        if key.startswith("featureGates."):
            return gate_defaults.get(key.split(".", 1)[1], False)
        return defaults.get(key)

    mode, tunnel, encryption = effective("trafficEncapMode"), effective("tunnelType"), effective("trafficEncryptionMode")
    problems = []
    if effective("antreaProxy.proxyAll") and not effective("antreaProxy.enable"):
        problems.append(f"{where}: antreaProxy.proxyAll: true needs antreaProxy.enable: true")
    if kube_proxy_remove and not effective("antreaProxy.proxyAll"):
        problems.append(f"{where}: kube_proxy_remove is true, so antreaProxy.proxyAll must be true (nothing else would serve Services)")
    if kube_proxy_remove and effective("antreaProxy.proxyAll") and not effective("kubeAPIServerOverride"):
        problems.append(
            f"{where}: kubeAPIServerOverride is required with antreaProxy.proxyAll and kube_proxy_remove: true "
            "(without kube-proxy the agents cannot reach the API server through its Service); "
            "set it to the API server or its load balancer, e.g. https://10.0.0.10:6443"
        )
    if "tunnelType" in flat and mode in ("noEncap", "networkPolicyOnly"):
        problems.append(f"{where}: tunnelType: {flat['tunnelType']!r} has no effect with trafficEncapMode {mode!r} (no tunnel); remove it")
    if "tunnelPort" in flat and flat["tunnelPort"] and mode in ("noEncap", "networkPolicyOnly"):
        problems.append(f"{where}: tunnelPort: {flat['tunnelPort']} has no effect with trafficEncapMode {mode!r} (no tunnel); remove it")
    if "tunnelPort" in flat and flat["tunnelPort"] and tunnel == "gre":
        problems.append(f"{where}: tunnelPort: GRE is an IP protocol without ports; tunnelPort applies to geneve, vxlan and stt")
    if encryption != "none" and mode != "encap":
        problems.append(f"{where}: trafficEncryptionMode: {encryption!r} needs trafficEncapMode 'encap' (Antrea encrypts tunnel traffic only), got {mode!r}")
    if encryption == "wireGuard" and "tunnelType" in flat:
        problems.append(
            f"{where}: tunnelType: {flat['tunnelType']!r} has no effect with trafficEncryptionMode 'wireGuard' "
            "(WireGuard carries inter-node traffic itself); remove tunnelType"
        )
    if effective("noSNAT") and mode != "noEncap":
        problems.append(f"{where}: noSNAT: true is only valid with trafficEncapMode 'noEncap', got {mode!r}")
    if effective("featureGates.EgressTrafficShaping") and not effective("featureGates.Egress"):
        problems.append(f"{where}: featureGates.EgressTrafficShaping: true needs featureGates.Egress: true")
    egress_keys = [k for k in flat if k.startswith("egress.")]
    if egress_keys and not effective("featureGates.Egress"):
        problems.append(f"{where}: {', '.join(egress_keys)} set while featureGates.Egress is false: enable the Egress gate or drop them")
    return problems


def helm_config_checksum(configmap_text: str) -> str:
    """SHA-256 of a ConfigMap document the way Helm's ``include ... | sha256sum`` sees it.

    The document's leading ``---`` and comment lines (``# Source: ...``) are not part of the
    template's output and are skipped.
    """
    lines = configmap_text.splitlines(keepends=True)
    while lines and (lines[0].startswith("---") or lines[0].lstrip().startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def normalize_version(version: str, *, where: str = "antrea version") -> str:
    """``2.7.0`` / ``v2.7.0`` -> ``v2.7.0``; raises SettingsError for anything else."""
    text = str(version).strip()
    if not re.fullmatch(r"v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?", text):
        raise SettingsError(f"{where}: expected a release version like v2.7.0, got {version!r}")
    return text if text.startswith("v") else f"v{text}"


def is_antrea_image(image: str) -> bool:
    """Antrea's own images: repository ``antrea/...`` or a name starting with ``antrea-``."""
    ref = parse_image(image)
    return ref.repository.startswith("antrea/") or ref.name.startswith("antrea-")


def render_antrea(
    manifest: Manifest,
    *,
    version: str,
    settings: Mapping[str, Any] | None = None,
    image_registry: str | None = None,
    kube_proxy_remove: bool = False,
    where: str = "antrea settings",
) -> RenderedManifest:
    """Render Antrea's manifest: config keys, pinned image tags, optional mirror, config checksum.

    ``version`` is the Antrea release (``v2.7.0``); ``settings`` dotted keys (see ``SETTINGS``
    and ``featureGates.<Gate>``); ``image_registry`` a mirror prefix (``mirror.local:5000/antrea``);
    ``kube_proxy_remove`` Kubespray's variable of that name (it makes proxyAll and
    kubeAPIServerOverride mandatory); ``where`` prefixes setting errors (e.g. the params file).
    """
    version = normalize_version(version)
    if image_registry:
        image_registry = check_mirror_prefix(image_registry, where=f"{where}: image_registry")
    documents = split_documents(manifest)
    config = _antrea_config(documents, manifest.source)
    plan = plan_settings(settings or {}, config, kube_proxy_remove=kube_proxy_remove, where=where)
    changes: list[str] = []

    # 1. config keys, in the ConfigMap document
    doc = config.document
    text = doc.text
    for conf, edits in plan.items():
        block = block_scalar(text, "data", conf, where=doc.where)
        new_block = set_config_keys(block_text(text, block), edits, where=f"{doc.where}: data.{conf}", indent=block.indent)
        text = replace_block_scalar(text, block, new_block)
        changes += [f"{conf}: {'.'.join(path)} = {value!r}" for path, value in edits.items()]
    if text != doc.text:
        expected = copy.deepcopy(doc.body)
        new_body = load_yaml(text)
        for conf in plan:
            expected["data"][conf] = new_body["data"][conf]
        if new_body != expected:
            raise CniError(f"{doc.where}: editing {', '.join(plan)} changed other parts of the ConfigMap")
        documents = [replace(d, text=text, body=new_body) if d.index == doc.index else d for d in documents]

        # 2. checksum/config annotations (only where upstream has one, only if the config changed)
        documents, updated = _update_checksums(documents, helm_config_checksum(text))
        changes += [f"{name}: checksum/config updated" for name in updated]

    # 3. image tags and mirror
    def rewrite(image: str) -> str:
        ref = parse_image(image)
        if is_antrea_image(image) and not ref.digest:
            if ref.tag in (None, "latest"):
                ref = ref.with_tag(version)
            elif ref.tag != version:
                raise SettingsError(f"{manifest.source}: image {image} is tagged {ref.tag} but Antrea {version} was chosen: use the manifest of {version}")
        new = str(ref)
        return mirror_image(new, image_registry) if image_registry else new

    documents, mapping = rewrite_document_images(documents, rewrite)
    changes += [f"image {old} -> {new}" for old, new in mapping.items()]
    rendered = Manifest("".join(d.text for d in documents), manifest.source)
    return RenderedManifest("antrea", manifest, rendered, tuple(changes))


def _update_checksums(documents: list[Document], new: str) -> tuple[list[Document], list[str]]:
    out, updated = [], []
    for doc in documents:
        body = doc.body if isinstance(doc.body, dict) else {}
        annotations = (((body.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
        if annotations.get("checksum/config") is None:
            out.append(doc)
            continue
        text = re.sub(rf"(?m)^(\s*checksum/config:\s*[\"']?){re.escape(str(annotations['checksum/config']))}", rf"\g<1>{new}", doc.text)
        expected = copy.deepcopy(body)
        expected["spec"]["template"]["metadata"]["annotations"]["checksum/config"] = new
        new_body = load_yaml(text)
        if new_body != expected:
            raise CniError(f"{doc.where}: could not update its checksum/config annotation in place")
        out.append(replace(doc, text=text, body=new_body))
        updated.append(f"{body.get('kind')} {(body.get('metadata') or {}).get('name')}")
    return out, updated
