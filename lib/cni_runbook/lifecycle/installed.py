"""The CNI installed on a live cluster, read from its objects: version, who made it, per workload.

Pure functions take objects as the API returns them (dicts); :func:`read_installed` fetches
them. The installed version is the image tag of the profile's version image in the first
workload of its rollout order (Antrea: antrea-controller); each workload's own version is kept,
so a half-done upgrade shows. ``made_by`` is ``cni-runbook`` when the runbook's field manager
applied the workloads (stage 02 or an earlier stage 05), ``helm`` for a Helm release, else
``unknown``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cni.images import parse_image
from ..kube.apply import FIELD_MANAGER
from .profiles import CniFacts

WORKLOAD_KINDS = ("DaemonSet", "Deployment")
#: Metadata and fields the API server owns; dropped from a live object before it is recorded
#: for a rollback (re-applying them would fail or pin stale values).
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                   "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences")
SERVER_ANNOTATIONS = ("deprecated.daemonset.template.generation", "deployment.kubernetes.io/revision",
                      "kubectl.kubernetes.io/last-applied-configuration")


def key_of(body: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name): an object's identity across API versions."""
    api_version = body.get("apiVersion", "")
    group = api_version.rpartition("/")[0]
    meta = body.get("metadata") or {}
    return group, body.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")


def key_text(key: tuple[str, str, str, str]) -> str:
    _, kind, namespace, name = key
    return f"{kind} {namespace + '/' if namespace else ''}{name}"


def container_images(body: Mapping[str, Any]) -> list[str]:
    spec = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [c.get("image", "") for part in ("initContainers", "containers") for c in spec.get(part) or []]


def workload_version(body: Mapping[str, Any], version_images: Iterable[str]) -> str | None:
    """The tag of the first container image whose name is one of ``version_images``."""
    names = set(version_images)
    for image in container_images(body):
        ref = parse_image(image)
        if ref.name in names and ref.tag:
            return ref.tag
    return None


def made_by(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    managers = {m.get("manager") for m in meta.get("managedFields") or []}
    if FIELD_MANAGER in managers:
        return "cni-runbook"
    if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "Helm":
        return "helm"
    return "unknown"


def clean_live(body: Mapping[str, Any]) -> dict[str, Any]:
    """A live object without status and server-owned metadata: what a rollback re-applies."""
    out = {k: v for k, v in body.items() if k != "status"}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


@dataclass(frozen=True)
class Installed:
    """What is installed: the live objects found (cleaned), per workload version and maker."""

    family: str
    objects: dict[tuple[str, str, str, str], dict] = field(default_factory=dict)
    workloads: tuple[dict[str, Any], ...] = ()  # {workload, version, made_by, images}
    version: str | None = None
    made_by: str = "unknown"
    missing: tuple[str, ...] = ()  # expected objects not found live

    @property
    def found(self) -> bool:
        return bool(self.workloads)

    @property
    def readable(self) -> bool:
        return self.found and self.version is not None

    def problem(self) -> str | None:
        """Why an upgrade cannot start from this installation (None: it can)."""
        if not self.found:
            looked = [m for m in self.missing if m.split(" ", 1)[0] in WORKLOAD_KINDS]
            return (f"no {self.family} workload found on the cluster (looked for "
                    f"{', '.join(looked) or 'its DaemonSets/Deployments'}): nothing to upgrade")
        if self.version is None:
            detail = "; ".join(f"{w['workload']}: {', '.join(w['images'])}" for w in self.workloads)
            if self.made_by == "unknown":
                return (f"the installed {self.family} was not made by this runbook (no field manager {FIELD_MANAGER}, "
                        f"no Helm release) and its version cannot be read from its images ({detail})")
            return f"the installed {self.family} version cannot be read from its images ({detail})"
        return None

    def table(self):
        import pandas as pd

        return pd.DataFrame(list(self.workloads), columns=["workload", "version", "made_by", "images"])


def describe_installed(facts: CniFacts, live: Sequence[Mapping[str, Any]], *, expected: Iterable[str] = ()) -> Installed:
    """Describe the installation from the live objects found (``expected``: names of those not found)."""
    objects = {key_of(b): clean_live(b) for b in live}
    workloads = [b for b in live if b.get("kind") in WORKLOAD_KINDS]
    order = {name: i for i, name in enumerate(facts.rollout_order)}
    workloads.sort(key=lambda b: (order.get((b.get("metadata") or {}).get("name"), len(order)), key_of(b)))
    rows = tuple({"workload": key_text(key_of(b)), "version": workload_version(b, facts.version_images),
                  "made_by": made_by(b), "images": ", ".join(container_images(b))} for b in workloads)
    version = next((r["version"] for r in rows if r["version"]), None)
    makers = {r["made_by"] for r in rows}
    maker = "cni-runbook" if "cni-runbook" in makers else "helm" if "helm" in makers else "unknown"
    return Installed(facts.family, objects, rows, version, maker, tuple(expected))


def read_installed(kube, facts: CniFacts, refs: Iterable[tuple[str, str, str | None, str]]) -> Installed:
    """Fetch the objects ``refs`` ((apiVersion, kind, namespace, name)) from the cluster and describe them."""
    live, missing = [], []
    for api_version, kind, namespace, name in dict.fromkeys(refs):
        try:
            body = kube.get(api_version, kind, name, namespace)
        except Exception:  # noqa: BLE001 - a kind the server does not serve: not installed
            body = None
        if body is None:
            missing.append(f"{kind} {namespace + '/' if namespace else ''}{name}")
        else:
            live.append(body)
    return describe_installed(facts, live, expected=missing)


__all__ = ["Installed", "clean_live", "container_images", "describe_installed", "key_of", "key_text", "made_by",
           "read_installed", "workload_version"]
