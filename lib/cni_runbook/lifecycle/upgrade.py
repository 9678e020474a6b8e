"""The upgrade plan (same CNI, new version): pure, from values the stage gathered.

:func:`plan_upgrade` takes the installed CNI's params (``cni``), the target's
(``lifecycle.target``), the new rendering's objects, what is installed (read from the cluster:
:class:`~cni_runbook.lifecycle.installed.Installed`; ``None`` before the cluster exists, then
the previous rendering stands in for it) and the Kubernetes version, and returns an
:class:`UpgradePlan`: versions, the compatibility and skew verdicts with their sources, the
object diff, the ordered steps, and the refusals. A plan with refusals is not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cni.manifests import ManifestObject
from . import compat, objdiff
from .installed import Installed, workload_version
from .profiles import CniFacts


@dataclass
class Acceptance:
    """What the site explicitly accepts (``lifecycle.accept``)."""

    unsupported_kube_version: bool = False
    version_skew: bool = False
    policies_not_enforced: bool = False

    @classmethod
    def from_params(cls, value: Any) -> Acceptance:
        if value is None:
            return cls()
        if isinstance(value, Acceptance):
            return value
        get = value.get if isinstance(value, dict) else lambda k, d=False: getattr(value, k, d)
        return cls(bool(get("unsupported_kube_version", False)), bool(get("version_skew", False)),
                   bool(get("policies_not_enforced", False)))


@dataclass
class UpgradePlan:
    """What an upgrade would do, and whether it may (``refusals`` empty)."""

    profile: str
    family: str
    current_version: str | None
    current_from: str
    target_version: str | None
    kube_version: str | None
    kube_from: str
    checks: list[compat.CompatCheck]
    diff: Any  # pandas DataFrame (objdiff.DIFF_COLUMNS)
    steps: list[dict[str, str]]
    objects: list[ManifestObject]
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    installed: Installed | None = None
    helm_release: str | None = None

    @property
    def ok(self) -> bool:
        return not self.refusals

    def summary(self) -> str:
        counts = objdiff.counts(self.diff) if self.diff is not None else {}
        changes = ", ".join(f"{n} {c}" for c, n in counts.items() if n)
        head = f"{self.family} {self.current_version or '?'} -> {self.target_version or '?'}" + (f" ({changes})" if changes else "")
        return head + ("; REFUSED: " + "; ".join(self.refusals) if self.refusals else "")

    def versions_table(self):
        import pandas as pd

        return pd.DataFrame([
            {"what": "installed", "version": self.current_version or "?", "from": self.current_from},
            {"what": "target", "version": self.target_version or "?", "from": "lifecycle.target"},
            {"what": "Kubernetes", "version": self.kube_version or "?", "from": self.kube_from},
        ])

    def checks_table(self):
        import pandas as pd

        return pd.DataFrame([c.as_row() for c in self.checks], columns=["check", "status", "detail", "source"])

    def as_record(self) -> dict[str, Any]:
        return {"mode": "upgrade", "profile": self.profile, "family": self.family,
                "current_version": self.current_version, "current_from": self.current_from,
                "target_version": self.target_version, "kube_version": self.kube_version, "kube_from": self.kube_from,
                "checks": [c.as_row() for c in self.checks], "steps": self.steps, "refusals": self.refusals,
                "notes": self.notes, "diff": objdiff.counts(self.diff) if self.diff is not None else {}}


def target_version(target, objects: Sequence[ManifestObject], facts: CniFacts) -> str | None:
    """The target version: ``lifecycle.target.version``, else the tag of the rendering's version image."""
    if getattr(target, "version", None):
        return str(target.version)
    for o in objects:
        if o.ref.kind in ("DaemonSet", "Deployment"):
            found = workload_version(o.body, facts.version_images)
            if found:
                return found
    return None


def helm_route(target, installed: Installed | None, notes: list[str]) -> str | None:
    """The Helm release to ``helm upgrade`` (the Helm route), or None (server-side apply of the rendering).

    A Helm-source target is upgraded with ``helm upgrade`` only when the installed CNI is a Helm
    release (``made_by == "helm"``) or the cluster is not read (plan mode before it exists). An
    installation this runbook made (stage 02 renders a chart with ``helm template --include-crds``
    and applies the objects server-side) holds no Helm release: ``helm upgrade`` would refuse its
    objects (no Helm ownership annotations), so the new chart's rendering is applied the same way
    it was installed - CRDs (the chart's crds/) first, then the rest in rollout order.
    """
    if target is None or target.source is None or target.source.kind != "helm":
        return None
    if installed is not None and installed.found and installed.made_by != "helm":
        notes.append(f"the installed {installed.family} was applied by {installed.made_by} (no Helm release): the "
                     "target chart is rendered with helm template --include-crds and applied server-side, CRDs first, "
                     "as stage 02 installed it")
        return None
    return target.source.helm.release_name


def plan_upgrade(
    *,
    current,
    target,
    facts: CniFacts,
    objects: Sequence[ManifestObject],
    installed: Installed | None,
    previous: Sequence[ManifestObject] | None = None,
    kube_version: str | None,
    kube_from: str,
    accept: Acceptance | Any = None,
) -> UpgradePlan:
    """The plan (module docstring). ``current``/``target`` are params ``cni`` sections (or alike);
    ``previous`` the rendering of the installed version when the cluster cannot be read (plan
    mode before it exists)."""
    accept = Acceptance.from_params(accept)
    refusals, notes = [], []
    if target is None:
        refusals.append("lifecycle.target: expected the CNI to upgrade to (profile, version, source), got nothing")
    elif target.profile != current.profile:
        refusals.append(f"lifecycle.target.profile {target.profile!r} differs from the installed cni.profile "
                        f"{current.profile!r}: that is a replacement (lifecycle.mode: replace), not an upgrade")
    tgt_version = target_version(target, objects, facts) if target is not None else None

    if installed is not None:
        problem = installed.problem()
        if problem:
            refusals.append(problem)
        current_version, current_from = installed.version, f"the cluster ({installed.made_by})"
        if current.version and installed.version and compat.parse_version(current.version) != compat.parse_version(
                installed.version, where="installed version"):
            notes.append(f"cni.version says {current.version} but the cluster runs {installed.version}: the cluster wins")
        before, live = installed.objects, True
    else:
        current_version, current_from = current.version, "params cni.version (the cluster is not read in this plan)"
        if current_version is None and previous:
            current_version = target_version(None, previous, facts)
            current_from = "the previous rendering's images (the cluster is not read in this plan)"
        before, live = objdiff.objects_by_key(previous or []), False
        if not previous:
            notes.append("the installed objects are not known in this plan (no cluster, no previous rendering): "
                         "the diff lists every object as added")

    checks = [
        compat.check_kube(current.profile, tgt_version, kube_version, declared=getattr(target, "compatibility", None),
                          kube_from=kube_from, accept=accept.unsupported_kube_version),
        compat.check_skew(current.profile, current_version, tgt_version, declared=getattr(target, "compatibility", None),
                          accept=accept.version_skew),
    ]
    for check in checks:
        if check.refused:
            refusals.append(f"{check.name}: {check.detail} [{check.source}]")
    if current_version and tgt_version and compat.parse_version(current_version) == compat.parse_version(tgt_version):
        notes.append(f"target {tgt_version} is the installed version: the apply only re-applies changed objects")

    diff = objdiff.diff_objects(before, objects, live=live)
    helm = helm_route(target, installed, notes)
    ordered = objdiff.upgrade_order(objects, facts.rollout_order)
    steps = objdiff.steps(ordered, diff, rollout_order=facts.rollout_order, helm_release=helm)
    return UpgradePlan(current.profile, facts.family, current_version, current_from, tgt_version, kube_version, kube_from,
                       checks, diff, steps, ordered, refusals, notes, installed, helm)


__all__ = ["Acceptance", "UpgradePlan", "helm_route", "plan_upgrade", "target_version"]
