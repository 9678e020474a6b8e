"""Display helpers: each returns a text/plain + rich bundle; batch text is short, numbers are
formatted, figures are PNGs on a fixed scale, and inside a kernel a helper shows exactly once."""

from __future__ import annotations

import base64
import math

import nbformat
import pandas as pd
import pytest

from cni_runbook import display

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_fmt_numbers_as_people_read_them():
    assert display.fmt(13524.78) == "13524.78"
    assert display.fmt(2.0) == "2" and display.fmt(0.5) == "0.5" and display.fmt(0.001234) == "0.00123"
    assert display.fmt(float("nan")) == "" and display.fmt(None) == "" and display.fmt(pd.NA) == ""
    assert display.fmt(True) == "True" and display.fmt(["a", "b"]) == "a, b"


def test_table_text_and_html_format_floats_and_never_print_nan():
    shown = display.table(pd.DataFrame({"node": ["a", "b"], "mbps": [13524.78, float("nan")],
                                        "status": ["passed", "failed"]}), caption="throughput")
    assert shown.text.splitlines()[0] == "throughput"
    assert "13524.78" in shown.text and "13524.780000" not in shown.html and "13524.78" in shown.html
    assert "nan" not in shown.text.lower() and "nan" not in shown.html.lower()
    assert "#f8d7da" in shown.html  # failed status coloured
    data, _ = shown.bundle()
    assert set(data) == {"text/plain", "text/html"}


def test_a_long_table_is_cut_in_batch_logs_keeping_every_failed_row_but_whole_in_html():
    rows = [{"name": f"obj-{i}", "status": "failed" if i in (3, 30) else "passed"} for i in range(40)]
    shown = display.table(rows, caption="objects")
    lines = shown.text.splitlines()
    assert lines[0] == "objects" and len(lines) == 2 + display.TEXT_ROWS + 1
    assert "obj-3 " in shown.text + " " and "obj-30" in shown.text  # the failed rows are never cut
    assert lines[-1] == f"... {40 - display.TEXT_ROWS} more of 40 rows (every row in the notebook and report.html)"
    assert all(f"obj-{i}<" in shown.html for i in range(40))
    short = display.table(rows[:display.TEXT_ROWS], caption="objects")
    assert "more of" not in short.text and len(short.text.splitlines()) == 2 + display.TEXT_ROWS


def test_empty_table_caption_is_a_paragraph_not_a_squeezed_table_caption():
    shown = display.table([], caption="plan mode: nothing deployed, nothing probed")
    assert shown.text == "plan mode: nothing deployed, nothing probed: (none)"
    assert "<caption" not in shown.html and '<p class="cnr-caption">' in shown.html and "<table" not in shown.html


def test_params_table_is_one_line_in_batch_logs_and_tagged_for_the_report():
    shown = display.table(display.params_frame({"cni": {"profile": "lab", "mtu": 1450.0}, "nodes": [{"name": "a"}]}),
                          caption="00: validated params")
    assert shown.text.count("\n") == 0 and "3 keys" in shown.text
    assert "nodes[0].name" in shown.html and ">1450<" in shown.html
    assert shown.bundle()[1] == {display.ROLE_KEY: {"role": display.PARAMS_ROLE}}


def _png(shown) -> bytes:
    data, meta = shown.bundle()
    assert meta[display.ROLE_KEY]["role"] == display.FIGURE_ROLE
    png = base64.b64decode(data["image/png"])
    assert png.startswith(PNG_MAGIC) and len(png) > 2000
    return png


def test_heatmap_fixed_scale_grey_na_and_text_only_where_a_cell_is_wrong():
    ok = pd.DataFrame([[1.0, float("nan")], [1.0, 1.0]], index=["n1", "n2"], columns=["n1", "n2"])
    shown = display.heatmap(ok, caption="pod-to-pod")
    _png(shown)
    assert shown.text == "pod-to-pod: all 3 cells 1.00 (1 n/a)"
    image = shown.figure.axes[0].images[0]
    assert image.get_clim() == (0.0, 1.0)  # the scale does not stretch over identical values
    assert image.cmap(1.0)[1] > image.cmap(1.0)[0]  # 1.0 is green, not red
    texts = [t.get_text() for t in shown.figure.axes[0].texts]
    assert "n/a" in texts and "nan" not in texts and "1.00" in texts
    bad = display.heatmap(ok.assign(n2=[0.5, 1.0]), caption="pod-to-pod")
    assert bad.text.splitlines()[0] == "pod-to-pod: 1 of 4 cells below 1.00" and "0.50" in bad.text


def test_status_heatmap_is_an_embedded_png_and_saved(tmp_path):
    matrix = pd.DataFrame({"memory": ["pass", "fail"], "swap": ["pass", "n/a"]}, index=["n1", "n2"])
    shown = display.status_heatmap(matrix, {"pass": "#d4edda", "fail": "#f8d7da"}, title="preflight",
                                   path=tmp_path / "h.png")
    assert _png(shown) == (tmp_path / "h.png").read_bytes()
    text = display.status_matrix(matrix, {"pass": "#d4edda"}, caption="preflight").text
    assert text.splitlines()[0] == "preflight: 1 of 2 rows not pass everywhere"  # n/a is not a problem


def test_plots_of_perf_bandwidth_and_enforcement():
    perf = pd.DataFrame([
        {"test": "perf/throughput/same-node", "src_node": "a", "dst_node": "a", "value": 9000.0, "unit": "Mbit/s",
         "latency_ms": None},
        {"test": "perf/throughput/inter-node", "src_node": "a", "dst_node": "b", "value": 4000.0, "unit": "Mbit/s",
         "latency_ms": None},
        {"test": "perf/throughput/host-baseline", "src_node": "a", "dst_node": "b", "value": 5000.0,
         "unit": "Mbit/s", "latency_ms": None},
        {"test": "perf/ratio/inter-node-vs-host", "src_node": "a", "dst_node": "b", "value": 0.8, "unit": "ratio",
         "latency_ms": None},
        {"test": "perf/latency/inter-node", "src_node": "a", "dst_node": "b", "value": 0.4, "unit": "ms p99",
         "latency_ms": 0.1},
    ])
    throughput = display.plot_throughput(perf, tolerance_pct=30, min_mbps=50)
    _png(throughput)
    assert "a -> b pod 4000, host 5000 Mbit/s" in throughput.text
    dashed = [c for c in throughput.figure.axes[0].collections if c.get_label().startswith("host - 30%")]
    assert dashed and math.isclose(dashed[0].get_segments()[0][0][1], 3500.0)  # the tolerance line
    latency = display.plot_latency(perf, max_rtt_ms=10)
    _png(latency)
    assert "p50 0.1 ms, p99 0.4 ms" in latency.text
    bandwidth = display.plot_bandwidth([{"direction": "ingress", "limit": "10M", "limit_mbps": 10.0,
                                         "measured_mbps": 9.6, "baseline_mbps": 900.0, "tolerance_pct": 20.0,
                                         "status": "passed"}])
    _png(bandwidth)
    assert bandwidth.text.endswith("ingress 9.6 of 10 Mbit/s")
    enforcement = display.plot_enforcement([{"set": "deny", "latency_s": 1.2, "converged_s": 2.5, "restored_s": 1.0},
                                            {"set": "none", "latency_s": None, "converged_s": 0.4,
                                             "restored_s": None}], timeout_s=60)
    _png(enforcement)
    assert enforcement.text.endswith("max 1.2 s over 1 sets")
    assert display.plot_throughput(pd.DataFrame(), 30).text.endswith("(no data)")


@pytest.mark.timeout(120)
def test_in_a_kernel_a_helper_gives_text_for_logs_and_html_or_png_for_people(tmp_path):
    """A real kernel (the project's): displayed (inside ``if``) or as the last expression, a
    helper's output carries the short text/plain papermill logs and the rich form people see."""
    import papermill

    from cni_runbook.runner import resolve_kernel

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import pandas as pd\nfrom IPython.display import display as show\nfrom cni_runbook import display\n"
        "if True:\n    show(display.table(pd.DataFrame({'x': [1.5]}), caption='inside if'))\n"
        "    show(display.heatmap(pd.DataFrame([[1.0]], index=['a'], columns=['a']), caption='hm'))\n"
        "display.table(pd.DataFrame({'y': [2]}), caption='last')")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name=resolve_kernel(),
                               progress_bar=False, cwd=str(tmp_path))
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    assert [o.data["text/plain"] for o in outputs] == ["inside if\n  x\n1.5", "hm: all 1 cells 1.00", "last\ny\n2"]
    assert "text/html" in outputs[0].data and "image/png" in outputs[1].data and "text/html" in outputs[2].data
    assert outputs[1].metadata == {display.ROLE_KEY: {"role": display.FIGURE_ROLE}}


def test_side_by_side_puts_html_parts_in_one_row_and_logs_the_chosen_text():
    a, b = display.table([{"x": 1}], caption="expected"), display.table([{"x": 2}], caption="observed")
    row = display.side_by_side([a, b], text="diff: every pair as expected")
    assert row.text == "diff: every pair as expected"
    assert row.html.startswith('<div style="display: flex') and row.html.index("expected") < row.html.index("observed")
    assert display.side_by_side([a, display.Shown("")]).text == a.text  # empty texts are left out
