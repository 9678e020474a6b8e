"""Version compatibility of a CNI: with the Kubernetes version, and between its own versions.

Each rule carries its source, so a plan shows where it comes from.

Antrea (docs/versioning.md of antrea-io/antrea, "Supported K8s versions" and "Antrea upgrade and
supported version skew"):

- a minor release supports the Kubernetes minors maintained when it was released: 4 of them
  (3 up to Kubernetes 1.19). :data:`ANTREA_MINORS` records, for each Antrea minor, its release
  date (the ``vX.Y.0`` tag) and the newest Kubernetes minor then (Kubernetes ``vX.Y.0`` dates from
  the Go module proxy's ``k8s.io/kubernetes/@v/vX.Y.0.info``);
- the controller is upgraded first; agents and antctl are not newer than the controller and at
  most 4 minors older, so one upgrade moves at most 4 minors and never downgrades the minor.

A generic CNI (and the lab's kube-router or flannel): the range its params declare
(``cni.compatibility``): ``kube_min``/``kube_max`` Kubernetes minors, ``max_minor_skew`` between
the installed and the target version. Nothing declared: the check says so (status ``unknown``),
it does not refuse.

Statuses: ``supported``, ``unsupported`` (refused unless accepted), ``unknown`` (no rule covers
it: shown, not refused), ``accepted`` (unsupported, explicitly accepted by the site).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ANTREA_VERSIONING = "antrea-io/antrea docs/versioning.md"
ANTREA_K8S_RULE = (f"{ANTREA_VERSIONING} 'Supported K8s versions': each minor release supports the Kubernetes "
                   "releases maintained at its release (3 up to K8s 1.19, 4 after that)")
ANTREA_SKEW_RULE = (f"{ANTREA_VERSIONING} 'Antrea upgrade and supported version skew': controller upgraded first; "
                    "agents and antctl not newer than the controller and at most 4 minor versions older")
ANTREA_MAX_SKEW = 4

#: Antrea minor -> (release date of vX.Y.0, newest Kubernetes minor released by then).
ANTREA_MINORS: dict[tuple[int, int], tuple[str, tuple[int, int]]] = {
    (2, 0): ("2024-04-26", (1, 30)),
    (2, 1): ("2024-07-26", (1, 30)),
    (2, 2): ("2024-11-10", (1, 31)),
    (2, 3): ("2025-02-22", (1, 32)),
    (2, 4): ("2025-07-10", (1, 33)),
    (2, 5): ("2025-12-04", (1, 34)),
    (2, 6): ("2026-03-21", (1, 35)),
    (2, 7): ("2026-08-15", (1, 36)),
}

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?$")


def parse_version(text: Any, *, where: str = "version") -> tuple[int, int, int]:
    """``v1.35.4`` / ``1.35`` / ``v2.7.0-dev`` -> (major, minor, patch); ValueError naming ``where``."""
    match = _VERSION.match(str(text or "").strip())
    if not match:
        raise ValueError(f"{where}: expected a version like v1.35.4, got {text!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def minor(text: Any, *, where: str = "version") -> tuple[int, int]:
    major, minor_, _ = parse_version(text, where=where)
    return major, minor_


def _fmt(m: tuple[int, int]) -> str:
    return f"{m[0]}.{m[1]}"


@dataclass(frozen=True)
class Declared:
    """What a generic CNI's params declare (``cni.compatibility``); all optional."""

    kube_min: str | None = None
    kube_max: str | None = None
    max_minor_skew: int | None = None

    @classmethod
    def from_params(cls, value: Any) -> Declared:
        if value is None:
            return cls()
        if isinstance(value, Declared):
            return value
        get = value.get if isinstance(value, dict) else lambda k: getattr(value, k, None)
        return cls(get("kube_min"), get("kube_max"), get("max_minor_skew"))


@dataclass(frozen=True)
class CompatCheck:
    """One compatibility verdict: what was checked, the verdict, why, and the rule's source."""

    name: str
    status: str  # supported | unsupported | unknown | accepted
    detail: str
    source: str
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.status == "unsupported"

    def as_row(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "source": self.source}

    def as_check(self) -> dict[str, Any]:
        """As a ``ctx.result`` check (unsupported -> failed, unknown -> skipped)."""
        status = {"supported": "passed", "accepted": "passed", "unsupported": "failed"}.get(self.status, "skipped")
        return {"name": self.name, "status": status, "message": f"{self.status}: {self.detail}"}


def antrea_kube_range(version: Any) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The (oldest, newest) Kubernetes minors an Antrea version supports; None if not in the table."""
    entry = ANTREA_MINORS.get(minor(version, where="antrea version"))
    if entry is None:
        return None
    newest = entry[1]
    count = 3 if newest <= (1, 19) else 4
    return (newest[0], newest[1] - count + 1), newest


def _accept(check: CompatCheck, accept: bool) -> CompatCheck:
    if check.refused and accept:
        return CompatCheck(check.name, "accepted", check.detail + " (accepted by the site)", check.source, check.facts)
    return check


def check_kube(profile: str, version: Any, kube_version: Any, *, declared: Any = None, kube_from: str = "",
               accept: bool = False) -> CompatCheck:
    """Is CNI ``version`` of ``profile`` supported on Kubernetes ``kube_version``?

    ``kube_from`` says where the Kubernetes version came from (``kubespray.kube_version``, ``the
    live API server``), for the message. ``accept`` turns unsupported into accepted.
    """
    name = "CNI supports the Kubernetes version"
    where = f" ({kube_from})" if kube_from else ""
    if not kube_version:
        return CompatCheck(name, "unknown", f"Kubernetes version unknown{where}; set kubespray.kube_version", "-")
    kube = minor(kube_version, where=f"Kubernetes version{where}")
    facts = {"profile": profile, "version": str(version or ""), "kube_version": str(kube_version)}
    if profile == "antrea":
        if not version:
            return CompatCheck(name, "unknown", "Antrea version unknown (cni.version)", ANTREA_K8S_RULE, facts)
        span = antrea_kube_range(version)
        if span is None:
            known = ", ".join(f"v{_fmt(m)}" for m in ANTREA_MINORS)
            return CompatCheck(name, "unknown", f"Antrea {version}: its minor is not in the table of this runbook "
                               f"(knows {known}); check the release notes", ANTREA_K8S_RULE, facts)
        low, high = span
        ok = low <= kube <= high
        detail = (f"Antrea {version} supports Kubernetes {_fmt(low)}-{_fmt(high)} (released "
                  f"{ANTREA_MINORS[minor(version)][0]}); the cluster runs {kube_version}{where}")
        return _accept(CompatCheck(name, "supported" if ok else "unsupported", detail, ANTREA_K8S_RULE,
                                   {**facts, "kube_min": _fmt(low), "kube_max": _fmt(high)}), accept)
    rule = Declared.from_params(declared)
    source = "cni.compatibility (declared by the site's params)"
    if rule.kube_min is None and rule.kube_max is None:
        return CompatCheck(name, "unknown", f"profile {profile!r} has no vendor rule here and the params declare "
                           "no range (cni.compatibility.kube_min / kube_max)", source, facts)
    low = minor(rule.kube_min, where="cni.compatibility.kube_min") if rule.kube_min else None
    high = minor(rule.kube_max, where="cni.compatibility.kube_max") if rule.kube_max else None
    ok = (low is None or kube >= low) and (high is None or kube <= high)
    span = f"{_fmt(low) if low else 'any'}-{_fmt(high) if high else 'any'}"
    detail = f"{profile} {version or ''} declared for Kubernetes {span}; the cluster runs {kube_version}{where}".replace("  ", " ")
    return _accept(CompatCheck(name, "supported" if ok else "unsupported", detail, source, facts), accept)


def check_skew(profile: str, current: Any, target: Any, *, declared: Any = None, accept: bool = False) -> CompatCheck:
    """May ``current`` be upgraded to ``target`` in one step (the profile's skew rule)?"""
    name = "version skew current -> target"
    facts = {"profile": profile, "current": str(current or ""), "target": str(target or "")}
    if not current or not target:
        return CompatCheck(name, "unknown", "current or target version unknown", "-", facts)
    cur = parse_version(current, where="current version")
    tgt = parse_version(target, where="target version")
    if profile == "antrea":
        limit, source = ANTREA_MAX_SKEW, ANTREA_SKEW_RULE
    else:
        limit = Declared.from_params(declared).max_minor_skew
        source = "cni.compatibility.max_minor_skew (declared by the site's params)"
        if limit is None:
            if cur[0] != tgt[0]:
                return _accept(CompatCheck(name, "unsupported", f"{current} -> {target} changes the major version and "
                                           "no skew is declared", source, facts), accept)
            detail = f"{current} -> {target}: no skew declared; same major version"
            return CompatCheck(name, "unknown", detail, source, facts)
    if tgt < cur:
        return _accept(CompatCheck(name, "unsupported", f"{current} -> {target} is a downgrade (an upgrade moves forward;"
                                   " a rollback restores the recorded objects instead)", source, facts), accept)
    if cur[0] != tgt[0] and profile != "antrea":
        return _accept(CompatCheck(name, "unsupported", f"{current} -> {target} changes the major version", source, facts),
                       accept)
    steps = (tgt[1] - cur[1]) if cur[0] == tgt[0] else None
    if profile == "antrea" and cur[0] != tgt[0]:
        # across a major (v1.15 -> v2.0): Antrea counts minors of the release sequence; this table starts at v2.0
        return _accept(CompatCheck(name, "unsupported", f"{current} -> {target} crosses a major version: follow "
                                   f"{ANTREA_VERSIONING} 'Upgrading from Antrea v1 to Antrea v2' by hand", source, facts),
                       accept)
    ok = steps is not None and steps <= limit
    detail = f"{current} -> {target}: {steps} minor version(s), at most {limit} allowed"
    if profile == "antrea":
        detail += "; the controller is rolled out before the agents"
    return _accept(CompatCheck(name, "supported" if ok else "unsupported", detail, source,
                               {**facts, "minors": steps, "limit": limit}), accept)


__all__ = ["ANTREA_MINORS", "CompatCheck", "Declared", "antrea_kube_range", "check_kube", "check_skew", "minor",
           "parse_version"]
