"""The ``flannel`` profile: flannel's own manifest (or chart output), changed only where it must be.

A vendor ``kube-flannel.yml`` (Documentation/kube-flannel.yml of flannel-io/flannel) or the
output of its chart is applied as upstream wrote it, with exactly these changes, each shown in
the rendered diff:

- ``Network`` in ``net-conf.json`` (ConfigMap ``kube-flannel-cfg``) becomes the cluster's pod
  network (Kubespray's ``kube_pods_subnet``): flannel's default 10.244.0.0/16 would not contain
  the node podCIDRs the controller manager hands out, and flanneld refuses such a node;
- image pinning: with ``version``, ``ghcr.io/flannel-io/flannel:<tag>`` gets the tag ``version``
  (a v0.28.9-shaped manifest run as v0.28.10); the CNI plugin image keeps its tag;
- the air-gapped image mirror rule of :mod:`cni_runbook.cni.images` (``image_registry``);
- ``settings`` (``cni.config``): only ``chain_bandwidth: true``, which appends the reference
  ``bandwidth`` plugin to the conflist in ``cni-conf.json`` so pod bandwidth annotations are
  honoured (flannel's own conflist chains only portmap).

Nothing else is touched: the edits are line edits of the documents, and each edited document
is parsed again and compared with the intended object.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .errors import CniError, SettingsError
from .images import check_mirror_prefix, mirror_image, parse_image, rewrite_document_images
from .manifests import Document, Manifest, RenderedManifest, split_documents
from .yamltext import block_scalar, block_text, load_yaml, replace_block_scalar

FLANNEL_IMAGE = "ghcr.io/flannel-io/flannel"
CONFIG_MAP = "kube-flannel-cfg"
NET_CONF = "net-conf.json"
CNI_CONF = "cni-conf.json"
SETTINGS = ("chain_bandwidth",)
BANDWIDTH_PLUGIN = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
_NETWORK_LINE = re.compile(r'^(?P<prefix>\s*"Network"\s*:\s*)"(?P<cidr>[^"]*)"(?P<suffix>,?\s*)$')


def render_flannel(
    manifest: Manifest,
    *,
    image_registry: str | None = None,
    settings: Mapping[str, Any] | None = None,
    version: str | None = None,
    network: str | None = None,
    where: str = "cni settings",
) -> RenderedManifest:
    """Render a flannel manifest (module docstring). ``network`` is the pod CIDR (required)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SettingsError(f"{where}: {', '.join(unknown)}: the flannel profile knows only {', '.join(SETTINGS)}")
    chain = settings.get("chain_bandwidth", False)
    if not isinstance(chain, bool):
        raise SettingsError(f"{where}.chain_bandwidth: expected true or false, got {chain!r}")
    if not network:
        raise SettingsError(f"{where}: the flannel profile needs the pod network (kubespray.kube_pods_subnet)")
    try:
        network = str(ipaddress.IPv4Network(str(network)))
    except ValueError as exc:
        raise SettingsError(f"{where}: pod network {network!r} is not an IPv4 CIDR: {exc}") from None

    documents = split_documents(manifest)
    changes: list[str] = []
    config_seen = False
    out: list[Document] = []
    for doc in documents:
        body = doc.body
        if isinstance(body, dict) and body.get("kind") == "ConfigMap" and NET_CONF in (body.get("data") or {}):
            config_seen = True
            doc, done = _edit_config(doc, network, chain)
            changes += done
        out.append(doc)
    if not config_seen:
        raise CniError(f"{manifest.source}: no ConfigMap with data.{NET_CONF} (is this flannel's kube-flannel.yml?)")

    prefix = check_mirror_prefix(image_registry, where=f"{where}: image_registry") if image_registry else None

    def rewrite(image: str) -> str:
        image = _pin(image, version) if version else image
        return mirror_image(image, prefix) if prefix else image

    if version or prefix:
        out, mapping = rewrite_document_images(out, rewrite)
        changes += [f"image {old} -> {new}" for old, new in mapping.items()]
    rendered = Manifest("".join(d.text for d in out), manifest.source)
    return RenderedManifest("flannel", manifest, rendered, tuple(changes))


def _pin(image: str, version: str) -> str:
    ref = parse_image(image)
    if f"{ref.registry}/{ref.repository}" != FLANNEL_IMAGE or ref.digest:
        return image
    return str(ref.with_tag(version))


def _edit_config(doc: Document, network: str, chain_bandwidth: bool) -> tuple[Document, list[str]]:
    """Set Network in net-conf.json (and chain bandwidth in cni-conf.json) by line edits."""
    name = (doc.body.get("metadata") or {}).get("name", CONFIG_MAP)
    expected = copy.deepcopy(doc.body)
    changes: list[str] = []
    text = doc.text

    net_conf = json.loads(doc.body["data"][NET_CONF])
    old = net_conf.get("Network")
    if old != network:
        block = block_scalar(text, "data", NET_CONF, where=doc.where)
        lines = block_text(text, block).splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if _NETWORK_LINE.match(line.rstrip("\r\n"))]
        if len(hits) != 1:
            raise CniError(f"{doc.where}: ConfigMap {name}: expected one \"Network\" line in {NET_CONF}, found {len(hits)}")
        line = lines[hits[0]]
        m = _NETWORK_LINE.match(line.rstrip("\r\n"))
        lines[hits[0]] = f'{m.group("prefix")}"{network}"{m.group("suffix")}' + line[len(line.rstrip("\r\n")):]
        text = replace_block_scalar(text, block, "".join(lines))
        net_conf["Network"] = network
        changes.append(f"{name} {NET_CONF}: Network {old} -> {network} (kube_pods_subnet)")

    if chain_bandwidth:
        conf = json.loads(doc.body["data"].get(CNI_CONF) or "{}")
        plugins = conf.get("plugins")
        if not isinstance(plugins, list):
            raise CniError(f"{doc.where}: ConfigMap {name}: {CNI_CONF} is not a conflist (no \"plugins\" list)")
        if not any(isinstance(p, dict) and p.get("type") == "bandwidth" for p in plugins):
            try:
                block = block_scalar(text, "data", CNI_CONF, where=doc.where)
            except CniError:
                raise CniError(f"{doc.where}: ConfigMap {name}: {CNI_CONF} is not a literal block; chain the "
                               "bandwidth plugin through the chart's value flannel.cniConf instead") from None
            plugins.append(BANDWIDTH_PLUGIN)
            indent = " " * block.indent
            dumped = json.dumps(conf, indent=2)
            text = replace_block_scalar(text, block, "".join(f"{indent}{line}\n" for line in dumped.splitlines()))
            expected["data"][CNI_CONF] = dumped + "\n"
            changes.append(f"{name} {CNI_CONF}: bandwidth plugin chained (cni.config.chain_bandwidth)")

    if not changes:
        return doc, []
    body = load_yaml(text)
    expected["data"][NET_CONF] = _with_network(doc.body["data"][NET_CONF], network)
    if body != expected:
        raise CniError(f"{doc.where}: ConfigMap {name}: the line edits did not give the intended object")
    return replace(doc, text=text, body=body), changes


def _with_network(net_conf_text: str, network: str) -> str:
    """``net_conf_text`` with its Network value replaced, formatting kept (for the comparison)."""
    return "".join(
        (f'{m.group("prefix")}"{network}"{m.group("suffix")}' + line[len(line.rstrip("\r\n")):])
        if (m := _NETWORK_LINE.match(line.rstrip("\r\n"))) else line
        for line in net_conf_text.splitlines(keepends=True)
    )
