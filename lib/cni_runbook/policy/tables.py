"""Truth tables for people: coloured ``.``/``X`` matrices (HTML in Jupyter, text in batch logs)
and their numeric forms for heatmaps."""

from __future__ import annotations

import pandas as pd

from ..display import Shown
from . import matrix as M

_CELL_STYLE = {
    M.ALLOWED: "background-color: #d4edda; color: #155724",
    M.BLOCKED: "background-color: #f8d7da; color: #721c24; font-weight: bold",
    M.UNKNOWN: "background-color: #fff3cd",
    M.IGNORED: "background-color: #eeeeee; color: #999999",
}


def styled_matrix(frame: pd.DataFrame, caption: str | None = None, diff: bool = False) -> Shown:
    """A truth table in ``.`` / ``X`` notation, coloured (a diff: ``.`` agree, ``X`` disagree);
    HTML in Jupyter, the plain ``.``/``X`` table in batch logs."""
    notation = frame if diff else M.to_notation(frame)
    if not diff:  # loopback cells are not probed: grey them out
        notation = notation.copy()
        for key in notation.index.intersection(notation.columns):
            notation.at[key, key] = M.IGNORED
    styler = notation.style.map(lambda v: _CELL_STYLE.get(v, "")).set_properties(**{"text-align": "center"})
    if caption:
        styler = styler.set_caption(caption)
    # batch logs: a diff in full only where a pair disagrees, else one line; the expected and
    # observed tables only in the notebook (HTML), so a 9x9 layout does not flood the log
    if not diff:
        text = ""
    elif (notation == M.BLOCKED).to_numpy().any():
        text = f"{caption}\n{M.render(notation)}" if caption else M.render(notation)
    else:
        text = f"{caption}: every pair as expected" if caption else "every pair as expected"
    return Shown(text, html=styler.to_html())


def as_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """A boolean matrix as 1 (allowed) / 0 (blocked) / NaN, for heatmaps."""
    return frame.astype("Float64").astype(float)


def diff_numbers(diff: pd.DataFrame) -> pd.DataFrame:
    """A comparison diff as 1 (agree) / 0 (disagree) / NaN (unknown or loopback), for heatmaps."""
    return diff.map(lambda v: {M.ALLOWED: 1.0, M.BLOCKED: 0.0}.get(v, float("nan")))
