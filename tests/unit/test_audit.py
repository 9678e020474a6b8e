"""Run records: hashes, verify (tampered, missing, extra, edited record), run ids, JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from cni_runbook import audit


@pytest.fixture
def run_dir(tmp_path):
    run = audit.create_run_dir("lab", tmp_path)
    (run / "00-preflight.ipynb").write_text("{}")
    (run / "artifacts" / "00_preflight").mkdir(parents=True)
    (run / "artifacts" / "00_preflight" / "plan.yaml").write_text("actions: []\n")
    audit.write_record(run, {"run_id": run.name, "stages": []})
    return run


def test_fresh_record_verifies(run_dir):
    record = audit.load_record(run_dir)
    assert set(record["files"]) == {"00-preflight.ipynb", "artifacts/00_preflight/plan.yaml"}
    assert audit.verify(run_dir) == []


def test_flipped_byte_is_found(run_dir):
    path = run_dir / "artifacts" / "00_preflight" / "plan.yaml"
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    (problem,) = audit.verify(run_dir)
    assert problem.startswith("artifacts/00_preflight/plan.yaml: modified")


def test_missing_and_extra_files_are_found(run_dir):
    (run_dir / "00-preflight.ipynb").unlink()
    (run_dir / "artifacts" / "smuggled.txt").write_text("x")
    assert audit.verify(run_dir) == ["00-preflight.ipynb: missing", "artifacts/smuggled.txt: not in the record"]


def test_edited_record_is_found(run_dir):
    record = json.loads((run_dir / "run.json").read_text())
    record["stages"] = [{"stage": "00_preflight", "status": "passed"}]
    (run_dir / "run.json").write_text(json.dumps(record))
    assert audit.verify(run_dir) == ["run.json: edited after it was written (digest mismatch)",
                                     "run.json: signature does not match its content: the record was rewritten "
                                     "after it was signed"]


def test_unreadable_record(run_dir):
    (run_dir / "run.json").write_text("{not json")
    (problem,) = audit.verify(run_dir)
    assert "unreadable run record" in problem


def test_run_ids_are_unique_and_name_the_site(tmp_path):
    ids = {audit.create_run_dir("dc1", tmp_path).name for _ in range(20)}
    assert len(ids) == 20 and all("-dc1-" in i for i in ids)


def test_find_run(run_dir, tmp_path):
    assert audit.find_run(run_dir.name, tmp_path) == run_dir
    with pytest.raises(audit.RunbookError, match="no run 'nope'"):
        audit.find_run("nope", tmp_path)


def test_junit_counts_and_failure_text():
    xml = audit.junit_xml("s", [{"name": "a", "status": "passed"}, {"name": "b", "status": "failed", "message": "x<y"},
                                {"name": "c", "status": "planned"}])
    suite = ET.fromstring(xml)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    assert suite.find("testcase[@name='b']/failure").text == "x<y"
