"""Profile name -> renderer.

Every renderer takes the upstream :class:`~cni_runbook.cni.manifests.Manifest` and keyword
options and returns a :class:`~cni_runbook.cni.manifests.RenderedManifest`:

- ``antrea``: :func:`cni_runbook.cni.antrea.render_antrea` (version, settings, image_registry,
  kube_proxy_remove, where)
- ``generic``: :func:`cni_runbook.cni.generic.render_generic` (image_registry, where)
- ``lab``: :func:`cni_runbook.cni.generic.render_lab` (same options as generic)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from .antrea import render_antrea
from .errors import SettingsError
from .generic import render_generic, render_lab
from .manifests import Manifest, RenderedManifest

Renderer = Callable[..., RenderedManifest]

PROFILES: dict[str, Renderer] = {
    "antrea": render_antrea,
    "generic": render_generic,
    "lab": render_lab,
}


def get_renderer(profile: str) -> Renderer:
    """The renderer of ``profile``; SettingsError with a "did you mean" for an unknown name."""
    try:
        return PROFILES[profile]
    except KeyError:
        near = difflib.get_close_matches(str(profile), PROFILES, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise SettingsError(f"cni.profile: unknown profile {profile!r}, expected one of {', '.join(PROFILES)}{hint}") from None


def render(profile: str, manifest: Manifest, **options: Any) -> RenderedManifest:
    """Render ``manifest`` with the renderer of ``profile``."""
    return get_renderer(profile)(manifest, **options)
