"""report.html: one page per run, summary first, then every executed stage with code hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter

from . import audit

REPORT = "report.html"
_HIDDEN_TAGS = {"parameters", "injected-parameters"}


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(record: dict[str, Any]) -> str:
    """The summary block: who, when, what, and a table of stage executions."""
    project = record.get("project", {})
    commit = (project.get("git_commit") or "unknown")[:12] + (" (dirty)" if project.get("git_dirty") else "")
    lines = [
        f"# Run {record['run_id']}: {record['status'].upper()}",
        "",
        f"- site **{record['site']}**, {'plan mode (nothing was touched)' if record['plan'] else 'apply mode'}",
        f"- operator {record['operator']}; started {record['started']}, finished {record.get('finished') or '-'}",
        f"- cni-runbook {project.get('version')} at commit {commit}; kernel {record.get('kernel')}",
        "- params files: " + ", ".join(f"`{f['path']}` (sha256 {f['sha256'][:12]})" for f in record["params_files"]),
    ]
    if record.get("set_values"):
        lines.append("- overrides: " + ", ".join(f"`{s}`" for s in record["set_values"]))
    lines += ["", "| stage | attempt | status | duration (s) | summary |", "|---|---|---|---|---|"]
    for s in record["stages"]:
        lines.append(f"| {s['stage']} | {s['attempt']} | **{s['status']}** | {s['duration_s']:.1f} | {_md_escape(s['summary'])} |")
    ran = {s["stage"] for s in record["stages"]}
    for stage_id in record["selected"]:
        if stage_id not in ran:
            lines.append(f"| {stage_id} | - | not run | - | |")
    failed = [s for s in record["stages"] if s["status"] == "failed"]
    if failed and failed[-1].get("error"):
        err = failed[-1]["error"]
        lines += ["", f"**Failure**: {failed[-1]['stage']} cell {err.get('cell_index')}: "
                      f"`{_md_escape(err.get('ename'))}: {_md_escape(err.get('evalue'))}`"]
    return "\n".join(lines)


def build_notebook(run_dir: Path) -> nbformat.NotebookNode:
    """A single notebook: the summary, then each executed stage's cells (parameters dropped)."""
    record = audit.load_record(run_dir)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(summary_markdown(record)))
    for s in record["stages"]:
        path = run_dir / s["notebook"]
        nb.cells.append(nbformat.v4.new_markdown_cell(
            f"---\n# {s['stage']} (attempt {s['attempt']}): {s['status'].upper()}\n\n`{s['notebook']}` - {_md_escape(s['summary'])}"))
        if not path.exists():
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            if _HIDDEN_TAGS & set(cell.get("metadata", {}).get("tags", [])):
                continue
            nb.cells.append(cell)
    return nb


def build(run_dir: Path, out: Path | None = None) -> Path:
    """Render the run's report to HTML (default ``<run_dir>/report.html``)."""
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(build_notebook(run_dir))
    out = out or run_dir / REPORT
    out.write_text(body)
    return out
