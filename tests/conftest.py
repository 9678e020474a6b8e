"""Shared fixtures: isolated outputs folders, tiny stage notebooks, and one plan-mode run with
canary secrets that several tests inspect (run once per session: it executes five notebooks)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Canary secrets: none of these may ever appear in a run folder.
CANARY_KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAACANARYSSHKEYBODYQUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
CANARY_SSH_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY_KEY_BODY}\nCANARYSSHKEYSECONDLINE0123456789abcdef\n-----END OPENSSH PRIVATE KEY-----\n"
CANARY_BECOME = "canary-become-Pw-0xC0FFEE"
CANARY_ENV = "canary-env-registry-pw-31337"
CANARY_TOKEN = "canarytoken.0123456789abcdefKUBE"
CANARY_CLIENT_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEICANARYCLIENTKEYMATERIALxyzxyz0123456789ABCDEFoAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n"
CANARY_CLIENT_KEY_B64 = base64.b64encode(CANARY_CLIENT_KEY.encode()).decode()
CANARIES = [CANARY_KEY_BODY, "CANARYSSHKEYSECONDLINE0123456789abcdef", CANARY_BECOME, CANARY_ENV, CANARY_TOKEN,
            "MHcCAQEEICANARYCLIENTKEYMATERIALxyzxyz0123456789ABCDEFoAoGCCqGSM49", CANARY_CLIENT_KEY_B64]


def write_secrets(folder: Path) -> Path:
    """Secret files, a kubeconfig and a site params file referencing them; returns the params file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "id_canary").write_text(CANARY_SSH_KEY)
    (folder / "become.txt").write_text(CANARY_BECOME + "\n")
    (folder / "kubeconfig").write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://192.0.2.1:6443"}}}}]
contexts: [{{name: c, context: {{cluster: c, user: admin}}}}]
current-context: c
users:
- name: admin
  user:
    client-key-data: {CANARY_CLIENT_KEY_B64}
    token: {CANARY_TOKEN}
""")
    site = folder / "site.yaml"
    site.write_text("""site: canary
provisioner: {kind: existing, kubeconfig: ./kubeconfig}
cluster:
  ssh: {user: ops, key_file: ./id_canary, become_password: file:./become.txt}
  nodes:
    - {name: n1, roles: [kube_control_plane, etcd, kube_node], ansible_host: 192.0.2.10, ip: 192.0.2.10}
cni:
  profile: lab  # a local source: plan mode fetches and renders remote ones, and this machine is offline
  version: null
kubespray:
  extra_vars: {registry_password: "env:CANARY_REGISTRY_PW"}
""")
    return site


def stage_notebook(path: Path, body: list[str], result: str | None = 'ctx.result("planned", "test stage")') -> Path:
    """A minimal stage notebook following the stage contract, with extra code cells."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        "params_files = []\nset_values = []\nrun_dir = None\nstage = None\nplan = True")
    params.metadata["tags"] = ["parameters"]
    cells = [params, nbformat.v4.new_code_cell(
        "from cni_runbook.state import open_stage\nctx = open_stage(stage, params_files, set_values, run_dir, plan)")]
    cells += [nbformat.v4.new_code_cell(src) for src in body]
    if result:
        cells.append(nbformat.v4.new_code_cell(result))
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def files_containing(run_dir: Path, needles: list[str]) -> dict[str, list[str]]:
    """{relative file: [needles found]} over every file, raw and JSON-escaped."""
    found: dict[str, list[str]] = {}
    for path in run_dir.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        hits = [n for n in needles
                if n.encode() in data or json.dumps(n)[1:-1].encode() in data]
        if hits:
            found[path.relative_to(run_dir).as_posix()] = hits
    return found


def report_problems(run_dir: Path) -> list[str]:
    """What makes a run's report.html unreadable: a stage whose executed notebook has a figure
    but whose report section embeds no image; a figure's text form, a Styler repr or ``nan``
    shown as text."""
    import re

    html = (run_dir / "report.html").read_text()
    record = json.loads((run_dir / "run.json").read_text())
    problems = []
    for bad in ("<Figure size", "Styler object", "pandas.io.formats.style"):
        if bad in html:
            problems.append(f"report.html shows {bad!r}")
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    text = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
    for hit in re.finditer(r"(?i)(?<![\w.])nan(?![\w(])", text):
        problems.append(f"report.html shows nan as text: ...{text[max(0, hit.start() - 60):hit.end() + 20]!r}...")
    stages = record["stages"]
    for i, s in enumerate(stages):
        nb = nbformat.read(run_dir / s["notebook"], as_version=4)
        figures = sum("image/png" in (o.get("data") or {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        start = html.find(f'id="stage-{s["stage"]}-{s["attempt"]}"')
        end = html.find(f'id="stage-{stages[i + 1]["stage"]}-{stages[i + 1]["attempt"]}"') if i + 1 < len(stages) else len(html)
        if start < 0:
            problems.append(f"{s['stage']}: no section in report.html")
            continue
        images = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html[start:end]))
        if figures and images < figures:
            problems.append(f"{s['stage']}: {figures} figure(s) in the notebook, {images} image(s) in the report")
    return problems


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "outputs"
    out.mkdir()
    monkeypatch.setenv("CNI_RUNBOOK_OUTPUTS", str(out))
    return out


@pytest.fixture(scope="session")
def plan_run(tmp_path_factory) -> dict:
    """All five stages in plan mode through the CLI, with canary secrets referenced by the params."""
    from cni_runbook import cli

    base = tmp_path_factory.mktemp("plan_run")
    site = write_secrets(base / "site")
    out = base / "outputs"
    mp = pytest.MonkeyPatch()
    mp.setenv("CANARY_REGISTRY_PW", CANARY_ENV)
    try:
        code = cli.main(["--outputs", str(out), "run", "--params", str(site), "--plan"])
    finally:
        mp.undo()
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return {"code": code, "run_dir": run_dir, "outputs": out}


@pytest.fixture
def run_copy(plan_run, tmp_path) -> Path:
    """A private copy of the session's plan run, free to tamper with."""
    dst = tmp_path / "outputs" / plan_run["run_dir"].name
    shutil.copytree(plan_run["run_dir"], dst)
    return dst


@pytest.fixture(scope="session")
def kit():
    """The helpers and canaries above, for test modules (tests/ is not a package)."""
    import types

    return types.SimpleNamespace(
        write_secrets=write_secrets, stage_notebook=stage_notebook, files_containing=files_containing,
        report_problems=report_problems,
        CANARIES=CANARIES, CANARY_BECOME=CANARY_BECOME, CANARY_CLIENT_KEY=CANARY_CLIENT_KEY,
        CANARY_ENV=CANARY_ENV, CANARY_TOKEN=CANARY_TOKEN, ROOT=ROOT)
