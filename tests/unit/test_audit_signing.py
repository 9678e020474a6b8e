"""Signed, chained run records: a forged record, a deleted run.json or a deleted run is found by verify --all."""

from __future__ import annotations

import hashlib
import json
import shutil

from cni_runbook import audit, cli


def _forge(run_dir):
    """What a forger without the key can do: edit a result and recompute every hash."""
    result = run_dir / "artifacts" / "00_preflight" / "result.json"
    data = json.loads(result.read_text())
    data["summary"] = "all good (forged)"
    result.write_text(json.dumps(data))
    record = json.loads((run_dir / "run.json").read_text())
    record["operator"] = "someone-else@elsewhere"
    record["files"] = audit.hash_tree(run_dir)
    record["record_sha256"] = audit._digest(record)  # noqa: SLF001 - the forger's own copy of it
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))


def _runs(tmp_path, plan_run, n):
    """n copies of the session's plan run as consecutive records of one site, re-signed and chained."""
    out = tmp_path / "outputs"
    out.mkdir()
    dirs = []
    for i in range(n):
        dst = out / f"{plan_run['run_dir'].name[:-4]}{i:04x}"
        shutil.copytree(plan_run["run_dir"], dst)
        record = audit.load_record(dst)
        record.pop("chain", None)
        record["run_id"] = dst.name
        audit.write_record(dst, record)
        dirs.append(dst)
    return out, dirs


def test_records_are_signed_and_chained(tmp_path, plan_run):
    out, dirs = _runs(tmp_path, plan_run, 3)
    records = [audit.load_record(d) for d in dirs]
    assert all(r["signature"]["alg"] == "hmac-sha256" for r in records)
    assert records[0]["chain"] == {"previous": None}
    assert records[2]["chain"]["previous"] == dirs[1].name
    assert records[2]["chain"]["previous_sha256"] == hashlib.sha256((dirs[1] / "run.json").read_bytes()).hexdigest()
    assert all(p == [] for p in audit.verify_all(out).values())
    assert cli.main(["--outputs", str(out), "verify", "--all"]) == 0


def test_a_forged_record_fails_verify_naming_the_run(tmp_path, plan_run, capsys):
    out, dirs = _runs(tmp_path, plan_run, 2)
    _forge(dirs[0])
    assert cli.main(["--outputs", str(out), "verify", dirs[0].name]) == 1
    assert "signature does not match" in capsys.readouterr().err
    assert cli.main(["--outputs", str(out), "verify", "--all"]) == 1
    captured = capsys.readouterr()
    assert f"run {dirs[0].name}: DOES NOT VERIFY" in captured.err and f"run {dirs[1].name}" not in captured.err


def test_a_stripped_signature_is_not_accepted(tmp_path, plan_run):
    out, dirs = _runs(tmp_path, plan_run, 1)
    record = json.loads((dirs[0] / "run.json").read_text())
    del record["signature"]
    (dirs[0] / "run.json").write_text(json.dumps(record))
    assert any("not signed" in p for p in audit.verify(dirs[0]))


def test_deleted_records_are_reported_as_tampering(tmp_path, plan_run, capsys):
    out, dirs = _runs(tmp_path, plan_run, 4)
    (dirs[0] / "run.json").unlink()  # a record deleted, its folder left
    assert cli.main(["--outputs", str(out), "verify", dirs[0].name]) == 1
    err = capsys.readouterr().err
    assert "run.json is missing" in err and "tampering" in err
    shutil.rmtree(dirs[1])  # a run in the middle of the chain, folder and all
    shutil.rmtree(dirs[3])  # the newest run, folder and all
    found = audit.verify_all(out)
    assert any("record of this run folder was deleted" in p for p in found[dirs[0].name])
    assert any(f"{dirs[1].name}, is gone" in p for p in found[dirs[2].name])
    assert any("its run folder is gone" in p for p in found[dirs[3].name])
    assert cli.main(["--outputs", str(out), "verify", "--all"]) == 1
    assert f"do not: {dirs[0].name}" in capsys.readouterr().out


def test_a_rolled_back_run_is_listed_as_such_and_its_rollback_folder_is_no_run(tmp_path, plan_run):
    from cni_runbook import history

    out, dirs = _runs(tmp_path, plan_run, 1)
    work = out / f"{dirs[0].name}.rollback-20260101T000000Z"
    work.mkdir()
    (work / "rollback.json").write_text(json.dumps({"run": dirs[0].name, "removed": []}))
    assert history.load_runs(out).loc[0, "status"] == "planned, rolled back"
    assert list(audit.verify_all(out)) == [dirs[0].name]
