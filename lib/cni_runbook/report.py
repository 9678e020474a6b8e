"""report.html: one page per run for people (a change board reads it, not the operator).

It opens with a header (site, cluster, Kubernetes version, CNI and version, route, operator and
a verdict per area: preflight, install, connectivity, performance, policy, QoS), a table of
contents, the run's params once, then every executed stage with its code hidden. The per-stage
params tables (display role ``params``) are left out: the params section shows them once. A
failed stage opens with a short error box naming the cell as the console does (``In [n]``);
tracebacks stay in the executed notebook.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter

from . import audit, display, history

REPORT = "report.html"
TEMPLATES = Path(__file__).parent / "templates"  # report/: JupyterLab's template + alt texts
_HIDDEN_TAGS = {"parameters", "injected-parameters", "papermill-error-cell-tag"}
AREAS = ("preflight", "install", "connectivity", "performance", "policy", "QoS")  # + lifecycle when 05 ran

_BADGE = {"passed": "#1e7e34", "failed": "#bd2130", "planned": "#1f5f9e", "skipped": "#6c757d",
          "not run": "#6c757d", "not selected": "#6c757d", "not measured": "#6c757d", "running": "#b8860b"}

_CSS = """<style>
.cnr-header table { border-collapse: collapse; margin: 0.5em 0; }
.cnr-header td, .cnr-header th { padding: 2px 10px; text-align: left; border: none; vertical-align: top; }
.cnr-badge { color: white; border-radius: 3px; padding: 1px 7px; font-weight: bold; white-space: nowrap; }
.cnr-error { border: 2px solid #bd2130; background: #fbe9eb; padding: 8px 12px; margin: 8px 0; border-radius: 4px; }
.cnr-error code { white-space: pre-wrap; }
.cnr-toc li { margin: 1px 0; }
.cnr-caption { margin: 0.8em 0 0.2em 0; white-space: normal; }
.cnr-table table { margin-left: 0; }
.cnr-table th, .cnr-header th, .jp-RenderedHTMLCommon thead th { text-align: left !important; }
details.cnr-params summary { cursor: pointer; font-weight: bold; }
details.cnr-progress summary { cursor: pointer; color: #555; font-family: monospace; }
</style>"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _badge(status: str) -> str:
    return f'<span class="cnr-badge" style="background:{_BADGE.get(status, "#6c757d")}">{_e(status.upper())}</span>'


def _anchor(stage: dict[str, Any]) -> str:
    return f"stage-{stage['stage']}-{stage['attempt']}"


def _result(run_dir: Path, stage: dict[str, Any]) -> dict[str, Any]:
    if not stage.get("artifacts"):
        return {}
    try:
        return json.loads((run_dir / stage["artifacts"] / "result.json").read_text())
    except (OSError, ValueError):
        return {}


def _fold(statuses: list[str]) -> str | None:
    """One verdict from several: failed > running > planned > passed > skipped."""
    for status in ("failed", "running", "planned", "passed", "skipped"):
        if status in statuses:
            return status
    return None


def area_verdicts(run_dir: Path, record: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Area -> (verdict, why): from the last attempt of each stage and its checks."""
    latest: dict[str, dict[str, Any]] = {}
    for s in record["stages"]:
        latest[s["stage"]] = s
    params = record.get("params") or {}

    def stage(stage_id: str) -> tuple[str, str]:
        s = latest.get(stage_id)
        if s is None:
            return ("not run" if stage_id in record["selected"] else "not selected"), ""
        return s["status"], s["summary"]

    def checks(stage_id: str, pick) -> tuple[str, str] | None:
        s = latest.get(stage_id)
        if s is None:
            return None
        found = [c for c in (_result(run_dir, s).get("checks") or []) if pick(str(c.get("name", "")))]
        if not found:
            return None
        statuses = [c.get("status", "") for c in found]
        failed = [c["name"] for c in found if c.get("status") == "failed"]
        tally = {x: statuses.count(x) for x in dict.fromkeys(statuses)}  # "87 passed, 3 skipped"
        why = (f"{len(failed)} of {len(found)} failed: {', '.join(failed[:4])}" if failed
               else ", ".join(f"{n} {x}" for x, n in tally.items()))
        return _fold(statuses) or "passed", why

    out: dict[str, tuple[str, str]] = {"preflight": stage("00_preflight")}
    install = [stage(x) for x in ("01_cluster_no_cni", "02_cni_install") if x in latest]
    out["install"] = ((_fold([v for v, _ in install]) or "not run"),
                      "; ".join(w for _, w in install)) if install else ("not run", "")
    for area, stage_id, pick in (("connectivity", "03_validation", lambda n: not n.startswith("perf/")),
                                 ("performance", "03_validation", lambda n: n.startswith("perf/")),
                                 ("policy", "04_policy_qos", lambda n: n.startswith("policy")),
                                 ("QoS", "04_policy_qos", lambda n: n.startswith(("qos", "antrea")))):
        found = checks(stage_id, pick)
        if found is not None:
            out[area] = found
        elif stage_id in latest and latest[stage_id]["status"] in ("planned", "failed"):
            out[area] = stage(stage_id) if latest[stage_id]["status"] == "planned" else ("failed", stage(stage_id)[1])
        elif area == "performance" and not (params.get("validation") or {}).get("perf"):
            out[area] = ("not measured", "validation.perf is off")
        elif area == "QoS" and not (params.get("qos") or {}).get("enabled"):
            out[area] = ("not measured", "qos.enabled is false")
        else:
            out[area] = stage(stage_id) if stage_id in latest else ("not run", "")
    if "05_cni_lifecycle" in record["selected"]:
        out["lifecycle"] = stage("05_cni_lifecycle")
    return out


def header_html(run_dir: Path, record: dict[str, Any]) -> str:
    """Who ran what on which cluster, the verdict per area, the stages, the table of contents."""
    facts = {k: record.get(k) or v for k, v in history.run_facts(run_dir, record).items()}
    cni, cluster = facts["cni"], facts["cluster"]
    project = record.get("project", {})
    commit = (project.get("git_commit") or "unknown")[:12] + (" (dirty)" if project.get("git_dirty") else "")
    mode = "plan (nothing was touched)" if record["plan"] else "apply"
    rows = [
        ("site", record["site"]),
        ("cluster", " ".join(x for x in (cluster.get("name"), f"({cluster['server']})" if cluster.get("server") else "")
                             if x) or "-"),
        ("Kubernetes", cluster.get("kubernetes") or "-"),
        ("CNI", history.cni_label(record | facts) + (f" (profile {cni['profile']})" if cni.get("profile")
                                                     and cni.get("profile") != cni.get("name") else "")),
        ("route", cni.get("route") or "-"),
        ("operator", record["operator"]),
        ("mode", mode),
        ("started / finished", f"{record['started']} / {record.get('finished') or '-'}"),
        ("cni-runbook", f"{project.get('version')} at commit {commit}; kernel {record.get('kernel')}"),
    ]
    facts_html = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    verdicts = area_verdicts(run_dir, record)
    area_html = "".join(f"<tr><th>{_e(a)}</th><td>{_badge(v)}</td><td>{_e(w)}</td></tr>"
                        for a, (v, w) in verdicts.items())
    stage_rows = []
    ran = set()
    for s in record["stages"]:
        ran.add(s["stage"])
        stage_rows.append(f'<tr><td><a href="#{_anchor(s)}">{_e(s["stage"])}</a></td><td>{s["attempt"]}</td>'
                          f'<td>{_badge(s["status"])}</td><td style="text-align:right">{s["duration_s"]:.1f} s</td>'
                          f'<td>{_e(s["summary"])}</td></tr>')
    for stage_id in record["selected"]:
        if stage_id not in ran:
            stage_rows.append(f"<tr><td>{_e(stage_id)}</td><td>-</td><td>{_badge('not run')}</td><td></td><td></td></tr>")
    toc = ['<li><a href="#cnr-params">Parameters</a></li>']
    toc += [f'<li><a href="#{_anchor(s)}">{_e(s["stage"])}' + (f' (attempt {s["attempt"]})' if s["attempt"] > 1 else "")
            + f"</a>: {_e(s['status'])}</li>" for s in record["stages"]]
    return (f'{_CSS}<div class="cnr-header">'
            f'<h1 id="cnr-top">Run {_e(record["run_id"])}: {_badge(record["status"])}</h1>'
            f"<table>{facts_html}</table>"
            f"<h3>Verdict per area</h3><table>{area_html}</table>"
            f"<h3>Stages</h3><table><tr><th>stage</th><th>attempt</th><th>status</th><th>duration</th>"
            f"<th>summary</th></tr>{''.join(stage_rows)}</table>"
            f'<h3>Contents</h3><ul class="cnr-toc">{"".join(toc)}</ul></div>')


def params_html(record: dict[str, Any]) -> str:
    """The run's params once: files with their sha256, overrides, then every key (collapsed)."""
    files = "".join(f"<li><code>{_e(f['path'])}</code> sha256 {_e(f['sha256'][:12])}</li>" for f in record["params_files"])
    sets = ("<p>overrides: " + ", ".join(f"<code>{_e(s)}</code>" for s in record["set_values"]) + "</p>"
            if record.get("set_values") else "")
    frame = display.params_frame(record.get("params") or {})
    table = display._frame_html(frame, None)
    return (f'<h2 id="cnr-params">Parameters</h2><p>Layered in this order (defaults first); validated before '
            f"anything ran. Every stage read its sections of these.</p><ul>{files}</ul>{sets}"
            f'<details class="cnr-params"><summary>all {len(frame)} keys</summary>{table}</details>')


def error_html(stage: dict[str, Any]) -> str:
    """A short error box: the cell as the console names it (In [n]) and the error, no traceback."""
    err = stage.get("error") or {}
    where = "the stage"
    if err.get("exec_count") is not None:
        where = f"cell In [{err['exec_count']}]"
    cell = f" <code>{_e(err['cell'])}</code>" if err.get("cell") else ""
    message = f"{err.get('ename')}: {err.get('evalue')}" if err.get("ename") else stage["summary"]
    lines = str(message).strip().splitlines() or [""]
    short = "\n".join(lines[:6]) + ("\n..." if len(lines) > 6 else "")
    return (f'<div class="cnr-error"><b>Failed in {_e(where)}</b>{cell}<br><code>{_e(short)}</code>'
            f"<br><small>the full traceback is in <code>{_e(stage['notebook'])}</code></small></div>")


def _role(output) -> str | None:
    return ((output.get("metadata") or {}).get(display.ROLE_KEY) or {}).get("role")


def _stage_cells(path: Path) -> list:
    """The executed stage's cells for the report: no parameters, no per-stage params table (and
    the heading of a cell left empty by that), no error markers and no tracebacks (the error box
    says where and what)."""
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if not _HIDDEN_TAGS & set(c.get("metadata", {}).get("tags", []))]
    out: list = []
    for cell in cells:
        if cell.cell_type == "code":
            outputs = cell.get("outputs", [])
            kept = [o for o in outputs if o.get("output_type") != "error" and _role(o) != display.PARAMS_ROLE]
            if outputs and not kept and any(_role(o) == display.PARAMS_ROLE for o in outputs):
                if out and out[-1].cell_type == "markdown":
                    out.pop()  # the "Validated parameters" heading of the table left out
                continue
            cell.outputs = [_folded(o) for o in _joined_streams(kept)]
        out.append(cell)
    return out


PROGRESS_LINES = 12  # a longer progress stream is folded in the report (the notebook keeps it open)


def _joined_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name as one (papermill records a cell's prints in chunks)."""
    out: list = []
    for o in outputs:
        prev = out[-1] if out else None
        if (o.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                and prev.get("name") == o.get("name")):
            out[-1] = nbformat.v4.new_output("stream", name=o.get("name"),
                                             text="".join(prev.get("text", "")) + "".join(o.get("text", "")))
        else:
            out.append(o)
    return out


def _folded(output):
    """A long progress stream (stdout) as a closed ``<details>`` block: the report reads as results,
    and the progress is one click away."""
    if output.get("output_type") != "stream":
        return output
    text = "".join(output.get("text", ""))
    lines = text.rstrip("\n").splitlines()
    if len(lines) <= PROGRESS_LINES:
        return output
    html_text = (f'<details class="cnr-progress"><summary>progress log ({len(lines)} lines): '
                 f"{html.escape(lines[-1][:120])}</summary><pre>{html.escape(text)}</pre></details>")
    return nbformat.v4.new_output("display_data", data={"text/html": html_text, "text/plain": text})


def build_notebook(run_dir: Path) -> nbformat.NotebookNode:
    """A single notebook: the header, the params, then each executed stage's cells."""
    record = audit.load_record(run_dir)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(header_html(run_dir, record)))
    nb.cells.append(nbformat.v4.new_markdown_cell(params_html(record)))
    for s in record["stages"]:
        path = run_dir / s["notebook"]
        head = (f'<hr><h1 id="{_anchor(s)}">{_e(s["stage"])} (attempt {s["attempt"]}): {_badge(s["status"])}</h1>'
                f"<p><code>{_e(s['notebook'])}</code>, {s['duration_s']:.1f} s: {_e(s['summary'])} "
                f'<a href="#cnr-top">(top)</a></p>')
        if s["status"] == "failed":
            head += error_html(s)
        nb.cells.append(nbformat.v4.new_markdown_cell(head))
        if path.exists():
            for cell in _stage_cells(path):  # attempts of one stage share cell ids: make them unique
                cell["id"] = f"{s['stage']}-{s['attempt']}-{cell.get('id', len(nb.cells))}"[:64]
                nb.cells.append(cell)
    return nb


def alt_text(plain: Any) -> str:
    """A figure's alt text: the first line of its plain-text form (caption and numbers)."""
    lines = str(plain or "").strip().splitlines()
    return lines[0].strip() if lines else "figure"


def build(run_dir: Path, out: Path | None = None) -> Path:
    """Render the run's report to HTML (default ``<run_dir>/report.html``)."""
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            extra_template_basedirs=[str(TEMPLATES)], template_name="report")
    exporter.register_filter("alt_text", alt_text)
    record = audit.load_record(run_dir)
    body, _ = exporter.from_notebook_node(build_notebook(run_dir),
                                          resources={"metadata": {"name": f"cni-runbook {record['run_id']}"}})
    out = out or run_dir / REPORT
    out.write_text(body)
    return out
