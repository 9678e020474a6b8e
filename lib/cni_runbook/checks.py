"""The one check type and status enum every stage, JUnit, the report and the CLI use.

A :class:`Check` is one thing a stage verified: a name, a :class:`Status`, a message, how long
it took and, when it has one, the node or target it is about. Kept free of heavy imports so any
module (kube, validation, policy, qos, provision) can return checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Status(str, Enum):
    """The outcome of a stage or a check. A ``str``: ``Status.PASSED == "passed"``."""

    PASSED = "passed"
    FAILED = "failed"
    PLANNED = "planned"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, value: Status | str) -> Status:
        """``value`` as a Status; a clear error for anything else."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"status must be one of {', '.join(s.value for s in cls)}, not {value!r}") from None


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


@dataclass(frozen=True)
class Check:
    """One verified expectation (a JUnit test case)."""

    name: str
    status: Status
    message: str = ""
    time_s: float | None = None
    target: str | None = None  # the node, pod or object the check is about, when it has one

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"a check needs a name: {self!r}")
        object.__setattr__(self, "status", Status.of(self.status))

    def as_dict(self) -> dict[str, Any]:
        """The record form (result.json, JUnit): ``{name, status, message, time_s?, target?}``."""
        out: dict[str, Any] = {"name": self.name, "status": self.status.value, "message": self.message}
        if self.time_s is not None:
            out["time_s"] = round(float(self.time_s), 3)
        if self.target is not None:
            out["target"] = self.target
        return out

    @classmethod
    def coerce(cls, value: Check | Mapping[str, Any]) -> Check:
        """A Check from a Check or a ``{name, status, message?, time_s?, target?|node?}`` mapping."""
        if isinstance(value, Check):
            return value
        if not isinstance(value, Mapping) or not value.get("name"):
            raise ValueError(f"each check needs a name and a status in {STATUSES}: {value!r}")
        return cls(name=str(value["name"]), status=Status.of(value.get("status")),
                   message=str(value.get("message") or ""), time_s=value.get("time_s"),
                   target=value.get("target") or value.get("node"))


def coerce_all(checks: Iterable[Check | Mapping[str, Any]] | None) -> list[Check]:
    return [Check.coerce(c) for c in checks or ()]


def overall(checks: Iterable[Check], empty: Status = Status.SKIPPED) -> Status:
    """Failed if any check failed, else passed if any passed, else ``empty``."""
    statuses = {c.status for c in checks}
    if Status.FAILED in statuses:
        return Status.FAILED
    if Status.PASSED in statuses:
        return Status.PASSED
    return empty
