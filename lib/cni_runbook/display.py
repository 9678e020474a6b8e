"""Display helpers shared by the notebooks: tables, badges, heatmaps, plots, progress bars.

Every helper returns a :class:`Shown`: a display bundle with a plain-text form (``text/plain``:
what papermill writes into batch logs) and one rich form (``text/html``, ``text/markdown`` or an
embedded ``image/png``: what Jupyter, the executed notebook and report.html show). Show it as a
cell's last expression or with ``IPython.display.display`` (``stages.show`` does for a stage's
views); either way Jupyter gets both forms and picks the rich one.

The plain text is short on purpose: tables as aligned text with numbers formatted, matrices only
where a cell is wrong, the validated params as one line (the report shows them once per run).
Helpers never compute anything the lib does not already return.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

ROLE_KEY = "cni_runbook"  # display metadata: {"cni_runbook": {"role": "params" | "figure" | ...}}
PARAMS_ROLE = "params"
FIGURE_ROLE = "figure"


class Shown:
    """A display bundle: ``text`` for batch logs, plus HTML, Markdown or a PNG for people.

    ``role`` lands in the output's metadata (``{"cni_runbook": {"role": ...}}``) so the report can
    find, e.g., the per-stage params tables and show the params once.
    """

    def __init__(self, text: str, html: str | None = None, markdown: str | None = None,
                 png: bytes | None = None, role: str | None = None, alt: str | None = None) -> None:
        self.text, self.html, self.markdown, self.png, self.role = text, html, markdown, png, role
        self.alt = alt  # a figure's alt text in report.html (default: the first line of ``text``)

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str | None:
        return self.html

    def _repr_markdown_(self) -> str | None:
        return self.markdown

    def _repr_png_(self) -> bytes | None:
        return self.png

    def bundle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(data, metadata) as Jupyter's display_data carries them."""
        data: dict[str, Any] = {"text/plain": self.text}
        if self.png is not None:
            data["image/png"] = base64.b64encode(self.png).decode("ascii")
        if self.html is not None:
            data["text/html"] = self.html
        if self.markdown is not None:
            data["text/markdown"] = self.markdown
        ours = {k: v for k, v in (("role", self.role), ("alt", self.alt)) if v}
        metadata: dict[str, Any] = {ROLE_KEY: ours} if ours else {}
        return data, metadata

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.bundle()


# --------------------------------------------------------------------------- numbers and tables


def fmt(value: Any) -> str:
    """A cell as people read it: ``13524.78`` (not 13524.780000), ``2`` for 2.0, '' for missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        value = float(value)
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        text = f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"
        return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else ""
    return str(value)


_TEXT_CELL = 80  # longest cell in a text table; the HTML and the artifacts keep the whole value


def _short(text: str, width: int = _TEXT_CELL) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: width - 3] + "..."


def text_table(df: pd.DataFrame, index: bool = False) -> str:
    """A plain aligned text table (numbers right, text left, long cells shortened)."""
    if index:
        df = df.reset_index(names=[str(n) if n is not None else "" for n in df.index.names])
    if df.empty:
        return "(none)"
    cols = [str(c) for c in df.columns]
    cells = [[_short(fmt(v)) for v in row] for row in df.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    widths = [max([len(cols[i])] + [len(r[i]) for r in cells]) for i in range(len(cols))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(cols)] + [line(r) for r in cells])


def _caption_html(caption: str | None) -> str:
    return f'<p class="cnr-caption"><b>{_html.escape(caption)}</b></p>' if caption else ""


def _frame_html(df: pd.DataFrame, caption: str | None, styler_hook=None, index: bool = False) -> str:
    """A caption paragraph (never squeezed to the table's width) and the table, numbers formatted."""
    if df.empty:
        return f'<div class="cnr-table">{_caption_html(caption)}<p><i>(none)</i></p></div>'
    styler = df.style.format(fmt)
    if not index:
        styler = styler.hide(axis="index")
    styler = styler.set_properties(**{"text-align": "left"})
    if styler_hook is not None:
        styler = styler_hook(styler)
    return f'<div class="cnr-table">{_caption_html(caption)}{styler.to_html()}</div>'


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
    """Params sections as a two-column key/value table (``table`` shows it as the params role:
    one line in batch logs, the table in Jupyter; the report shows the run's params once)."""
    frame = pd.DataFrame([(k, fmt(v) if not isinstance(v, (dict, list)) else (str(v) if v else ""))
                          for k, v in flatten(sections)], columns=["key", "value"])
    frame.attrs[ROLE_KEY] = PARAMS_ROLE
    return frame


def _status_style(value: Any) -> str:
    colour = _STATUS_COLOURS.get(str(value))
    return f"background-color: {colour}" if colour else ""


TEXT_ROWS = 15  # rows of a table in batch logs; the notebook and the report show every row
_QUIET_STATUSES = {"passed", "pass", "ok", "created", "unchanged", "configured", "planned", "applied"}


def text_rows(df: pd.DataFrame, limit: int = TEXT_ROWS) -> tuple[pd.DataFrame, int]:
    """At most ``limit`` rows for a batch log, in their order: every row whose ``status`` is not
    a quiet one (failed, warn, ...) first, then the first others; and how many were left out."""
    if len(df) <= limit:
        return df, 0
    if "status" in df.columns:
        loud = [i for i, v in enumerate(df["status"]) if str(v) not in _QUIET_STATUSES]
    else:
        loud = []
    keep = set(loud[:limit])
    for i in range(len(df)):
        if len(keep) >= limit:
            break
        keep.add(i)
    return df.iloc[sorted(keep)], len(df) - len(keep)


def table(rows: list[dict[str, Any]] | pd.DataFrame, caption: str | None = None) -> Shown:
    """A table without the index; a ``status`` column is coloured by status; numbers formatted.

    Batch logs get the caption and an aligned text table of at most :data:`TEXT_ROWS` rows
    (:func:`text_rows`); a params table (from :func:`params_frame`) gets one line there.
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    role = df.attrs.get(ROLE_KEY)

    def hook(styler):
        return styler.map(_status_style, subset=["status"]) if "status" in df.columns else styler

    html = _frame_html(df, caption, hook)
    if role == PARAMS_ROLE:
        text = f"{caption or 'params'}: {len(df)} keys (table in the notebook; params.yaml in the artifacts)"
    elif df.empty:
        text = f"{caption}: (none)" if caption else "(none)"
    else:
        shown, left_out = text_rows(df)
        body = text_table(shown)
        if left_out:
            body += f"\n... {left_out} more of {len(df)} rows (every row in the notebook and report.html)"
        text = f"{caption}\n{body}" if caption else body
    return Shown(text, html=html, role=role)


def side_by_side(parts: Iterable[Shown], text: str | None = None) -> Shown:
    """Several HTML displays in one row (wrapping on narrow screens), e.g. a truth table's
    expected, observed and diff; batch logs get ``text`` (default: the parts' texts, non-empty ones)."""
    parts = list(parts)
    cells = "".join(f'<div style="flex: 0 0 auto">{p.html or _html.escape(p.text)}</div>' for p in parts)
    if text is None:
        text = "\n".join(p.text for p in parts if p.text)
    return Shown(text, html=f'<div style="display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start">'
                            f"{cells}</div>")


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
    markdown = "\n".join(lines)
    # batch logs: nothing (the runner's "[n/N] stage: title" line says it)
    return Shown("", markdown=markdown, role="header")


def result(record: dict[str, Any]) -> Shown:
    """A one-line summary of a stage result."""
    # batch logs: nothing (the runner logs the stage's status, duration and summary)
    return Shown("", markdown=f"**{record['stage']}: {record['status'].upper()}** - {record['summary']}",
                 role="result")


def progress(iterable: Iterable[Any], desc: str, total: int | None = None):
    """A tqdm progress bar that renders as a widget in Jupyter and as text in batch logs."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


# --------------------------------------------------------------------------- figures


def figure(fig, caption: str, path=None, dpi: int = 100, text: str | None = None) -> Shown:
    """A matplotlib figure as an embedded PNG (the notebook and report.html show the image; a
    batch log gets ``text``, by default one ``[figure] caption`` line). ``path`` also saves the PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    png = buf.getvalue()
    if path is not None:
        from pathlib import Path

        Path(path).write_bytes(png)
    shown = Shown(text if text is not None else f"[figure] {caption}", png=png, role=FIGURE_ROLE)
    shown.figure = fig
    return shown


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


_NA_GREY = "#d9d9d9"


def _share_cmap():
    import matplotlib

    return matplotlib.colormaps["RdYlGn"].with_extremes(bad=_NA_GREY)


def _share_values(matrix: pd.DataFrame) -> pd.DataFrame:
    return matrix.apply(pd.to_numeric, errors="coerce").astype(float) if not matrix.empty else matrix


def _draw_shares(ax, values: pd.DataFrame, caption: str):
    """One share matrix on ``ax`` (fixed 0..1 scale, grey n/a, ``1.00`` / ``n/a`` in the cells)."""
    import numpy as np

    arr = values.to_numpy()
    rows, cols = values.shape
    image = ax.imshow(np.ma.masked_invalid(arr), cmap=_share_cmap(), vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), labels=[str(c) for c in values.columns], fontsize=8, rotation=30 if cols > 4 else 0,
                  ha="right" if cols > 4 else "center")
    ax.set_yticks(range(rows), labels=[str(i) for i in values.index], fontsize=8)
    if values.columns.name:
        ax.set_xlabel(str(values.columns.name), fontsize=8)
    if values.index.name:
        ax.set_ylabel(str(values.index.name), fontsize=8)
    for r in range(rows):
        for c in range(cols):
            v = arr[r, c]
            label = "n/a" if pd.isna(v) else f"{v:.2f}"
            colour = "white" if not pd.isna(v) and (v < 0.25 or v > 0.85) else "black"
            ax.text(c, r, label, ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(caption, fontsize=9)
    return image


def _shares_text(values: pd.DataFrame, caption: str) -> tuple[bool, str]:
    """(every known cell is 1, the batch-log text): one line when all pass, else the matrix."""
    arr = values.to_numpy()
    known = arr[~pd.isna(arr)]
    n_na = int(pd.isna(arr).sum())
    if len(known) and (known >= 1.0).all():
        return True, f"{caption}: all {len(known)} cells 1.00" + (f" ({n_na} n/a)" if n_na else "")
    if not len(known):
        return False, f"{caption}: every cell n/a"
    wrong = int((known < 1.0).sum())
    grid = values.map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}")
    return False, f"{caption}: {wrong} of {len(known)} cells below 1.00\n{text_table(grid, index=True)}"


def heatmap(matrix: pd.DataFrame, caption: str | None = None, cmap: str | None = None, path=None) -> Shown:
    """A matrix of shares (0..1: e.g. the share of passing tests per node pair) as a PNG heatmap.

    The scale is fixed: 1 = green (all pass), 0 = red (none), grey = n/a (not tested); cells
    read ``1.00`` / ``n/a``, never ``nan``. ``cmap`` is accepted for compatibility; the scale is
    the same for every matrix so colours compare across plots. Batch logs get one line when every
    cell is 1, else the matrix.
    """
    caption = caption or "matrix"
    values = _share_values(matrix)
    if values.empty:
        return Shown(f"{caption}: (no data)", html=_caption_html(caption) + "<p><i>(no data)</i></p>")
    rows, cols = values.shape
    labels = max(len(str(i)) for i in values.index)  # long row labels (policy set names) need room
    width = max(2.2 + 0.75 * cols + 0.06 * max(0, labels - 8), 0.075 * len(caption) + 1.2)  # the title fits
    fig = _new_figure(width, 1.3 + 0.45 * rows)
    ax = fig.add_subplot()
    image = _draw_shares(ax, values, caption)
    bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03, ticks=[0, 0.5, 1])
    bar.ax.tick_params(labelsize=7)
    return figure(fig, caption, path=path, text=_shares_text(values, caption)[1])


def heatmaps(matrices: dict[str, pd.DataFrame], caption: str, columns: int = 4, path=None) -> Shown:
    """Several share matrices as small multiples in one PNG (same fixed scale, one colour bar).

    Batch logs get one line when every cell of every matrix is 1, else each matrix that has a
    cell below 1 (the others are summed up by name)."""
    values = {name: _share_values(m) for name, m in matrices.items()}
    values = {name: v for name, v in values.items() if not v.empty}
    if not values:
        return Shown(f"{caption}: (no data)", html=_caption_html(caption) + "<p><i>(no data)</i></p>")
    texts = {name: _shares_text(v, name) for name, v in values.items()}
    perfect = [name for name, (ok, _) in texts.items() if ok]
    if len(perfect) == len(values):
        text = f"{caption}: every cell 1.00 in all {len(values)} ({', '.join(values)})"
    else:
        text = "\n".join([f"{caption}: {len(values) - len(perfect)} of {len(values)} with a cell below 1.00"
                          + (f"; all cells 1.00 in {', '.join(perfect)}" if perfect else "")]
                         + [t for ok, t in texts.values() if not ok])
    columns = max(1, min(columns, len(values)))
    rows = -(-len(values) // columns)
    biggest = max(max(v.shape) for v in values.values())
    cell = 0.5 + 0.5 * biggest
    fig = _new_figure(columns * (cell + 0.9) + 0.8, rows * (cell + 0.8))
    axes = fig.subplots(rows, columns, squeeze=False)
    image = None
    for ax, (name, v) in zip(axes.flat, values.items()):
        image = _draw_shares(ax, v, name)
    for ax in list(axes.flat)[len(values):]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=axes, fraction=0.02, pad=0.02, ticks=[0, 0.5, 1])
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(caption, fontsize=10)
    return figure(fig, caption, path=path, text=text)


def status_matrix(matrix: pd.DataFrame, colours: dict[str, str], caption: str | None = None,
                  ok: str = "pass") -> Shown:
    """A categorical matrix (e.g. node x preflight check -> pass/warn/fail) with a colour per value.

    Checks are rows and nodes columns, so a long list of checks stays readable. Batch logs get
    only the rows with a cell other than ``ok`` (or ``n/a``).
    """
    shown = matrix.T
    styler = shown.style.map(lambda v: f"background-color: {colours.get(str(v), '#ffffff')}; text-align: center")
    html = f'<div class="cnr-table">{_caption_html(caption)}{styler.to_html()}</div>'
    if shown.empty:
        text = f"{caption}: (none)" if caption else "(none)"
    else:
        bad = shown[(~shown.isin([ok, "n/a"])).any(axis=1)]
        head = caption or "matrix"
        if bad.empty:
            text = f"{head}: every cell {ok} ({shown.shape[0]} x {shown.shape[1]})"
        else:
            text = f"{head}: {len(bad)} of {len(shown)} rows not {ok} everywhere\n{text_table(bad, index=True)}"
    return Shown(text, html=html)


def status_heatmap(matrix: pd.DataFrame, colours: dict[str, str], title: str = "", path=None) -> Shown:
    """A heatmap of a categorical matrix (rows x columns -> status), one colour per status, as an
    embedded PNG (``.figure`` is the matplotlib Figure); ``path`` also saves the PNG."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    shown = matrix.T  # checks down, nodes across
    statuses = [s for s in colours if (shown == s).to_numpy().any()] + (
        ["n/a"] if (shown == "n/a").to_numpy().any() else [])
    palette = {**colours, "n/a": _NA_GREY}
    index = {s: i for i, s in enumerate(statuses)}
    codes = shown.apply(lambda col: col.map(lambda v: index.get(str(v), len(statuses) - 1))).to_numpy(dtype=float)
    fig = _new_figure(1.6 + 1.1 * max(1, shown.shape[1]), 0.9 + 0.32 * max(1, shown.shape[0]))
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
    return figure(fig, title or "status matrix", path=path, dpi=110)


def _rows(data: pd.DataFrame | list[dict[str, Any]] | None) -> pd.DataFrame:
    if data is None:
        return pd.DataFrame()
    return data if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))


def _no_data(caption: str) -> Shown:
    return Shown(f"{caption}: (no data)", html=_caption_html(caption) + "<p><i>(no data)</i></p>")


def _bar_labels(ax, bars, unit: str = "") -> None:
    for bar in bars:
        h = bar.get_height()
        if h and not math.isnan(h):
            ax.annotate(f"{fmt(round(h, 2))}{unit}", (bar.get_x() + bar.get_width() / 2, h), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")


def plot_throughput(perf: pd.DataFrame | list[dict[str, Any]], tolerance_pct: float,
                    min_mbps: float | None = None, caption: str = "throughput: pod vs host network") -> Shown:
    """iperf3 throughput per node pair (stage 03 ``perf`` rows, unit Mbit/s): pod network bars
    next to the host-network baseline, the tolerance line at host x (1 - tolerance) and the
    ``min_mbps`` floor."""
    df = _rows(perf)
    if df.empty or "unit" not in df.columns:
        return _no_data(caption)
    df = df[(df["unit"] == "Mbit/s") & df["value"].notna()]
    if df.empty:
        return _no_data(caption)
    pairs: dict[str, dict[str, float]] = {}
    for row in df.itertuples(index=False):
        dst = row.dst_node or row.src_node
        key = f"{row.src_node} -> {dst}" if dst != row.src_node else f"{row.src_node} (same node)"
        kind = "host" if "host" in row.test else "pod"
        pairs.setdefault(key, {})[kind] = float(row.value)
    fig = _new_figure(2.5 + 1.6 * len(pairs), 3.2)
    ax = fig.add_subplot()
    width = 0.36
    for i, (pair, values) in enumerate(pairs.items()):
        pod = ax.bar(i - width / 2, values.get("pod", float("nan")), width, color="#4c78a8",
                     label="pod network" if i == 0 else None)
        _bar_labels(ax, pod)
        if "host" in values:
            host = ax.bar(i + width / 2, values["host"], width, color="#9d9d9d", label="host network")
            _bar_labels(ax, host)
            floor = values["host"] * (1 - tolerance_pct / 100.0)
            ax.hlines(floor, i - width, i + width, colors="#e45756", linestyles="--",
                      label=f"host - {fmt(tolerance_pct)}% (tolerance)")
    if min_mbps:
        ax.axhline(min_mbps, color="#f58518", linestyle=":", linewidth=1, label=f"min {fmt(min_mbps)} Mbit/s")
    ax.set_xticks(range(len(pairs)), labels=list(pairs), fontsize=8)
    ax.set_ylabel("Mbit/s", fontsize=8)
    ax.set_title(caption, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.margins(y=0.15)
    return figure(fig, caption, text=f"{caption}: " + "; ".join(
        f"{p} pod {fmt(v.get('pod'))}" + (f", host {fmt(v['host'])}" if "host" in v else "") + " Mbit/s"
        for p, v in pairs.items()))


def plot_latency(perf: pd.DataFrame | list[dict[str, Any]], max_rtt_ms: float | None = None,
                 caption: str = "round-trip latency p50 / p99") -> Shown:
    """Ping RTT p50 and p99 (stage 03 ``perf/latency/*`` rows: p50 in ``latency_ms``, p99 in
    ``value``) for the pod network and the host baseline, with the ``max_rtt_ms`` limit."""
    df = _rows(perf)
    if df.empty or "unit" not in df.columns:
        return _no_data(caption)
    df = df[df["unit"].astype(str).str.startswith("ms") & df["value"].notna()]
    if df.empty:
        return _no_data(caption)
    labels = [str(t).rsplit("/", 1)[-1] + (f"\n{r.src_node} -> {r.dst_node}" if r.dst_node else "")
              for t, r in zip(df["test"], df.itertuples(index=False))]
    p50 = pd.to_numeric(df["latency_ms"], errors="coerce").to_numpy(dtype=float)
    p99 = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
    fig = _new_figure(2.5 + 1.6 * len(df), 3.2)
    ax = fig.add_subplot()
    width = 0.36
    x = range(len(df))
    _bar_labels(ax, ax.bar([i - width / 2 for i in x], p50, width, color="#4c78a8", label="p50"))
    _bar_labels(ax, ax.bar([i + width / 2 for i in x], p99, width, color="#72b7b2", label="p99"))
    if max_rtt_ms:
        ax.axhline(max_rtt_ms, color="#e45756", linestyle="--", linewidth=1, label=f"max p99 {fmt(max_rtt_ms)} ms")
    ax.set_xticks(list(x), labels=labels, fontsize=8)
    ax.set_ylabel("ms", fontsize=8)
    ax.set_title(caption, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.margins(y=0.15)
    return figure(fig, caption, text=f"{caption}: " + "; ".join(f"{lab.splitlines()[0]} p50 {fmt(a)} ms, p99 {fmt(b)} ms"
                                            for lab, a, b in zip(labels, p50, p99)))


def plot_bandwidth(checks: pd.DataFrame | list[dict[str, Any]],
                   caption: str = "bandwidth: measured vs limit") -> Shown:
    """QoS bandwidth checks (``BandwidthCheck.row()``: direction, limit_mbps, measured_mbps,
    baseline_mbps, tolerance_pct): the measured rate per direction, the limit and its tolerance
    band, and the unlimited baseline."""
    df = _rows(checks)
    if df.empty or "measured_mbps" not in df.columns:
        return _no_data(caption)
    fig = _new_figure(2.8 + 1.4 * len(df), 3.2)
    ax = fig.add_subplot()
    width = 0.5
    for i, row in enumerate(df.itertuples(index=False)):
        limit, tol = float(row.limit_mbps), float(row.tolerance_pct)
        ax.fill_between([i - width, i + width], limit * (1 - tol / 100), limit * (1 + tol / 100), color="#54a24b",
                        alpha=0.25, label=f"limit +/- {fmt(tol)}%" if i == 0 else None)
        ax.hlines(limit, i - width, i + width, colors="#54a24b", label="limit" if i == 0 else None)
        measured = float("nan") if row.measured_mbps is None or pd.isna(row.measured_mbps) else float(row.measured_mbps)
        colour = "#4c78a8" if getattr(row, "status", "passed") == "passed" else "#e45756"
        _bar_labels(ax, ax.bar(i, measured, width * 0.6, color=colour, label="measured" if i == 0 else None))
    baselines = pd.to_numeric(df.get("baseline_mbps"), errors="coerce").dropna()
    if len(baselines):
        base = float(baselines.iloc[0])
        ax.set_title(f"{caption} (unlimited baseline {fmt(base)} Mbit/s)", fontsize=9)
    else:
        ax.set_title(caption, fontsize=9)
    ax.set_xticks(range(len(df)), labels=[f"{r.direction}\n{r.limit}" for r in df.itertuples(index=False)], fontsize=8)
    ax.set_ylabel("Mbit/s", fontsize=8)
    ax.set_ylim(0, max(float(pd.to_numeric(df["limit_mbps"]).max()) * 1.6,
                       float(pd.to_numeric(df["measured_mbps"], errors="coerce").max() or 0) * 1.2))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure(fig, caption, text=f"{caption}: " + "; ".join(
        f"{r.direction} {fmt(r.measured_mbps)} of {fmt(r.limit_mbps)} Mbit/s" for r in df.itertuples(index=False)))


def plot_enforcement(sets: pd.DataFrame | list[dict[str, Any]], timeout_s: float | None = None,
                     caption: str = "policy enforcement latency per set") -> Shown:
    """Per policy set (``SetResult.row()``: set, latency_s, converged_s, restored_s): apply ->
    enforced (sentinel pairs), apply -> the whole matrix as expected, removal -> restored."""
    df = _rows(sets)
    if df.empty or "latency_s" not in df.columns:
        return _no_data(caption)
    series = [("latency_s", "enforced (sentinels)", "#4c78a8"), ("converged_s", "whole matrix", "#72b7b2"),
              ("restored_s", "restored after removal", "#9d9d9d")]
    series = [s for s in series if s[0] in df.columns and pd.to_numeric(df[s[0]], errors="coerce").notna().any()]
    if not series:
        return _no_data(caption)
    fig = _new_figure(7.0, 1.2 + 0.42 * len(df) * max(1, len(series)) / 1.5)
    ax = fig.add_subplot()
    height = 0.8 / len(series)
    for k, (col, label, colour) in enumerate(series):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        ys = [i + (k - (len(series) - 1) / 2) * height for i in range(len(df))]
        bars = ax.barh(ys, values, height, color=colour, label=label)
        for bar, v in zip(bars, values):
            if not math.isnan(v):
                ax.annotate(f"{v:.1f}s", (v, bar.get_y() + bar.get_height() / 2), va="center", fontsize=6,
                            xytext=(2, 0), textcoords="offset points")
    if timeout_s:
        ax.axvline(timeout_s, color="#e45756", linestyle="--", linewidth=1, label=f"timeout {fmt(timeout_s)} s")
    ax.set_yticks(range(len(df)), labels=[str(s) for s in df["set"]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_title(caption, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.margins(x=0.15)
    lat = pd.to_numeric(df["latency_s"], errors="coerce").dropna()
    return figure(fig, caption, text=f"{caption}: " + (f"max {lat.max():.1f} s over {len(lat)} sets" if len(lat)
                                                    else "no set changed a pair"))


# --- stages 00/01: preflight matrix, findings, rendered files, live Ansible runs ---------------

_SEVERITY_COLOURS = {"error": "#f8d7da", "warning": "#fff3cd"}


def findings(frame: pd.DataFrame, caption: str | None = None) -> Shown:
    """Validation findings (severity, rule, file, key, value, expected, message), severity coloured."""
    if frame.empty:
        text = f"{caption}: no findings" if caption else "no findings"
        return Shown(text, markdown=f"**{text}**")

    def hook(styler):
        return styler.map(lambda v: f"background-color: {_SEVERITY_COLOURS.get(str(v), '')}", subset=["severity"])

    text = text_table(frame)
    return Shown(f"{caption}\n{text}" if caption else text, html=_frame_html(frame, caption, hook))


def file_block(text: str, caption: str | None = None, language: str = "yaml") -> Shown:
    """A rendered file (inventory, group_vars) as a fenced code block (one line in batch logs)."""
    head = f"**{caption}**\n\n" if caption else ""
    n = len(text.rstrip().splitlines())
    short = f"{caption or 'file'}: {n} lines (shown in the notebook; the file is in the artifacts)"
    return Shown(short, markdown=f"{head}```{language}\n{text.rstrip()}\n```")


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
