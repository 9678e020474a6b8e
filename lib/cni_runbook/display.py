"""Display helpers shared by the notebooks: tables, badges, heatmaps, progress bars.

Functions return objects that render as HTML or Markdown in Jupyter and as plain text in batch
logs (papermill's log output), so a notebook cell stays a single call; they never compute
anything the lib does not already return.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

class Shown:
    """What a display helper returns: HTML or Markdown in Jupyter, plain text in batch logs."""

    def __init__(self, text: str, html: str | None = None, markdown: str | None = None) -> None:
        self.text, self.html, self.markdown = text, html, markdown

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str | None:
        return self.html

    def _repr_markdown_(self) -> str | None:
        return self.markdown


_STATUS_COLOURS = {"passed": "#d4edda", "planned": "#dbe9f6", "skipped": "#eeeeee", "failed": "#f8d7da",
                   "running": "#fff3cd"}


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings to (dotted.key, value) rows; lists of mappings get [i] indexes."""
    rows: list[tuple[str, Any]] = []
    if isinstance(data, dict) and data:
        for key, value in data.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            rows += flatten(value, f"{prefix}[{i}]")
    else:
        rows.append((prefix, data))
    return rows


def params_frame(sections: dict[str, Any]) -> pd.DataFrame:
    """Params sections as a two-column key/value table."""
    return pd.DataFrame(flatten(sections), columns=["key", "value"]).astype({"value": str})


def _status_style(value: Any) -> str:
    colour = _STATUS_COLOURS.get(str(value))
    return f"background-color: {colour}" if colour else ""


def table(rows: list[dict[str, Any]] | pd.DataFrame, caption: str | None = None) -> Shown:
    """A styled table without the index; a ``status`` column is coloured by status."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    styler = df.style.hide(axis="index").set_properties(**{"text-align": "left"})
    if "status" in df.columns:
        styler = styler.map(_status_style, subset=["status"])
    if caption:
        styler = styler.set_caption(caption)
    text = df.to_string(index=False) if not df.empty else "(empty)"
    return Shown(f"{caption}\n{text}" if caption else text, html=styler.to_html())


def stage_header(ctx) -> Shown:
    """Title block of a stage: mode, site, run folder, params files."""
    mode = "**PLAN** - renders and records, touches no host and no cluster" if ctx.plan else "**APPLY**"
    files = ", ".join(f"`{f['path']}`" for f in ctx.loaded.files) or "(defaults only)"
    sets = ", ".join(f"`{s}`" for s in ctx.loaded.set_values)
    lines = [f"### {ctx.stage.id}: {ctx.stage.title}", "",
             f"- mode: {mode}", f"- site: `{ctx.params.site}` (provisioner `{ctx.params.provisioner.kind}`)",
             f"- run folder: `{ctx.run_dir}`", f"- artifacts: `{ctx.artifacts}`", f"- params: {files}"]
    if sets:
        lines.append(f"- overrides: {sets}")
    text = "\n".join(lines)
    return Shown(text, markdown=text)


def result(record: dict[str, Any]) -> Shown:
    """A one-line summary of a stage result."""
    text = f"{record['stage']}: {record['status'].upper()} - {record['summary']}"
    return Shown(text, markdown=f"**{record['stage']}: {record['status'].upper()}** - {record['summary']}")


def heatmap(matrix: pd.DataFrame, caption: str | None = None, cmap: str = "RdYlGn"):
    """Colour a numeric matrix (e.g. a reachability or throughput matrix)."""
    styler = matrix.style.background_gradient(cmap=cmap, axis=None).format(precision=2)
    return styler.set_caption(caption) if caption else styler


def progress(iterable: Iterable[Any], desc: str, total: int | None = None):
    """A tqdm progress bar that renders as a widget in Jupyter and as text in batch logs."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)
