"""Route ``kubespray_custom_cni``: group_vars for Kubespray's custom_cni role (v2.31).

Two modes (roles/network_plugin/custom_cni):

- manifests: ``custom_cni_manifests`` lists files on the Ansible controller. Kubespray renders
  each with Ansible's ``template`` module (Jinja!) into ``<kube_config_dir>/<basename>`` on the
  first control-plane node and runs ``kubectl apply`` with ``-n kube-system``. So the paths must
  be absolute, the basenames distinct, and any literal ``{{``, ``{%`` or ``{#`` (a Go template
  in a ConfigMap...) must be protected: :func:`protect_jinja`.
- Helm: ``custom_cni_chart_release_name`` set switches to the helm-apps role with
  ``custom_cni_chart_namespace``, ``_repository_name``, ``_repository_url``, ``_ref``
  (``<repository_name>/<chart>``), ``_version`` and ``custom_cni_chart_values``. Values are
  Ansible variables, templated too: strings holding Jinja syntax are written as ``!unsafe``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..kubespray.vars import Unsafe, VarsDumper
from .errors import SettingsError
from .manifests import Manifest

_JINJA_OPENER = re.compile(r"\{[{%#]")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")


def protect_jinja(text: str) -> str:
    """Make ``text`` render to itself through Jinja (as Ansible's ``template`` module uses it).

    Each ``{{``, ``{%`` and ``{#`` becomes an expression printing it (``{{ '{{' }}``); lines without
    them are unchanged, and expressions are not affected by ``trim_blocks``/``lstrip_blocks``.
    A leading ``#jinja2:`` line (Ansible's per-template override header) is neutralised too.
    """
    protected = _JINJA_OPENER.sub(lambda m: "{{ '" + m.group(0) + "' }}", text)
    if protected.startswith("#jinja2:"):
        protected = "{{ '#' }}" + protected[1:]
    return protected


def needs_protection(text: str) -> bool:
    """True if Jinja would change ``text`` (it holds ``{{``, ``{%``, ``{#`` or starts with ``#jinja2:``)."""
    return bool(_JINJA_OPENER.search(text)) or text.startswith("#jinja2:")


def write_manifest(manifest: Manifest, dest_dir: str | Path, filename: str) -> Path:
    """Write ``manifest`` protected for Kubespray's templating to ``dest_dir/filename``; returns the absolute path.

    The name must not end with ``.j2`` (Kubespray strips it) and is the name the file gets in
    ``kube_config_dir`` on the control plane.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", filename) or filename.endswith(".j2"):
        raise SettingsError(f"custom_cni manifest file name {filename!r}: expected letters, digits, '.', '_', '-' and no .j2 suffix")
    dest = Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / filename
    path.write_text(protect_jinja(manifest.text), encoding="utf-8")
    return path


def manifest_vars(manifest_paths: Sequence[str | Path]) -> dict[str, Any]:
    """group_vars for manifest mode: ``kube_network_plugin: custom_cni`` and ``custom_cni_manifests``.

    Paths must be absolute (Ansible resolves a relative ``template`` src against the role and
    playbook directories, not the run's) with distinct basenames (each is copied to
    ``<kube_config_dir>/<basename minus .j2>``).
    """
    if not manifest_paths:
        raise SettingsError("custom_cni_manifests: expected at least one manifest path, got none")
    problems, seen = [], {}
    for raw in manifest_paths:
        path = Path(raw)
        if not path.is_absolute():
            problems.append(f"custom_cni_manifests: {raw}: expected an absolute path on the Ansible controller")
        target = path.name.removesuffix(".j2")
        if target in seen:
            problems.append(f"custom_cni_manifests: {raw} and {seen[target]} would both be copied to <kube_config_dir>/{target}")
        seen[target] = raw
    if problems:
        raise SettingsError(problems)
    return {"kube_network_plugin": "custom_cni", "custom_cni_manifests": [str(p) for p in manifest_paths]}


def chart_vars(
    *,
    release_name: str,
    repository_name: str,
    repository_url: str,
    chart: str,
    version: str,
    namespace: str = "kube-system",
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """group_vars for Helm mode (``custom_cni_chart_*``); ``custom_cni_chart_ref`` is ``<repository_name>/<chart>``.

    String values containing Jinja syntax are marked unsafe (see :func:`group_vars_yaml`).
    """
    problems = []
    for key, value in (("custom_cni_chart_release_name", release_name), ("custom_cni_chart_repository_name", repository_name),
                       ("custom_cni_chart_namespace", namespace)):
        if not isinstance(value, str) or not _DNS_LABEL.match(value):
            problems.append(f"{key}: expected a lowercase DNS label (e.g. antrea), got {value!r}")
    if not isinstance(repository_url, str) or not re.match(r"^(https?|oci)://", repository_url):
        problems.append(f"custom_cni_chart_repository_url: expected an http(s):// or oci:// URL, got {repository_url!r}")
    if not isinstance(chart, str) or not chart or "/" in chart:
        problems.append(f"custom_cni_chart_ref: expected a chart name without '/', got {chart!r} (the ref is <repository_name>/<chart>)")
    if not isinstance(version, str) or not version:
        problems.append(f"custom_cni_chart_version: expected a chart version (e.g. 2.7.0), got {version!r}")
    if values is not None and not isinstance(values, Mapping):
        problems.append(f"custom_cni_chart_values: expected a mapping, got {type(values).__name__}")
    if problems:
        raise SettingsError(problems)
    return {
        "kube_network_plugin": "custom_cni",
        "custom_cni_chart_namespace": namespace,
        "custom_cni_chart_release_name": release_name,
        "custom_cni_chart_repository_name": repository_name,
        "custom_cni_chart_repository_url": repository_url,
        "custom_cni_chart_ref": f"{repository_name}/{chart}",
        "custom_cni_chart_version": version,
        "custom_cni_chart_values": _mark_unsafe(dict(values or {})),
    }


def chart_args_for(helm: Any, *, namespace: str) -> dict[str, Any]:
    """:func:`chart_vars` arguments (Helm mode's ``custom_cni_chart_*``) from the params'
    ``cni.source.helm`` and ``cni.namespace``.

    Kubespray v2.31 installs the chart with its helm-apps role: ``helm repo add`` of
    ``repository_url`` (so an https:// or http:// chart repository with an index.yaml: helm refuses
    ``oci://`` there, and the role passes no ``--plain-http`` or CA file), then ``helm upgrade
    --install <repository_name>/<chart>``. ``values_files`` are merged under ``values`` (Kubespray
    takes one mapping, ``custom_cni_chart_values``).
    """
    problems = []
    if helm.path is not None:
        problems.append(f"cni.source.helm.path: route kubespray_custom_cni installs a chart from a chart repository "
                        f"(Kubespray's helm-apps runs `helm repo add`); a local chart ({helm.path}) needs route direct")
    elif str(helm.repository_url).startswith("oci://"):
        problems.append(f"cni.source.helm.repository_url: {helm.repository_url}: Kubespray v2.31's helm-apps role adds it "
                        "with `helm repo add`, which refuses oci:// registries; mirror the chart into an http(s) "
                        "chart repository (index.yaml), or use route direct (which pulls oci:// charts)")
    if not helm.version:
        problems.append("cni.source.helm.version: Kubespray needs custom_cni_chart_version (e.g. v0.28.4)")
    if helm.ca_file or helm.plain_http:
        problems.append("cni.source.helm.ca_file/plain_http: Kubespray's helm-apps role passes neither to helm")
    if problems:
        raise SettingsError(problems)
    values: dict[str, Any] = {}
    for path in helm.values_files:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise SettingsError(f"{path}: a values file must hold a mapping, got {type(loaded).__name__}")
        values = _deep_merge(values, loaded)
    values = _deep_merge(values, dict(helm.values or {}))
    return {"release_name": helm.release_name, "repository_name": helm.repository_name or helm.chart,
            "repository_url": helm.repository_url, "chart": helm.chart, "version": helm.version,
            "namespace": namespace, "values": values}


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def helm_release_secret(release: str, namespace: str, revision: int = 1) -> Manifest:
    """The Secret in which helm records a release (``sh.helm.release.v1.<release>.v<revision>``):
    an API object a Helm-mode install creates besides the chart's own, for the apply record."""
    return Manifest(f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: sh.helm.release.v1.{release}.v{revision}\n"
                    f"  namespace: {namespace}\n", f"helm release {namespace}/{release}")


def _mark_unsafe(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, Unsafe) and needs_protection(value):
        return Unsafe(value)
    if isinstance(value, Mapping):
        return {k: _mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark_unsafe(v) for v in value]
    return value


def group_vars_yaml(variables: Mapping[str, Any]) -> str:
    """YAML text for an inventory group_vars file; :class:`Unsafe` strings get Ansible's ``!unsafe`` tag."""
    header = "# custom_cni variables written by cni-runbook (route kubespray_custom_cni)\n"
    return header + yaml.dump(dict(variables), Dumper=VarsDumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
