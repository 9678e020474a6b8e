"""Render a plan's or an outcome's views in a notebook, each with an explicit display call.

A display call that is not a cell's last expression shows nothing in Jupyter; so every view is
passed to ``IPython.display.display`` (which papermill records too), and an empty table says
that it is empty instead of vanishing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cni_runbook import display

from .base import Outcome, Plan, View


def show(obj: Any) -> None:
    """Display one object now (Jupyter: rich; batch logs: its text)."""
    try:
        from IPython.display import display as ipy_display
    except ImportError:  # pragma: no cover - IPython ships with the kernel
        print(obj)
        return
    ipy_display(obj)


def render(view: View) -> Any:
    """The displayable for a view (its ``brief``, when set, is the batch-log text)."""
    shown = _render(view)
    if view.brief is not None and isinstance(shown, display.Shown):
        if shown.png is not None and not shown.alt:  # the figure keeps its description in the report
            first = shown.text.strip().splitlines()
            shown.alt = first[0] if first else view.caption
        shown.text = view.brief
    return shown


def _render(view: View) -> Any:
    if view.kind == "table":  # an empty table shows "caption: (none)"
        return display.table(view.obj if view.obj is not None else [], caption=view.caption)
    if view.kind == "findings":
        return display.findings(view.obj, caption=view.caption)
    if view.kind == "file":
        return display.file_block(view.obj or "(empty)", caption=view.caption)
    if view.kind == "text":
        text = str(view.obj)
        return display.Shown(f"{view.caption}:\n{text}" if view.caption else text,
                             markdown=(f"**{view.caption}**\n\n" if view.caption else "") + f"```\n{text}\n```")
    return view.obj


def show_views(what: Plan | Outcome | Iterable[View], sections: Iterable[str] = ()) -> int:
    """Display the views of ``what`` (only those of ``sections`` when given); returns how many."""
    views = what.views if isinstance(what, (Plan, Outcome)) else list(what)
    wanted = set(sections)
    shown = 0
    for view in views:
        if wanted and view.section not in wanted:
            continue
        if view.obj is None and view.kind == "object":
            continue
        show(render(view))
        shown += 1
    return shown
