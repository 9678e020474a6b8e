"""The lab's image registry step: build the images (cached) and publish them.

The registry (Debian's docker-registry) runs under the lab supervisor in the host
network namespace, listening on the lab bridge's host address; its storage lives in
the build cache, so a warm ``up`` only checks that every blob is already there.
"""

from __future__ import annotations

from collections.abc import Callable

from . import images, registry
from .config import LabConfig
from .hosts import wait_for

Progress = Callable[[str], None]


def build_images(force: bool = False, progress: Progress = print,
                 names: tuple[str, ...] = images.IMAGE_NAMES) -> dict[str, images.ImageRef]:
    if force:
        progress("[images] --force: rebuilding image layouts")
    return images.build_all(progress, names=names, force=force)


def registry_component(cfg: LabConfig) -> dict:
    config_path = registry.write_registry_config(
        cfg.state_dir / "registry.yml", registry.registry_storage_dir(), cfg.registry_addr)
    return {"name": "registry", "argv": registry.registry_command(config_path), "env": {}}


def publish(cfg: LabConfig, progress: Progress = print, cni: str = "kube-router") -> dict[str, registry.PushResult]:
    """Build (or reuse) every image a lab running ``cni`` needs and make sure the lab registry has it.

    An image with further tags (:func:`cni_runbook.lab.images.extra_tags`) is pushed under each.
    """
    refs = build_images(progress=progress, names=images.images_for(cni))
    wait_for(lambda: _ready(cfg), 30, f"the lab registry on {cfg.registry_addr}")
    results = registry.push_all(refs, cfg.registry_addr, progress=progress)
    for name, ref in refs.items():
        for tag in images.extra_tags(name):
            results[f"{name}:{tag}"] = registry.push(ref.layout, cfg.registry_addr, ref.repo, tag)
    return results


def _ready(cfg: LabConfig) -> bool:
    try:
        registry.wait_ready(cfg.registry_addr, timeout=1)
        return True
    except registry.RegistryError:
        return False
