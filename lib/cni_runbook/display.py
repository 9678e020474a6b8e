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


# --- stages 00/01: preflight matrix, findings, rendered files, live Ansible runs ---------------

_SEVERITY_COLOURS = {"error": "#f8d7da", "warning": "#fff3cd"}


def findings(frame: pd.DataFrame, caption: str | None = None) -> Shown:
    """Validation findings (severity, rule, file, key, value, expected, message), severity coloured."""
    if frame.empty:
        text = f"{caption}: no findings" if caption else "no findings"
        return Shown(text, markdown=f"**{text}**")
    styler = frame.style.hide(axis="index").set_properties(**{"text-align": "left"})
    styler = styler.map(lambda v: f"background-color: {_SEVERITY_COLOURS.get(str(v), '')}", subset=["severity"])
    if caption:
        styler = styler.set_caption(caption)
    text = frame.to_string(index=False)
    return Shown(f"{caption}\n{text}" if caption else text, html=styler.to_html())


def file_block(text: str, caption: str | None = None, language: str = "yaml") -> Shown:
    """A rendered file (inventory, group_vars) as a fenced code block."""
    head = f"**{caption}**\n\n" if caption else ""
    return Shown(f"{caption}\n{text}" if caption else text, markdown=f"{head}```{language}\n{text.rstrip()}\n```")


def status_matrix(matrix: pd.DataFrame, colours: dict[str, str], caption: str | None = None) -> Shown:
    """A categorical matrix (e.g. node x preflight check -> pass/warn/fail) with a colour per value.

    Checks are rows and nodes columns, so a long list of checks stays readable.
    """
    shown = matrix.T
    styler = shown.style.map(lambda v: f"background-color: {colours.get(str(v), '#ffffff')}; text-align: center")
    if caption:
        styler = styler.set_caption(caption)
    text = shown.to_string() if not shown.empty else "(empty)"
    return Shown(f"{caption}\n{text}" if caption else text, html=styler.to_html())


def status_heatmap(matrix: pd.DataFrame, colours: dict[str, str], title: str = "", path=None):
    """A matplotlib heatmap of a categorical matrix (rows x columns -> status), one colour per status.

    Returns the Figure (Jupyter shows it; no pyplot state is touched); ``path`` also saves a PNG.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    shown = matrix.T  # checks down, nodes across
    statuses = [s for s in colours if (shown == s).to_numpy().any()] + (
        ["n/a"] if (shown == "n/a").to_numpy().any() else [])
    palette = {**colours, "n/a": "#ffffff"}
    index = {s: i for i, s in enumerate(statuses)}
    codes = shown.apply(lambda col: col.map(lambda v: index.get(str(v), len(statuses) - 1))).to_numpy(dtype=float)
    fig = Figure(figsize=(1.6 + 1.1 * max(1, shown.shape[1]), 0.9 + 0.32 * max(1, shown.shape[0])), layout="constrained")
    ax = fig.add_subplot()
    if statuses:
        ax.imshow(codes, cmap=ListedColormap([palette[s] for s in statuses]), vmin=-0.5,
                  vmax=len(statuses) - 0.5, aspect="auto")
    ax.set_xticks(range(shown.shape[1]), labels=list(shown.columns))
    ax.set_yticks(range(shown.shape[0]), labels=list(shown.index), fontsize=8)
    ax.xaxis.tick_top()
    for (r, c), value in pd.DataFrame(shown.to_numpy()).stack().items():
        ax.text(c, r, str(value), ha="center", va="center", fontsize=7)
    ax.set_xticks([x - 0.5 for x in range(1, shown.shape[1])], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, shown.shape[0])], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(handles=[Patch(facecolor=palette[s], edgecolor="#999999", label=s) for s in statuses],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


class LiveAnsible:
    """A tqdm bar (tasks started; ok/changed/failed/unreachable) and failures printed as they come.

    Use as a context manager; ``.progress`` is the :class:`cni_runbook.ansible.runner.Progress`
    to hand to the run. Failure messages arrive already redacted.
    """

    def __init__(self, desc: str) -> None:
        from tqdm.auto import tqdm

        from cni_runbook.ansible.runner import Progress, tqdm_listener

        self.progress = Progress()
        self.bar = tqdm(total=None, unit="task", desc=desc, leave=True)
        self._printed = 0
        self.progress.add_listener(tqdm_listener(self.bar))
        self.progress.add_listener(self._failures)

    def _failures(self, progress) -> None:
        new = progress.failures[self._printed:]
        for f in new:
            first = (f.message or "").splitlines()[0][:200] if f.message else ""
            self.bar.write(f"  {f.kind.upper()} {f.host}: {f.task}: {first}")
        self._printed += len(new)

    def __enter__(self) -> LiveAnsible:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        print(self.progress.summary(), flush=True)


def live_ansible(desc: str) -> LiveAnsible:
    """``with display.live_ansible("cluster.yml") as live: run(..., progress=live.progress)``."""
    return LiveAnsible(desc)
