"""The one stage base: every stage plans, applies and reports the same way.

A stage subclasses :class:`Stage` and writes two methods:

* ``plan(ctx) -> Plan`` - what it would do (actions), everything it would apply rendered into
  the artifacts, the views the notebook shows, and the :class:`Finding` s that would stop the
  apply. It touches no host and no cluster.
* ``apply(ctx, plan) -> Outcome`` - do it and say how it went: a :class:`~cni_runbook.checks.Status`,
  a summary, :class:`~cni_runbook.checks.Check` s, data, views.

The base runs the lifecycle once for all stages (:meth:`Stage.run_plan`, :meth:`Stage.run_apply`,
:meth:`Stage.finish`): record ``plan.yaml``; a plan with blocking findings fails (in plan mode
too: exit 1, each finding named by params key and the file that set it); stop in plan mode; an
:class:`~cni_runbook.errors.OperatorError` raised by ``apply`` becomes a failed outcome; write
``result.json`` and ``junit.xml``. A notebook is then: open, plan, show, apply, show, result.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cni_runbook.checks import Check, Status, coerce_all
from cni_runbook.errors import OperatorError

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    """Something the plan found; an ``error`` stops the apply (and fails the plan)."""

    key: str  # the params key path the operator wrote, e.g. ``kubespray.kube_pods_subnet``
    message: str
    where: str = ""  # the params file (and line) that set the key, when known
    expected: str = ""
    severity: str = ERROR

    @property
    def blocking(self) -> bool:
        return self.severity == ERROR

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        expected = f" (expected: {self.expected})" if self.expected else ""
        return f"{self.key}{where}: {self.message}{expected}"

    def row(self) -> dict[str, str]:
        return {"severity": self.severity, "key": self.key, "where": self.where, "message": self.message,
                "expected": self.expected}


@dataclass
class View:
    """One thing a notebook shows: a table, a text or file block, findings, a figure or any object.

    ``kind``: ``table`` (rows or a DataFrame), ``text`` (printed), ``file`` (a code block),
    ``findings`` (a findings DataFrame), ``object`` (displayed as it is: a Styler, a Figure,
    a display helper's result). ``section`` groups views so a notebook cell can show one part.
    ``brief``: what batch logs print instead of the whole table or figure text (the notebook and
    report.html still show all of it); ``""`` prints nothing.
    """

    caption: str
    obj: Any
    kind: str = "table"
    section: str = ""
    brief: str | None = None


@dataclass
class Plan:
    """What a stage would do: actions, rendered artifacts, views, and what would stop the apply."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    views: list[View] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the stage's own hand-over from plan to apply
    summary: str = ""  # the planned outcome's summary; default: "<n> actions planned; nothing was touched"

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    def record(self) -> dict[str, Any]:
        return {"actions": self.actions, "findings": [f.row() for f in self.findings], "artifacts": self.artifacts}


@dataclass
class Outcome:
    """How a stage went: exactly what ``result.json`` records, plus the views to show."""

    status: Status
    summary: str
    checks: list[Check] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    views: list[View] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = Status.of(self.status)
        self.checks = coerce_all(self.checks)

    @classmethod
    def failed(cls, summary: str, **kw: Any) -> Outcome:
        return cls(Status.FAILED, summary, **kw)


def blocked_outcome(plan: Plan) -> Outcome:
    """The outcome of a plan with blocking findings: failed, one failed check per finding."""
    blocking = plan.blocking
    summary = (f"the plan found {len(blocking)} problem(s) that would stop the apply: "
               + "; ".join(str(f) for f in blocking[:5]) + ("; ..." if len(blocking) > 5 else ""))
    checks = [Check(f"plan: {f.key}", Status.FAILED, str(f), target=f.key) for f in blocking]
    return Outcome(Status.FAILED, summary, checks, {"findings": [f.row() for f in plan.findings]},
                   [View("what would stop the apply", findings_table(plan.findings), "table", "findings")])


def findings_table(findings: list[Finding]) -> list[dict[str, str]]:
    return [f.row() for f in findings] or [{"severity": "", "key": "", "where": "", "message": "no findings",
                                            "expected": ""}]


class Stage(abc.ABC):
    """Base of every stage (see module docstring). One instance per stage execution."""

    #: True if ``apply`` touches a cluster; the base takes the cluster lock around ``apply`` then.
    touches_cluster: ClassVar[bool] = True
    #: True if ``plan`` reads only the params and local files (no download, no cluster):
    #: ``cni-runbook params`` runs it.
    static_plan: ClassVar[bool] = False

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    # -- what a stage writes ----------------------------------------------------------------
    @abc.abstractmethod
    def plan(self, ctx: Any) -> Plan:
        """Everything the stage would do, rendered, with the findings that would stop the apply."""

    @abc.abstractmethod
    def apply(self, ctx: Any, plan: Plan) -> Outcome:
        """Do what ``plan`` says and return the outcome (never called in plan mode or on a blocked plan)."""

    def planned(self, ctx: Any, plan: Plan) -> Outcome:
        """The outcome in plan mode (when nothing blocks)."""
        return Outcome(Status.PLANNED, plan.summary or f"{len(plan.actions)} actions planned; nothing was touched",
                       data={"actions": len(plan.actions)})

    # -- the lifecycle, the same for every stage ---------------------------------------------
    def where(self, key: str) -> str:
        """The params file (and line) that set ``key``, when the loaded params know it."""
        where = getattr(self.ctx.loaded, "where", None)
        return where(key) if callable(where) else ""

    def run_plan(self) -> Plan:
        """Plan, record ``plan.yaml`` (actions and findings), and return the plan.

        An :class:`OperatorError` or ``ValueError`` while planning (params the stage cannot use)
        becomes a blocking finding, so it fails the stage with its message.
        """
        try:
            plan = self.plan(self.ctx)
        except (OperatorError, ValueError) as exc:
            plan = Plan(actions=[{"step": "stop", "target": "params", "detail": str(exc)}],
                        findings=[Finding(getattr(exc, "key", "params"), str(exc))])
        plan.findings = [f if f.where or f.key == "params" else Finding(f.key, f.message, self.where(f.key),
                                                                           f.expected, f.severity)
                         for f in plan.findings]
        if plan.findings:
            plan.views.append(View(f"{len(plan.blocking)} finding(s) that would stop the apply, "
                                   f"{len(plan.findings) - len(plan.blocking)} warning(s)",
                                   findings_table(plan.findings), section="findings"))
        self.ctx.write_artifact("plan.yaml", {"stage": self.ctx.stage.id, "plan": self.ctx.plan, **plan.record()})
        return plan

    @contextlib.contextmanager
    def cluster_lock(self) -> Iterator[None]:
        """The cluster's run lock (:mod:`cni_runbook.kube.lock`), taken around ``apply`` when
        :attr:`touches_cluster`; another run holding it fails the stage naming that run. When
        ``apply`` ends its renewal stops; a stage run by hand (JupyterLab, papermill alone) releases
        it, a stage of the runner leaves it held for the run's next stage (the runner releases it
        when the run ends) - :func:`cni_runbook.kube.lock.end_stage`."""
        from cni_runbook.kube.lock import end_stage, lock_stage

        lock = lock_stage(self.ctx)
        try:
            yield
        finally:
            end_stage(self.ctx, lock)

    def run_apply(self, plan: Plan) -> Outcome:
        """Apply unless the plan blocks or this is plan mode; an OperatorError becomes a failed outcome."""
        if plan.blocking:
            return blocked_outcome(plan)
        if self.ctx.plan:
            return self.planned(self.ctx, plan)
        try:
            with self.cluster_lock() if self.touches_cluster else contextlib.nullcontext():
                return self.apply(self.ctx, plan)
        except OperatorError as exc:
            return Outcome(Status.FAILED, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                           data={"error": str(exc)},
                           views=[View("error", str(exc), "text", "error")])

    def finish(self, outcome: Outcome) -> dict[str, Any]:
        """Record the outcome (``result.json`` + ``junit.xml``) and show it; a failure stops the run."""
        from cni_runbook import display

        from .show import show

        record = self.ctx.result(outcome.status, outcome.summary, checks=outcome.checks, data=outcome.data,
                                 raise_failed=False)
        show(display.result(record))
        self.ctx.raise_if_failed(record)
        return record

    # -- showing -------------------------------------------------------------------------------
    def header(self) -> None:
        """The stage's title block and its validated params table."""
        from cni_runbook import display

        from .show import show

        show(display.stage_header(self.ctx))
        show(display.table(display.params_frame(self.ctx.stage_params()),
                           caption=f"{self.ctx.stage.id}: validated params"))

    def show(self, what: Plan | Outcome, *sections: str) -> None:
        """Display the views of a plan or an outcome (only ``sections`` when given), each explicitly."""
        from .show import show_views

        show_views(what, sections)
