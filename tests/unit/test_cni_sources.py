"""CNI sources against a local HTTP server on 127.0.0.1 (nothing is fetched from the internet)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile

import pytest
import yaml

from cni_runbook.cni.errors import SourceError
from cni_runbook.cni.sources import antrea_manifest, antrea_manifest_url, fetch_url, helm_local_chart, helm_repo_chart, local_file

MANIFEST = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cni-test\n"


def test_url_is_stored_with_its_sha256(server, tmp_path):
    root, base = server
    (root / "v2.7.0").mkdir()
    (root / "v2.7.0" / "antrea.yml").write_bytes(MANIFEST)
    artifacts = tmp_path / "artifacts"
    record = antrea_manifest("2.7.0", artifacts, url=base + "/{version}/antrea.yml", timeout=5)
    digest = hashlib.sha256(MANIFEST).hexdigest()
    assert record.kind == "url" and record.origin == base + "/v2.7.0/antrea.yml"
    assert record.path == artifacts / "antrea.yml" and record.path.read_bytes() == MANIFEST
    assert record.sha256 == digest and record.size == len(MANIFEST)
    assert (artifacts / "antrea.yml.sha256").read_text() == f"{digest}  antrea.yml\n"
    assert json.loads((artifacts / "antrea.yml.source.json").read_text())["sha256"] == digest
    assert record.manifest().text == MANIFEST.decode()
    assert sorted(p.name for p in artifacts.iterdir()) == ["antrea.yml", "antrea.yml.sha256", "antrea.yml.source.json"]


def test_pinned_sha256_mismatch_stores_nothing(server, tmp_path):
    root, base = server
    (root / "antrea.yml").write_bytes(MANIFEST)
    with pytest.raises(SourceError, match=r"antrea.yml: sha256 is [0-9a-f]{64}, expected 0{64}"):
        fetch_url(base + "/antrea.yml", tmp_path / "a", expected_sha256="0" * 64, timeout=5)
    assert list((tmp_path / "a").iterdir()) == []


def test_http_error_and_timeout(server, tmp_path):
    _, base = server
    with pytest.raises(SourceError, match=r"/missing.yml: HTTP 404"):
        fetch_url(base + "/missing.yml", tmp_path / "a", timeout=5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/antrea.yml"
        with pytest.raises(SourceError, match=r"no answer within 0.3 s"):
            fetch_url(url, tmp_path / "b", timeout=0.3)
    finally:
        silent.close()
    assert list((tmp_path / "b").iterdir()) == []


def test_default_antrea_url_and_version_placeholder(tmp_path):
    assert antrea_manifest_url("2.7.0") == "https://github.com/antrea-io/antrea/releases/download/v2.7.0/antrea.yml"
    with pytest.raises(SourceError, match=r"contains \{version\} but no version was given"):
        fetch_url("http://127.0.0.1:9/{version}/antrea.yml", tmp_path)


def test_local_file(tmp_path):
    source = tmp_path / "site.yml"
    source.write_bytes(MANIFEST)
    record = local_file(source, tmp_path / "artifacts")
    assert record.kind == "file" and record.sha256 == hashlib.sha256(MANIFEST).hexdigest()
    assert (tmp_path / "artifacts" / "site.yml").read_bytes() == MANIFEST
    again = local_file(tmp_path / "artifacts" / "site.yml", tmp_path / "artifacts")  # already in place
    assert again.sha256 == record.sha256
    with pytest.raises(SourceError, match=r"nope.yml: no such file"):
        local_file(tmp_path / "nope.yml", tmp_path / "artifacts")


def _chart_tgz() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"apiVersion: v2\nname: demo\nversion: 1.2.3\n"
        info = tarfile.TarInfo("demo/Chart.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_helm_repository_chart_is_checked_against_the_index(server, tmp_path):
    root, base = server
    archive = _chart_tgz()
    (root / "charts").mkdir()
    (root / "charts" / "demo-1.2.3.tgz").write_bytes(archive)
    index = {"apiVersion": "v1", "entries": {"demo": [
        {"name": "demo", "version": "1.2.3", "urls": ["charts/demo-1.2.3.tgz"], "digest": hashlib.sha256(archive).hexdigest()},
        {"name": "demo", "version": "1.2.2", "urls": ["charts/demo-1.2.2.tgz"], "digest": "0" * 64},
    ]}}
    (root / "index.yaml").write_text(yaml.safe_dump(index))
    artifacts = tmp_path / "artifacts"
    record = helm_repo_chart(base, "demo", artifacts, version="v1.2.3", values={"mtu": 1400}, timeout=5)
    assert record.kind == "helm-repo" and record.path.name == "demo-1.2.3.tgz" and record.path.read_bytes() == archive
    assert record.details["values_file"] == "demo-1.2.3-values.yaml"
    assert yaml.safe_load((artifacts / "demo-1.2.3-values.yaml").read_text()) == {"mtu": 1400}
    with pytest.raises(SourceError, match=r"index.yaml: chart 'demo' has no version '9.9.9'; newest: 1.2.3, 1.2.2"):
        helm_repo_chart(base, "demo", artifacts, version="9.9.9", timeout=5)
    with pytest.raises(SourceError, match=r"index.yaml: no chart 'other'; charts: demo"):
        helm_repo_chart(base, "other", artifacts, timeout=5)
    (root / "charts" / "demo-1.2.2.tgz").write_bytes(archive)  # does not match the index's digest
    with pytest.raises(SourceError, match=r"demo-1.2.2.tgz: sha256 is [0-9a-f]{64}, expected 0{64}"):
        helm_repo_chart(base, "demo", tmp_path / "other", version="1.2.2", timeout=5)


def test_local_chart_packs_reproducibly(tmp_path):
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: lab-cni\nversion: 0.1.0\n")
    (chart / "templates" / "ds.yaml").write_text("kind: DaemonSet\n")
    first = helm_local_chart(chart, tmp_path / "a")
    second = helm_local_chart(chart, tmp_path / "b", values={"x": 1})
    assert first.path.name == "lab-cni-0.1.0.tgz" and first.sha256 == second.sha256
    with tarfile.open(first.path) as tar:
        assert tar.getnames() == ["lab-cni/Chart.yaml", "lab-cni/templates/ds.yaml"]
    with pytest.raises(SourceError, match=r"not a Helm chart \(no Chart.yaml\)"):
        helm_local_chart(tmp_path / "a", tmp_path / "c")
