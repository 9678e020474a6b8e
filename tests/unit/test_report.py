"""report.html for people: header with the CNI and a verdict per area, contents, params once,
embedded figures, a short error box naming the cell as the console does."""

from __future__ import annotations

import json
import re

from cni_runbook import cli, stages


def test_plan_report_header_contents_and_params_once(plan_run, kit):
    run_dir = plan_run["run_dir"]
    html = (run_dir / "report.html").read_text()
    assert kit.report_problems(run_dir) == []
    header = html[:html.index('id="cnr-params"')]
    for area in ("preflight", "install", "connectivity", "performance", "policy", "QoS"):
        assert f"<th>{area}</th>" in header
    assert "<th>CNI</th>" in header and "<th>Kubernetes</th>" in header and "<th>route</th><td>direct</td>" in header
    for stage_id in stages.STAGE_IDS:  # the contents link to every stage section
        assert f'href="#stage-{stage_id}-1"' in header and f'id="stage-{stage_id}-1"' in html
    assert html.count("validated params") == 0  # the per-stage params tables are left out ...
    assert html.count('id="cnr-params"') == 1 and "cluster.ssh.become_password" in html  # ... shown once
    record = json.loads((run_dir / "run.json").read_text())
    assert set(record["cni"]) >= {"name", "version", "route"} and record["cni"]["route"] == "direct"


def test_figures_are_embedded_and_a_failed_stage_shows_a_short_error_box(tmp_path, kit, monkeypatch, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    kit.stage_notebook(nbs / "00_preflight.ipynb", [
        "import pandas as pd\nfrom IPython.display import display as show\nfrom cni_runbook import display\n"
        "if True:\n    h = display.heatmap(pd.DataFrame([[1.0, float('nan')]], index=['a'], columns=['a', 'b']), caption='m')\n"
        "    show(h)\n    show(display.Shown('', png=h.png, alt='quiet in the log'))",
        "display.table(display.params_frame(ctx.stage_params()), caption='00: validated params')",
        "import sys, time\nprint('\\n'.join(f'step {i} of 30' for i in range(1, 16)), flush=True)\ntime.sleep(1.5)\n"
        "print('\\n'.join(f'step {i} of 30' for i in range(16, 31)), flush=True)\ntime.sleep(1.5)\nprint('short progress')"])
    kit.stage_notebook(nbs / "01_cluster_no_cni.ipynb", ["x = 1", "raise RuntimeError('node lab-w1 is gone')"])
    monkeypatch.setattr(stages, "NOTEBOOKS_DIR", nbs)
    out = tmp_path / "out"
    assert cli.main(["--outputs", str(out), "run", "--params", str(kit.ROOT / "params" / "lab.yaml"),
                     "--stages", "00", "01", "--plan"]) == 1
    console = capsys.readouterr().err
    (run_dir,) = out.iterdir()
    html = (run_dir / "report.html").read_text()
    assert kit.report_problems(run_dir) == []
    section = html[html.index('id="stage-00_preflight-1"'):html.index('id="stage-01_cluster_no_cni-1"')]
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', section)) == 2
    alt, quiet = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', section)
    assert alt.startswith("m") and alt != "figure"  # the figure's plain text ...
    assert quiet == "quiet in the log"  # ... or its own alt when the log line is empty
    # a long progress stream is folded (one click away), a short one stays open
    assert '<details class="cnr-progress"><summary>progress log (31 lines): short progress</summary>' in section
    assert not re.search(r"<img (?![^>]*\balt=)", html)  # no figure without an alt text anywhere
    cell = re.search(r"failed in cell (In \[\d+\])", console).group(1)
    box = html[html.index('class="cnr-error"'):]
    assert f"Failed in cell {cell}" in box and "RuntimeError: node lab-w1 is gone" in box
    assert "Traceback" not in html and "papermill-error-cell-tag" not in html
    assert "An Exception was encountered" not in html


def test_area_verdicts_count_skipped_checks_as_skipped_not_as_missing_passes(tmp_path):
    from cni_runbook import report

    art = tmp_path / "artifacts" / "03_validation"
    art.mkdir(parents=True)
    checks = ([{"name": f"pod-to-pod/{i}", "status": "passed"} for i in range(4)]
              + [{"name": "pod-to-external/x", "status": "skipped"}, {"name": "perf/ratio", "status": "failed"}])
    (art / "result.json").write_text(json.dumps({"checks": checks}))
    record = {"stages": [{"stage": "03_validation", "status": "failed", "summary": "s",
                          "artifacts": "artifacts/03_validation"}], "selected": ["03_validation"], "params": {}}
    verdicts = report.area_verdicts(tmp_path, record)
    assert verdicts["connectivity"] == ("passed", "4 passed, 1 skipped")
    assert verdicts["performance"] == ("failed", "1 of 1 failed: perf/ratio")
    assert verdicts["preflight"] == ("not selected", "")
