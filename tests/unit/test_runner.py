"""The runner with tiny stage notebooks: stop at the failing stage, name the cell, time out,
resume into the same append-only folder, refuse to resume a tampered run."""

from __future__ import annotations

import json
import time

import pytest

from cni_runbook import audit, runner
from cni_runbook.audit import RunbookError


@pytest.fixture
def nbs(tmp_path, kit):
    """Stage notebooks 00 and 01 that pass; tests replace one to make it misbehave."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    kit.stage_notebook(folder / "00_preflight.ipynb", ["ctx.put('kubeconfig_hint', 'from-00')"])
    kit.stage_notebook(folder / "01_cluster_no_cni.ipynb", ["assert ctx.get('kubeconfig_hint') == 'from-00'"])
    return folder


def start(tmp_path, nbs, *sets):
    return runner.start([], list(sets), stage_refs=["00", "01"], plan=True,
                        outputs=tmp_path / "out", notebooks_dir=nbs)


def test_stages_run_in_order_and_hand_values_over(tmp_path, nbs):
    result = start(tmp_path, nbs)
    assert result.status == "planned"
    record = audit.load_record(result.run_dir)
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [("00_preflight", "planned"), ("01_cluster_no_cni", "planned")]
    assert json.loads((result.run_dir / "state.json").read_text())["kubeconfig_hint"]["stage"] == "00_preflight"
    assert record["kernel"] in ("cni-runbook", "python3")
    assert record["operator"] == audit.operator()
    assert audit.verify(result.run_dir) == []


def test_run_stops_at_the_failing_stage_and_names_the_cell(tmp_path, nbs, kit):
    kit.stage_notebook(nbs / "00_preflight.ipynb", ["x = 1", "raise ValueError('node n1 unreachable')"])
    result = start(tmp_path, nbs)
    assert result.status == "failed"
    assert [o.stage for o in result.outcomes] == ["00_preflight"]  # 01 never ran
    failed = result.failed
    # cells: parameters, injected-parameters, open_stage, x = 1, raise
    assert failed.error == {"cell_index": 4, "exec_count": 5, "ename": "ValueError", "evalue": "node n1 unreachable",
                            "cell": "raise ValueError('node n1 unreachable')"}
    message = runner.failure_message(result.run_dir, failed)
    assert "stage 00_preflight failed in cell In [5] (\"raise ValueError('node n1 unreachable')\")" in message
    assert str(result.run_dir / "00-preflight.ipynb") in message
    assert not (result.run_dir / "01-cluster_no_cni.ipynb").exists()


def test_failed_result_fails_the_stage_with_its_summary(tmp_path, nbs, kit):
    kit.stage_notebook(nbs / "00_preflight.ipynb", [], result='ctx.result("failed", "2 of 3 nodes lack br_netfilter")')
    result = start(tmp_path, nbs)
    assert (result.status, result.failed.summary) == ("failed", "2 of 3 nodes lack br_netfilter")
    assert result.failed.error["ename"] == "StageFailed"


def test_a_stage_without_a_result_fails(tmp_path, nbs, kit):
    kit.stage_notebook(nbs / "00_preflight.ipynb", [], result=None)
    result = start(tmp_path, nbs)
    assert result.failed.summary == "the stage recorded no result (StageContext.result was not called)"


def test_cell_timeout_interrupts_and_fails(tmp_path, nbs, kit):
    # the timeout applies to every cell: 20 s leaves the open_stage cell (imports, params) room on a
    # loaded machine, and the sleeping cell would run for 10 minutes without the interrupt
    kit.stage_notebook(nbs / "00_preflight.ipynb", ["import time\ntime.sleep(600)"])
    t0 = time.monotonic()
    result = start(tmp_path, nbs, "run.timeouts.cell_s=20")
    assert time.monotonic() - t0 < 150
    assert result.status == "failed"
    assert result.failed.summary == "KeyboardInterrupt: interrupted: a cell ran longer than the 20 s execution timeout"
    assert result.failed.error["cell"] == "import time"


def test_resume_continues_in_the_same_folder_without_overwriting(tmp_path, nbs, kit):
    good = (nbs / "01_cluster_no_cni.ipynb").read_bytes()
    kit.stage_notebook(nbs / "01_cluster_no_cni.ipynb", ["raise RuntimeError('boom')"])
    first = start(tmp_path, nbs)
    assert first.status == "failed"
    before = audit.load_record(first.run_dir)["files"]
    (nbs / "01_cluster_no_cni.ipynb").write_bytes(good)

    again = runner.resume(first.run_id, tmp_path / "out", notebooks_dir=nbs)
    assert again.run_dir == first.run_dir and again.status == "planned"
    assert [(o.stage, o.attempt) for o in again.outcomes] == [("01_cluster_no_cni", 2)]
    record = audit.load_record(first.run_dir)
    for name in ("00-preflight.ipynb", "01-cluster_no_cni.ipynb", "artifacts/01_cluster_no_cni/params.yaml"):
        assert record["files"][name] == before[name]  # the first attempt's files are untouched
    assert (first.run_dir / "01-cluster_no_cni.attempt2.ipynb").exists()
    assert not (first.run_dir / "artifacts" / "01_cluster_no_cni" / "result.json").exists()
    assert (first.run_dir / "artifacts" / "01_cluster_no_cni.attempt2" / "result.json").exists()
    assert audit.verify(first.run_dir) == []
    with pytest.raises(RunbookError, match="nothing left to run"):
        runner.resume(first.run_id, tmp_path / "out", notebooks_dir=nbs)


def test_resume_refuses_a_tampered_run_or_changed_params(tmp_path, nbs, kit):
    site = tmp_path / "site.yaml"
    site.write_text("site: s1\n")
    kit.stage_notebook(nbs / "00_preflight.ipynb", ["raise RuntimeError('boom')"])
    result = runner.start([str(site)], stage_refs=["00"], plan=True, outputs=tmp_path / "out", notebooks_dir=nbs)
    site.write_text("site: s2\n")
    with pytest.raises(RunbookError, match="changed since run"):
        runner.resume(result.run_id, tmp_path / "out", notebooks_dir=nbs)
    (result.run_dir / "run.log").write_text("rewritten\n")
    with pytest.raises(RunbookError, match="does not verify"):
        runner.resume(result.run_id, tmp_path / "out", notebooks_dir=nbs)


def test_unknown_kernel_is_a_user_error():
    with pytest.raises(RunbookError, match="kernel 'no-such-kernel' is not installed"):
        runner.resolve_kernel("no-such-kernel")


def test_console_drops_superseded_progress_but_keeps_anything_that_went_wrong():
    from cni_runbook.runner import console_lines

    out = console_lines("pods ns/app: 3/14 Running+Ready; not ready: a on n1 (ContainerCreating)\n"
                        "pods ns/app: 14/14 Running+Ready\n\n"
                        "[1/12] Pod x/a: created\n[12/12] Pod z/c: created\n"
                        "[2/6] ns/client-a: 3/4 commands succeeded\nDaemonSet x: 1/3 ready, timed out\n"
                        "hosts lab instance 6 (10.99.6.0/24) up\n"
                        "preflight: 0task [00:00, ?task/s]\rcluster.yml: 100%|#####| 9/9 [00:05<00:00,  1.70it/s]\n"
                        "waited [10:00] for 3/3 nodes")
    assert out == ["pods ns/app: 14/14 Running+Ready", "[12/12] Pod z/c: created",
                   "[2/6] ns/client-a: 3/4 commands succeeded", "DaemonSet x: 1/3 ready, timed out",
                   "hosts lab instance 6 (10.99.6.0/24) up", "waited [10:00] for 3/3 nodes"]  # no tqdm bars
