"""The ``generic`` and ``lab`` profiles: manifests pass through unchanged, images optionally mirrored.

A generic manifest is applied as given: the runbook knows nothing of its configuration, so the
only rendering is the air-gapped image mirror rule of :mod:`cni_runbook.cni.images`. The ``lab``
profile (the local lab cluster's CNI manifest) renders the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SettingsError
from .images import check_mirror_prefix, mirror_image, rewrite_images
from .manifests import Manifest, RenderedManifest, split_documents


def render_generic(
    manifest: Manifest,
    *,
    image_registry: str | None = None,
    settings: Mapping[str, Any] | None = None,
    profile: str = "generic",
    where: str = "cni settings",
) -> RenderedManifest:
    """Pass ``manifest`` through, rewriting its images to ``image_registry`` when given.

    ``settings`` must be empty: a generic manifest has no known configuration keys, so any key
    would be silently ignored; it is refused instead (configure the manifest itself).
    """
    if settings:
        raise SettingsError(
            f"{where}: {', '.join(sorted(settings))}: profile {profile!r} has no configuration keys; "
            "edit the manifest (or chart values) itself, or use a profile that knows this CNI (antrea)"
        )
    split_documents(manifest)  # broken YAML fails here, with the document and line
    if not image_registry:
        return RenderedManifest(profile, manifest, manifest, ())
    prefix = check_mirror_prefix(image_registry, where=f"{where}: image_registry")
    rendered, mapping = rewrite_images(manifest, lambda image: mirror_image(image, prefix))
    return RenderedManifest(profile, manifest, rendered, tuple(f"image {old} -> {new}" for old, new in mapping.items()))


def render_lab(manifest: Manifest, **options: Any) -> RenderedManifest:
    """The lab cluster's CNI manifest: rendered like a generic one, under the profile name ``lab``."""
    return render_generic(manifest, profile="lab", **options)
