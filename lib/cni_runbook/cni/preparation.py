"""Obtain, render and order a CNI: what stage 02 would apply, without a cluster.

:func:`prepare` fetches or copies the source into the artifacts (with its sha256), renders it
with the profile (``antrea``, ``lab``, ``generic``; a Helm chart goes through ``helm template``)
and orders the objects (:func:`~cni_runbook.cni.manifests.ordered_objects`); :class:`Prepared`
shows what changed against upstream and the table of objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SourceError
from .manifests import DEFAULT_EXISTING_NAMESPACES, Manifest, ManifestObject, RenderedManifest, objects_table, ordered_objects

RENDERED_NAME = "rendered.yaml"
LAB_MANIFEST = Path(__file__).resolve().parents[1] / "lab" / "manifests" / "kube-router.yaml"


@dataclass(frozen=True)
class Prepared:
    """What stage 02 would apply: the stored source, the rendering and the ordered objects.

    ``source`` is ``None`` (and ``rendered`` too) only when a caller builds one without a source
    (``notes`` says why).
    """

    profile: str
    source: Any  # SourceRecord | None
    rendered: RenderedManifest | None
    objects: tuple[ManifestObject, ...]
    rendered_path: Path | None = None
    notes: tuple[str, ...] = ()

    def objects_table(self):
        """Order, phase, kind, namespace, name, apiVersion, images, flags of every object."""
        return objects_table(self.objects)

    def diff(self) -> str:
        """The unified diff upstream -> rendered ('' when nothing changed)."""
        from .diff import unified_diff

        return unified_diff(self.rendered.upstream, self.rendered.rendered) if self.rendered else ""

    def changed_objects(self):
        """The objects the rendering changed (kind, namespace, name, change, lines, paths)."""
        from .diff import changed_objects

        if self.rendered is None:
            import pandas as pd

            return pd.DataFrame(columns=["kind", "namespace", "name", "change", "lines", "paths"])
        return changed_objects(self.rendered.upstream, self.rendered.rendered)

    def source_table(self):
        """One row: kind, origin, stored file, sha256, size."""
        import pandas as pd

        if self.source is None:
            return pd.DataFrame([{"kind": "-", "origin": "; ".join(self.notes), "file": "", "sha256": "", "size": 0}])
        s = self.source
        return pd.DataFrame([{"kind": s.kind, "origin": s.origin, "file": s.path.name, "sha256": s.sha256, "size": s.size}])

    def images(self) -> list[str]:
        """Every container image the objects run, once each, in apply order."""
        return list(dict.fromkeys(image for o in self.objects for image in o.images))


def obtain_source(cni, artifacts: Path, *, timeout: float = 60.0):
    """Fetch or copy the source of ``cni`` (the params' ``cni`` section) into ``artifacts``.

    No source given: ``antrea`` takes the release manifest of ``cni.version``, ``lab`` the lab's
    kube-router manifest shipped with this package. Returns a
    :class:`~cni_runbook.cni.sources.SourceRecord` (path, sha256, origin).
    """
    from . import sources

    artifacts = Path(artifacts)
    src = cni.source
    if src is None:
        if cni.profile == "antrea":
            if not cni.version:
                raise SourceError("cni.version: the antrea profile without cni.source needs a version (e.g. v2.7.0)")
            return sources.antrea_manifest(cni.version, artifacts, timeout=timeout)
        if cni.profile == "lab":
            return sources.local_file(LAB_MANIFEST, artifacts)
        raise SourceError(f"cni.source: profile {cni.profile!r} needs a source (manifest-url, file or helm)")
    if src.kind == "file":
        return sources.local_file(src.path, artifacts)
    if src.kind == "manifest-url":
        filename = "antrea.yml" if cni.profile == "antrea" else None
        return sources.fetch_url(src.url, artifacts, filename=filename, version=cni.version, timeout=timeout)
    return sources.helm_chart(src.helm, artifacts, timeout=timeout)


def source_manifest(record, cni, *, helm: str | None = None) -> Manifest:
    """The manifest of a stored source; a Helm chart is rendered with ``helm template``."""
    if record.kind not in ("helm-repo", "helm-local"):
        return record.manifest()
    from . import helm as helm_route

    values = []
    if record.details.get("values_file"):
        values.append(record.path.parent / record.details["values_file"])
    chart_params = cni.source.helm if cni.source is not None and cni.source.kind == "helm" else None
    if chart_params is not None:
        values = [*map(Path, chart_params.values_files), *values]  # params values win over files
    release = chart_params.release_name if chart_params is not None else record.details.get("chart", "cni")
    manifest = helm_route.template(record.path, release=release, namespace=cni.namespace, values_files=values, helm=helm)
    return Manifest(manifest.text, f"{record.origin} (helm template)")


def render(cni, manifest: Manifest, *, kube_proxy_remove: bool = False, pod_network: str | None = None,
           where: str = "cni") -> RenderedManifest:
    """Render ``manifest`` with the profile of ``cni`` (config keys, image pinning and mirror,
    flannel's Network from ``pod_network``)."""
    from .profiles import render as render_profile
    from .profiles import render_options

    options = render_options(cni, kube_proxy_remove=kube_proxy_remove, pod_network=pod_network, where=where)
    return render_profile(cni.profile, manifest, **options)


def prepare(
    cni,
    artifacts: str | Path,
    *,
    kube_proxy_remove: bool = False,
    pod_network: str | None = None,
    existing_namespaces: Iterable[str] = DEFAULT_EXISTING_NAMESPACES,
    known_api_groups: Iterable[str] = (),
    helm: str | None = None,
    timeout: float = 60.0,
) -> Prepared:
    """Obtain, render and order (see the module docstring). ``cni`` is the params' ``cni`` section.

    Plan mode calls it too: fetching a remote source (URL, Helm repository, Antrea's release
    asset) is read-only and touches no host and no cluster, so a plan renders what the apply
    would (an air-gapped site points ``cni.source`` at a local file or mirror).
    The rendered manifest is written to ``<artifacts>/rendered.yaml``.
    """
    artifacts = Path(artifacts)
    record = obtain_source(cni, artifacts, timeout=timeout)
    manifest = source_manifest(record, cni, helm=helm)
    rendered = render(cni, manifest, kube_proxy_remove=kube_proxy_remove, pod_network=pod_network)
    objects = ordered_objects(rendered.rendered, existing_namespaces=existing_namespaces,
                              known_api_groups=known_api_groups, default_namespace=cni.namespace)
    path = artifacts / RENDERED_NAME
    path.write_text(rendered.rendered.text, encoding="utf-8")
    notes = tuple(dict.fromkeys(f"{o.ref}: {flag}" for o in objects for flag in o.flags))
    return Prepared(cni.profile, record, rendered, tuple(objects), path, notes)
