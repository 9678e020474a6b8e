"""The CLI end to end: a plan run of all stages, verify, tamper, list/show/report, user errors."""

from __future__ import annotations

import json

import pytest

from cni_runbook import cli


def test_plan_run_of_all_stages_verifies_then_a_flipped_byte_fails(plan_run, run_copy, capsys):
    assert plan_run["code"] == 0
    out = run_copy.parent
    record = json.loads((run_copy / "run.json").read_text())
    assert record["status"] == "planned" and record["plan"] is True
    assert [s["stage"] for s in record["stages"]] == ["00_preflight", "01_cluster_no_cni", "02_cni_install",
                                                     "03_validation", "04_policy_qos", "05_cni_lifecycle"]
    for name in ("00-preflight.ipynb", "04-policy_qos.ipynb", "report.html", "junit.xml", "run.log",
                 "artifacts/02_cni_install/plan.yaml", "artifacts/02_cni_install/params.yaml"):
        assert name in record["files"], name
    assert [f["path"].rsplit("/", 1)[-1] for f in record["params_files"]] == ["defaults.yaml", "site.yaml"]
    assert record["project"]["version"]

    assert cli.main(["--outputs", str(out), "verify", run_copy.name]) == 0
    assert "verified" in capsys.readouterr().out

    target = run_copy / "03-validation.ipynb"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x20
    target.write_bytes(bytes(data))
    assert cli.main(["--outputs", str(out), "verify", run_copy.name]) == 1
    err = capsys.readouterr().err
    assert "DOES NOT VERIFY" in err and "03-validation.ipynb: modified" in err


def test_list_show_and_report(plan_run, capsys, tmp_path):
    out, run_id = str(plan_run["outputs"]), plan_run["run_dir"].name
    assert cli.main(["--outputs", out, "list"]) == 0
    listing = capsys.readouterr().out
    assert run_id in listing and "planned" in listing and "canary" in listing
    assert cli.main(["--outputs", out, "show", run_id]) == 0
    assert "04_policy_qos" in capsys.readouterr().out
    assert cli.main(["--outputs", out, "report", run_id, "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert html.index(f"Run {run_id}") < html.index("00_preflight (attempt 1)")  # the summary comes first
    assert "open_stage(" not in html  # code is hidden


def test_report_html_in_the_run_folder_has_summary_first(plan_run):
    html = (plan_run["run_dir"] / "report.html").read_text()
    assert "PLANNED" in html and "planned actions" in html
    assert "display.table(" not in html


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    site = tmp_path / "s.yaml"
    site.write_text("cni: {profil: lab}\n")
    assert cli.main(["--outputs", str(tmp_path), "run", "--params", str(site), "--plan"]) == 2
    err = capsys.readouterr().err
    assert "cni.profil: unknown key; did you mean 'profile'?" in err
    assert "Traceback" not in err
    assert not any(tmp_path.glob("*/run.json"))  # nothing was started
    assert cli.main(["--outputs", str(tmp_path), "verify", "no-such-run"]) == 2
    assert cli.main(["--outputs", str(tmp_path), "run", "--params", str(site), "--stages", "99"]) == 2


def test_failing_run_exits_1_and_says_how_to_resume(tmp_path, capsys, kit, monkeypatch):
    from cni_runbook import stages

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    kit.stage_notebook(nbs / "00_preflight.ipynb", ["raise OSError('ssh: connect to host n1 port 22: refused')"])
    monkeypatch.setattr(stages, "NOTEBOOKS_DIR", nbs)
    assert cli.main(["--outputs", str(tmp_path / "out"), "run", "--params", str(kit.ROOT / "params" / "lab.yaml"),
                     "--stages", "00", "--plan"]) == 1
    err = capsys.readouterr().err
    assert "stage 00_preflight failed in cell" in err and "cni-runbook resume" in err
    (run_dir,) = (tmp_path / "out").iterdir()
    assert cli.main(["--outputs", str(tmp_path / "out"), "show", run_dir.name]) == 0
    shown = capsys.readouterr().out
    assert "FAILED" in shown and "OSError: ssh: connect to host n1 port 22: refused" in shown


def test_params_prints_the_layered_result(capsys, kit):
    assert cli.main(["params", "--params", str(kit.ROOT / "params" / "lab.yaml"), "--set", "cni.server_dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert "defaults.yaml  sha256" in out and "lab.yaml  sha256" in out
    assert "server_dry_run: true" in out and "name: lab-w2" in out
    assert cli.main(["params", "--set", "cni.route=kubespray"]) == 2
    assert "cni.route = 'kubespray': input should be 'direct' or 'kubespray_custom_cni'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    assert "cni-runbook" in capsys.readouterr().out


def test_list_and_show_output_formats(plan_run, capsys):
    import yaml

    out, run_id = str(plan_run["outputs"]), plan_run["run_dir"].name
    assert cli.main(["--outputs", out, "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:6] == ["run_id", "started", "site", "cni", "cni_version", "status"]
    assert row.split()[0] == run_id and "canary" in row
    assert cli.main(["--outputs", out, "list", "--no-headers", "--no-verify"]) == 0
    assert capsys.readouterr().out.split()[0] == run_id
    assert cli.main(["--outputs", out, "list", "-o", "wide"]) == 0
    assert "operator" in capsys.readouterr().out.splitlines()[0]
    assert cli.main(["--outputs", out, "list", "-o", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["run_id"] == run_id and listed["verified"] is True and listed["cni"] and "cluster" in listed
    assert cli.main(["--outputs", out, "list", "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)[0]["run_id"] == run_id

    for ref in ("latest", run_id[:18], run_id):
        assert cli.main(["--outputs", out, "show", ref]) == 0
        shown = capsys.readouterr().out
        assert shown.startswith(f"run {run_id}") and "CNI " in shown.splitlines()[1]
    assert cli.main(["--outputs", out, "show", "latest", "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run_id"] == run_id
    assert cli.main(["--outputs", out, "show", "latest", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["cni"]["route"] == "direct"
    assert cli.main(["--outputs", out, "show", "latest", "-o", "wide"]) == 0
    assert "params " in capsys.readouterr().out


def test_unknown_run_and_subcommand_get_a_did_you_mean(plan_run, capsys):
    out, run_id = str(plan_run["outputs"]), plan_run["run_dir"].name
    assert cli.main(["--outputs", out, "show", run_id[:-1] + "x"]) == 2
    assert f"did you mean '{run_id}'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["lsit"])
    assert info.value.code == 2 and "did you mean 'list'?" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["list", "-o", "json"], ["show", "latest", "-o", "json"], ["list"]])
def test_a_reader_that_goes_away_ends_quietly(plan_run, argv):
    """`cni-runbook list | head -1`: no BrokenPipeError traceback, exit 0."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cni_runbook.cli", "--outputs", str(plan_run["outputs"]), *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "BrokenPipeError" not in err and "Traceback" not in err and "Exception ignored" not in err
    shell = subprocess.run(["bash", "-o", "pipefail", "-c", " ".join(map(str, cmd)) + " | head -1"],
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0 and shell.stderr == "" and len(shell.stdout.splitlines()) == 1


def test_run_kubeconfig_and_context_are_recorded_overrides(tmp_path, kit, monkeypatch):
    from cni_runbook import runner

    seen = {}
    monkeypatch.setattr(runner, "start", lambda files, sets, *a, **k: seen.setdefault("sets", sets) and None)
    monkeypatch.setattr(cli, "_finish", lambda result: 0)
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    assert cli.main(["run", "--params", str(kit.ROOT / "params" / "lab.yaml"), "--kubeconfig", str(kubeconfig),
                     "--context", "admin@prod", "--set", "cni.version=v2.7.0"]) == 0
    assert seen["sets"] == ["cni.version=v2.7.0", "provisioner.kind=existing", f"provisioner.kubeconfig={kubeconfig}",
                            "provisioner.context=admin@prod"]
