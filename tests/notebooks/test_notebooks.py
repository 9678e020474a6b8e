"""The source notebooks: committed clean, one parameters cell with the shared names, every one
executes in plan mode under nbval (--nbval-lax, current env), and plain papermill -f works."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from cni_runbook import stages

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STAGE_PARAMETERS = {"params_files", "set_values", "run_dir", "stage", "plan", "site", "provisioner", "cluster",
                    "kubespray", "cni", "validation", "policy", "qos", "run"}
STAGE_SECTIONS = {"05_cni_lifecycle": {"lifecycle"}}  # sections only that stage reads, as parameters too


def test_there_is_a_notebook_per_stage_and_a_history_notebook():
    assert [p.stem for p in NOTEBOOKS] == [*stages.STAGE_IDS, "history"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert dirty == [], f"{path.name}: cells {dirty} carry outputs; strip them"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem in stages.STAGE_IDS], ids=lambda p: p.name)
def test_one_parameters_cell_with_the_shared_names(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    assigned = {t.id: n.value for n in ast.parse(cells[0].source).body if isinstance(n, ast.Assign) for t in n.targets}
    assert set(assigned) == STAGE_PARAMETERS | STAGE_SECTIONS.get(path.stem, set())
    assert ast.literal_eval(assigned["stage"]) == path.stem
    assert ast.literal_eval(assigned["plan"]) is True  # opened by hand, a notebook only plans


def test_every_notebook_runs_in_plan_mode_under_nbval(plan_run, tmp_path):
    """nbval on every notebook, in two pytest processes side by side (the machines have two
    cores); the stages share only the run folder, where each writes its own artifacts."""
    env = dict(os.environ, CNI_RUNBOOK_RUN_DIR=str(tmp_path / "run"), CNI_RUNBOOK_OUTPUTS=str(plan_run["outputs"]),
               MPLBACKEND="Agg")
    halves = {"even": NOTEBOOKS[::2], "odd": NOTEBOOKS[1::2]}
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
         *map(str, nbs)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, nbs in halves.items()}
    failures = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            failures[name] = out[-3000:]
    assert failures == {}
    for stage_id in stages.STAGE_IDS:  # each stage recorded its plan and result in the run folder
        assert (tmp_path / "run" / "artifacts" / stage_id / "plan.yaml").exists()
        assert (tmp_path / "run" / "artifacts" / stage_id / "result.json").exists()


def test_plain_papermill_with_a_params_file(tmp_path):
    """`papermill NB OUT -f params/examples/x.yaml` sets the top-level sections as parameters."""
    site = yaml.safe_load((ROOT / "params" / "examples" / "kubespray-antrea.yaml").read_text())
    site.pop("policy")  # its relative policy file would resolve against the notebook folder (papermill's cwd)
    papermill.execute_notebook(str(ROOT / "notebooks" / "00_preflight.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={**site, "run_dir": str(tmp_path / "run")}, cwd=str(ROOT / "notebooks"),
                               kernel_name="python3", progress_bar=False)
    recorded = yaml.safe_load((tmp_path / "run" / "artifacts" / "00_preflight" / "params.yaml").read_text())
    assert [n["name"] for n in recorded["cluster"]["nodes"]] == ["cp1", "cp2", "cp3", "w1", "w2"]
    assert recorded["provisioner"]["kind"] == "kubespray"


#: the notebooks on the stage base (docs/stage-contract.md): open, plan, show, apply, show, result
ON_THE_BASE = [p for p in NOTEBOOKS if p.stem in stages.STAGE_IDS and stages.get(p.stem).impl]


@pytest.mark.parametrize("path", ON_THE_BASE, ids=lambda p: p.name)
def test_code_cells_hold_no_logic(path):
    """No function definitions, loops, branches or comprehensions: the stage's class has the logic."""
    nb = nbformat.read(path, as_version=4)
    banned = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.For, ast.While, ast.If, ast.IfExp,
              ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp, ast.Try)
    found = [(i, type(n).__name__) for i, c in enumerate(nb.cells) if c.cell_type == "code"
             for n in ast.walk(ast.parse(c.source)) if isinstance(n, banned)]
    assert found == []
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for call in ("stages.open(", "job.run_plan()", "job.run_apply(planned)", "job.finish(outcome)"):
        assert code.count(call) == 1, call


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_have_ids(path):
    """nbformat 4.5 cell ids, so nbformat raises no MissingIDFieldWarning."""
    nb = nbformat.read(path, as_version=4)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    assert all(c.get("id") for c in nb.cells)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem in stages.STAGE_IDS], ids=lambda p: p.name)
def test_help_notebook_shows_the_parameter_types(path):
    """`papermill --help-notebook` reads the type comments of the parameters cell."""
    found = {name: p["inferred_type_name"] for name, p in papermill.inspect_notebook(str(path)).items()}
    if stages.get(path.stem).impl:
        assert found["plan"] == "Optional[bool]" and found["params_files"] == "list[str]" and found["stage"] == "str"
