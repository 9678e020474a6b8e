"""A real browser on a real JupyterLab: a stage notebook run in plan mode with the ``cni-runbook``
kernel renders its tables as HTML tables (not text, not ``Styler`` reprs), and the history
notebook renders its plot as an image.

Debian's chromium (``apt-get install chromium``; ``make test`` installs it) driven by Playwright
from PyPI with ``executable_path``: no browser is downloaded.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed "
                                "(make test installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on loopback over a copy of the notebooks (autosave never touches the sources)."""
    root = tmp_path_factory.mktemp("lab")
    for name in ("04_policy_qos.ipynb", "history.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, root / name)
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ, CNI_RUNBOOK_RUN_DIR=str(root / "run"), CNI_RUNBOOK_OUTPUTS=str(root / "outputs"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"))
    (root / "outputs").mkdir()
    # every cell in the DOM (JupyterLab 4 otherwise renders only the cells in view)
    settings = root / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env["JUPYTERLAB_SETTINGS_DIR"] = str(root / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(root / "workspaces")
    log = (root / "jupyterlab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.allow_root=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield {"base": base, "token": token, "root": root}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def _run_all(page, lab, name: str, timeout_s: float = 300) -> None:
    """Open a notebook, wait for its kernel, run every cell, wait until none is still running."""
    # a workspace of its own per notebook, reset: the default workspace would restore the
    # notebook an earlier test opened, and that one could be the current widget
    workspace = Path(name).stem.replace("_", "-")
    page.goto(f"{lab['base']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}",
              wait_until="domcontentloaded")
    page.wait_for_function(f"() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           f" && window.jupyterapp.shell.currentWidget.context"
                           f" && window.jupyterapp.shell.currentWidget.context.path === {name!r}"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel", timeout=90_000)
    kernel = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")
    assert kernel == "cni-runbook"
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget, cells = w.content.model.cells;
            for (let i = 0; i < cells.length; i++) {
                const c = cells.get(i);
                if (c.type === 'code' && c.sharedModel.getSource().trim() && !c.executionCount) return false;
            }
            return w.sessionContext.session.kernel.status === 'idle';
        }""", timeout=timeout_s * 1000)


def test_stage_notebook_in_plan_mode_renders_tables(lab, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    _run_all(page, lab, "04_policy_qos.ipynb")
    outputs = page.locator(".jp-OutputArea-output")
    text = " ".join(outputs.all_inner_texts())
    assert "Traceback" not in text and "Error" not in page.locator(".jp-OutputArea-output[data-mime-type="
                                                                   "'application/vnd.jupyter.stderr']").all_inner_texts()
    assert "Styler object" not in text and "<Figure size" not in text
    tables = page.locator(".jp-RenderedHTMLCommon table")
    assert tables.count() >= 8  # plan, layout, policy sets, one expected truth table per set, planned QoS
    # the truth tables render as coloured HTML cells, not as ./X text
    blocked = page.locator(".jp-RenderedHTMLCommon td:text-is('X')").first
    assert "rgb(248, 215, 218)" in blocked.evaluate("e => getComputedStyle(e).backgroundColor")
    assert page.get_by_text("layout: 3 namespaces, 9 pods").count() >= 1
    page.screenshot(path=str(lab["root"] / "04_policy_qos.png"), full_page=True)
    page.close()


def test_history_notebook_renders_its_plot_as_an_image(lab, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    _run_all(page, lab, "history.ipynb")
    images = page.locator(".jp-RenderedImage img[src^='data:image/png']")
    images.first.wait_for(timeout=30_000)
    assert images.first.evaluate("e => e.naturalWidth") > 300
    assert "Figure size" not in " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    page.close()
