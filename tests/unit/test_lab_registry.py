"""The lab registry: config, readiness and pushes against a real docker-registry on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import yaml

from cni_runbook.lab import images, registry
from cni_runbook.lab.images import MEDIA_TYPE_MANIFEST, Recipe

pytestmark = pytest.mark.skipif(
    not registry.DOCKER_REGISTRY.exists(), reason="Debian package docker-registry not installed"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry_addr(tmp_path_factory):
    """A real docker-registry on 127.0.0.1:<free port> with throw-away storage."""
    base = tmp_path_factory.mktemp("registry")
    addr = f"127.0.0.1:{_free_port()}"
    config = registry.write_registry_config(base / "config.yml", base / "storage", addr)
    log = (base / "registry.log").open("w")
    proc = subprocess.Popen(registry.registry_command(config), stdout=log, stderr=subprocess.STDOUT)
    try:
        registry.wait_ready(addr, timeout=20)
        yield addr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> list[images.ImageRef]:
    """Two small real images: the lab pause (needs Go) and a generated one (always)."""
    base = tmp_path_factory.mktemp("layouts")
    script = base / "hello.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    built = [
        images.build_layout(
            Recipe(name="hello", repo="test/hello", tag="1", files=((script, "/hello"),), entrypoint=("/hello",)),
            out_dir=base / "hello",
            progress=lambda _: None,
        )
    ]
    if shutil.which("go"):
        pause = images.recipe("pause", lambda _: None)
        built.append(images.build_layout(pause, out_dir=base / "pause", progress=lambda _: None))
    return built


def test_config_is_docker_registry_config(tmp_path):
    path = registry.write_registry_config(tmp_path / "etc" / "registry.yml", tmp_path / "store", "10.99.0.1:5000")
    config = yaml.safe_load(path.read_text())
    assert config["version"] == 0.1
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "store")
    assert config["storage"]["delete"]["enabled"] is True
    assert config["http"]["addr"] == "10.99.0.1:5000"
    assert "auth" not in config and "tls" not in config["http"]
    assert (tmp_path / "store").is_dir()
    assert registry.registry_command(path) == ["/usr/bin/docker-registry", "serve", str(path)]


def test_storage_lives_in_the_build_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert registry.registry_storage_dir() == tmp_path / "cni-runbook" / "build" / "registry"


def test_wait_ready_times_out_on_a_closed_port():
    started = time.monotonic()
    with pytest.raises(registry.RegistryError, match="not ready after"):
        registry.wait_ready(f"127.0.0.1:{_free_port()}", timeout=0.5)
    assert time.monotonic() - started < 5


def test_push_then_read_back_over_http(registry_addr, small_images):
    for image in small_images:
        result = registry.push(image.layout, registry_addr, image.repo, image.tag)
        assert not result.up_to_date
        assert result.manifest_digest == image.manifest_digest
        assert len(result.uploaded) == 2 and result.skipped == ()  # config + one layer

        body, digest, content_type = registry.fetch_manifest(registry_addr, image.repo, image.tag)
        assert digest == image.manifest_digest == images._sha256_bytes(body)
        assert content_type == MEDIA_TYPE_MANIFEST
        manifest = json.loads(body)
        config = registry.fetch_blob(registry_addr, image.repo, manifest["config"]["digest"])
        assert images._sha256_bytes(config) == image.config_digest
        layer = registry.fetch_blob(registry_addr, image.repo, manifest["layers"][0]["digest"])
        assert images._sha256_bytes(layer) == manifest["layers"][0]["digest"]
        assert len(layer) == manifest["layers"][0]["size"]


def test_second_push_is_a_no_op_and_new_tags_reuse_blobs(registry_addr, small_images):
    image = small_images[0]
    registry.push(image.layout, registry_addr, image.repo, image.tag)
    again = registry.push(image.layout, registry_addr, image.repo, image.tag)
    assert again.up_to_date and again.uploaded == () and again.skipped == ()

    retag = registry.push(image.layout, registry_addr, image.repo, "retagged")
    assert not retag.up_to_date and retag.uploaded == () and len(retag.skipped) == 2
    _, digest, _ = registry.fetch_manifest(registry_addr, image.repo, "retagged")
    assert digest == image.manifest_digest


def test_push_all_reports_each_image(registry_addr, small_images):
    refs = {image.name: image for image in small_images}
    lines: list[str] = []
    results = registry.push_all(refs, registry_addr, progress=lines.append)
    assert set(results) == set(refs)
    second = registry.push_all(refs, registry_addr, progress=lines.append)
    assert all(r.up_to_date for r in second.values())
    assert lines[-1] == f"[registry] {len(refs)} already up to date: " + ", ".join(f"{i.repo}:{i.tag}" for i in refs.values())


def test_missing_manifest_is_a_clear_error(registry_addr):
    with pytest.raises(registry.RegistryError, match="not found"):
        registry.fetch_manifest(registry_addr, "test/absent", "1")


def test_registry_refusals_carry_the_http_status(registry_addr, small_images):
    image = small_images[0]
    with pytest.raises(registry.RegistryError, match=r"HTTP 4\d\d"):
        registry.push(image.layout, registry_addr, "Invalid/UPPER-case", image.tag)


@pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None, reason="containerd not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="a private containerd needs root")
def test_containerd_pulls_and_runs_a_pushed_image(registry_addr, small_images, tmp_path):
    """What the lab nodes do: containerd 1.6 pulls from the registry over plain HTTP and runs it."""
    image = small_images[-1]
    if image.name != "pause":
        pytest.skip("needs the lab pause image (the go command is not installed)")
    registry.push(image.layout, registry_addr, image.repo, image.tag)
    sock = tmp_path / "containerd.sock"
    config = tmp_path / "containerd.toml"
    config.write_text(
        f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
        f'[grpc]\n  address = "{sock}"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
    )
    log = (tmp_path / "containerd.log").open("w")
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    ctr = ["ctr", "--address", str(sock), "--namespace", "cnilab-test"]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "private containerd did not start"
            time.sleep(0.2)
        ref = f"{registry_addr}/{image.repo}:{image.tag}"
        pull = subprocess.run([*ctr, "images", "pull", "--plain-http", ref], capture_output=True, text=True)
        assert pull.returncode == 0, pull.stderr
        listed = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True, check=True).stdout
        assert image.manifest_digest in listed
        run = subprocess.run(
            [*ctr, "run", "--rm", ref, "probe", "/pause", "-v"], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("pause.go")

        # the other way onto a node: `ctr images import` of an OCI archive names the image itself
        archive = images.export_oci_archive(image, tmp_path / "pause.tar")
        imported = subprocess.run([*ctr, "images", "import", str(archive)], capture_output=True, text=True)
        assert imported.returncode == 0, imported.stderr
        names = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout
        assert image.ref in names.split()
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)
        log.close()
