"""The lab's OCI image builder: real builds of small images, determinism, caching, contents."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from cni_runbook.lab import images
from cni_runbook.lab.images import MEDIA_TYPE_LAYER, MEDIA_TYPE_MANIFEST, Recipe

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="the go command is not installed")
needs_iperf3 = pytest.mark.skipif(not Path("/usr/bin/iperf3").exists(), reason="Debian package iperf3 not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and unshare need root")


def _cached(path: Path, what: str):
    """Skip unless a binary that takes minutes to build is already in the build cache."""
    return pytest.mark.skipif(not path.exists(), reason=f"{what} not built yet ({path}); run `lab build`")


COREDNS_BIN = images.build_cache_dir() / f"coredns-{images.COREDNS_VERSION}" / "bin" / "coredns"
KUBE_ROUTER_BIN = images.build_cache_dir() / f"kube-router-{images.KUBE_ROUTER_VERSION}" / "bin" / "kube-router"
AGNHOST_BIN = images.k8s_bin_dir() / "agnhost"


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":")
    return (layout / "blobs" / algorithm / hexdigest).read_bytes()


def _manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return json.loads(_blob(layout, index["manifests"][0]["digest"]))


def _layer_members(layout: Path) -> list[tarfile.TarInfo]:
    layer = _blob(layout, _manifest(layout)["layers"][0]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        return tar.getmembers()


def _extract(layout: Path, dest: Path) -> Path:
    layer = _blob(layout, _manifest(layout)["layers"][0]["digest"])
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        tar.extractall(dest, filter="tar")
    return dest


def _tiny_recipe(tmp_path: Path, text: bytes = b"hello\n") -> Recipe:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    return Recipe(
        name="tiny",
        repo="test/tiny",
        tag="1",
        files=((script, "/bin/hello"),),
        generated=(("/etc/motd", text),),
        symlinks=(("/usr/local/bin/hi", "/usr/bin/hello"),),
        entrypoint=("/bin/hello",),
    )


# --- pure helpers --------------------------------------------------------------------------


def test_image_paths_follow_merged_usr():
    assert images._image_path("/bin/sh") == "/usr/bin/sh"
    assert images._image_path("lib64/ld-linux-x86-64.so.2") == "/usr/lib64/ld-linux-x86-64.so.2"
    assert images._image_path("/sbin") == "/usr/sbin"
    assert images._image_path("/binaries/x") == "/binaries/x"
    assert images._image_path("/opt/cni-plugins/../cni-plugins/bridge") == "/opt/cni-plugins/bridge"


def test_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert images.images_dir() == tmp_path / "cni-runbook" / "build" / "images"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert images.build_cache_dir() == Path.home() / ".cache" / "cni-runbook" / "build"


def test_every_lab_image_has_a_repo_in_the_lab_namespace():
    assert set(images._REPOS) == set(images.ALL_IMAGE_NAMES)
    assert images.image_ref("pause") == "registry.cnilab.local:5000/pause:3.10.1"
    assert images.image_ref("coredns") == "registry.cnilab.local:5000/coredns/coredns:v1.12.4"
    assert images.image_ref("kube-router") == "registry.cnilab.local:5000/cnilab/kube-router:v2.1.0"
    with pytest.raises(KeyError, match="unknown lab image"):
        images.image_tag("nginx")


def test_missing_input_names_the_debian_package(tmp_path):
    rec = Recipe(name="x", repo="x", tag="1", files=((Path("/usr/lib/cni/no-such-plugin"), "/x"),))
    with pytest.raises(images.MissingInput, match="containernetworking-plugins"):
        images.build_layout(rec, out_dir=tmp_path / "x", progress=lambda _: None)


@needs_iperf3
def test_shared_libraries_of_a_dynamic_binary_include_the_loader():
    libs = {str(p) for p in images.shared_libraries([Path("/usr/bin/iperf3")])}
    assert any(p.endswith("/libiperf.so.0") for p in libs)
    assert any(p.endswith("/libc.so.6") for p in libs)
    assert any("ld-linux" in p for p in libs)


def test_shared_libraries_of_scripts_and_static_files_are_empty(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    assert images.shared_libraries([script]) == []


# --- layouts: structure, determinism, cache ---------------------------------------------------


def test_layout_is_a_valid_oci_layout_with_a_deterministic_layer(tmp_path):
    ref = images.build_layout(_tiny_recipe(tmp_path), out_dir=tmp_path / "out", progress=lambda _: None)
    layout = ref.layout
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][0]
    assert desc["digest"] == ref.manifest_digest
    assert desc["annotations"]["io.containerd.image.name"] == "registry.cnilab.local:5000/test/tiny:1"
    manifest = _manifest(layout)
    assert manifest["mediaType"] == MEDIA_TYPE_MANIFEST
    assert manifest["layers"][0]["mediaType"] == MEDIA_TYPE_LAYER
    # every descriptor's digest and size match the blob
    for d in [manifest["config"], *manifest["layers"]]:
        blob = _blob(layout, d["digest"])
        assert len(blob) == d["size"]
        assert images._sha256_bytes(blob) == d["digest"]

    members = _layer_members(layout)
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["usr/bin/hello"].mode == 0o755
    assert by_name["bin"].issym() and by_name["bin"].linkname == "usr/bin"
    assert by_name["tmp"].mode == 0o1777
    assert by_name["usr/local/bin/hi"].linkname == "/usr/bin/hello"
    assert {"etc/passwd", "etc/group", "etc/nsswitch.conf", "etc/motd", "usr/local", "usr/local/bin"} <= set(names)

    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    layer = gzip.decompress(_blob(layout, manifest["layers"][0]["digest"]))
    assert config["rootfs"]["diff_ids"] == [images._sha256_bytes(layer)]
    assert config["config"]["Entrypoint"] == ["/bin/hello"]
    assert config["created"] == "1970-01-01T00:00:00Z"


def test_two_builds_give_identical_digests(tmp_path):
    rec = _tiny_recipe(tmp_path)
    a = images.build_layout(rec, out_dir=tmp_path / "a", progress=lambda _: None)
    b = images.build_layout(rec, out_dir=tmp_path / "b", progress=lambda _: None)
    assert (a.manifest_digest, a.config_digest) == (b.manifest_digest, b.config_digest)
    files_a = sorted(p.relative_to(a.layout) for p in a.layout.rglob("*"))
    files_b = sorted(p.relative_to(b.layout) for p in b.layout.rglob("*"))
    assert files_a == files_b


def test_build_all_sums_up_cached_images_in_one_line(tmp_path, monkeypatch):
    import dataclasses

    recipes = {n: dataclasses.replace(_tiny_recipe(tmp_path), name=n, repo=f"test/{n}") for n in ("a", "b")}
    monkeypatch.setattr(images, "recipe", lambda name, progress=print: recipes[name])
    monkeypatch.setattr(images, "images_dir", lambda: tmp_path / "images")
    first: list[str] = []
    images.build_all(first.append, names=("a", "b"))
    assert not any("up to date" in m for m in first)  # both built
    again: list[str] = []
    refs = images.build_all(again.append, names=("a", "b"))
    assert again == ["[images] 2 up to date: a:1, b:1"] and not any(r.rebuilt for r in refs.values())


def test_unchanged_inputs_reuse_the_layout_and_changed_inputs_rebuild(tmp_path):
    out = tmp_path / "out"
    messages: list[str] = []
    first = images.build_layout(_tiny_recipe(tmp_path), out_dir=out, progress=messages.append)
    assert first.rebuilt and len(messages) == 1
    again = images.build_layout(_tiny_recipe(tmp_path), out_dir=out, progress=messages.append)
    assert not again.rebuilt and again.manifest_digest == first.manifest_digest
    assert messages[-1] == f"[images] tiny:1 up to date ({first.manifest_digest[:19]})"

    forced = images.build_layout(_tiny_recipe(tmp_path), out_dir=out, progress=messages.append, force=True)
    assert forced.rebuilt and forced.manifest_digest == first.manifest_digest

    changed = images.build_layout(_tiny_recipe(tmp_path, b"changed\n"), out_dir=out, progress=messages.append)
    assert changed.rebuilt and changed.manifest_digest != first.manifest_digest
    rec = _tiny_recipe(tmp_path, b"changed\n")
    (tmp_path / "hello.sh").write_text("#!/bin/sh\necho bye\n")  # same recipe, new input content
    content_changed = images.build_layout(rec, out_dir=out, progress=messages.append)
    assert content_changed.rebuilt and content_changed.manifest_digest != changed.manifest_digest
    # no staging directories left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_oci_archive_export_is_a_tar_of_the_layout(tmp_path):
    ref = images.build_layout(_tiny_recipe(tmp_path), out_dir=tmp_path / "out", progress=lambda _: None)
    archive = images.export_oci_archive(ref, tmp_path / "tiny.tar")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "index.json" in names and "oci-layout" in names
    assert f"blobs/sha256/{ref.manifest_digest.split(':')[1]}" in names
    assert images._BUILD_RECORD not in names


# --- real lab images -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pause_binary() -> Path:
    if shutil.which("go") is None:
        pytest.skip("the go command is not installed")
    return images.pause_binary(progress=lambda _: None)


def test_pause_exits_cleanly_on_sigterm(pause_binary):
    out = subprocess.run([str(pause_binary), "-v"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("pause.go ")
    proc = subprocess.Popen([str(pause_binary)], stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    assert proc.poll() is None, "pause must keep running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert "Shutting down, got signal: terminated" in proc.stderr.read()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("nsenter") is None, reason="util-linux missing")
def test_pause_reaps_orphans_as_pid_1(pause_binary):
    """In a new PID namespace pause is PID 1: orphans are re-parented to it and must be reaped."""
    unshare = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", str(pause_binary)], stderr=subprocess.DEVNULL
    )
    pause_pid = None
    try:
        deadline = time.monotonic() + 5
        while not _children(unshare.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (pause_pid,) = _children(unshare.pid)
        # sh starts `sleep` and exits at once: sleep becomes an orphan of the namespace's init
        subprocess.run(["nsenter", "-t", str(pause_pid), "-p", "--", "sh", "-c", "sleep 0.5 & exit 0"], check=True)
        assert len(_children(pause_pid)) == 1, "the orphan should now be pause's child"
        deadline = time.monotonic() + 5
        while _children(pause_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _children(pause_pid) == [], "the exited orphan was left a zombie"
        os.kill(pause_pid, signal.SIGTERM)  # handled even by a namespace's init
        assert unshare.wait(timeout=5) == 0
    finally:
        if unshare.poll() is None:  # unshare ignores SIGTERM; --kill-child takes pause down with it
            unshare.kill()
            unshare.wait(timeout=5)


def test_pause_image_is_static_and_tiny(pause_binary, tmp_path):
    rec = images.recipe("pause", progress=lambda _: None)
    ref = images.build_layout(rec, out_dir=tmp_path / "pause", progress=lambda _: None)
    names = {m.name for m in _layer_members(ref.layout)}
    assert "pause" in names
    assert not any(".so" in n for n in names), "a static Go binary needs no shared libraries"
    config = json.loads(_blob(ref.layout, _manifest(ref.layout)["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"
    assert ref.size < 3_000_000


@needs_iperf3
@needs_root
def test_iperf3_image_runs_in_a_chroot(tmp_path):
    ref = images.build_layout(images.recipe("iperf3"), out_dir=tmp_path / "iperf3", progress=lambda _: None)
    root = _extract(ref.layout, tmp_path / "rootfs")
    out = subprocess.run(["chroot", str(root), "/usr/bin/iperf3", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("iperf 3.")
    shell = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "ls /tmp && echo ok"], capture_output=True, text=True)
    assert shell.stdout.strip() == "ok"


@_cached(KUBE_ROUTER_BIN, "kube-router")
@needs_root
def test_kube_router_image_has_legacy_iptables_ipset_and_cni_plugins(tmp_path):
    ref = images.build_image("kube-router", progress=lambda _: None)  # the lab's cached layout
    members = {m.name: m for m in _layer_members(ref.layout)}
    for plugin in images.CNI_PLUGINS:
        assert members[f"opt/cni-plugins/{plugin}"].mode == 0o755
    for cmd in ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"):
        assert members[f"usr/sbin/{cmd}"].linkname == "xtables-legacy-multi"
    root = _extract(ref.layout, tmp_path / "rootfs")
    # a private network namespace: the rules land nowhere near the host's tables
    script = (
        "iptables --version && iptables -A INPUT -m conntrack --ctstate INVALID -j DROP && iptables-save -t filter"
        " && ipset create probe hash:ip && ipset list -n && ip -br link && kube-router --version"
    )
    argv = ["unshare", "--net", "chroot", str(root), "/bin/sh", "-c", script]
    out = subprocess.run(argv, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(legacy)" in out.stdout
    assert "--ctstate INVALID -j DROP" in out.stdout
    assert "probe" in out.stdout
    assert f"version {images.KUBE_ROUTER_VERSION}" in out.stderr  # kube-router --version writes to stderr


@_cached(COREDNS_BIN, "coredns")
def test_coredns_image_carries_the_pinned_version():
    ref = images.build_image("coredns", progress=lambda _: None)  # the lab's cached layout
    assert ref.ref == "registry.cnilab.local:5000/coredns/coredns:v1.12.4"
    assert "coredns" in {m.name for m in _layer_members(ref.layout)}
    out = subprocess.run([str(COREDNS_BIN), "-version"], capture_output=True, text=True, check=True)
    assert "CoreDNS-1.12.4" in out.stdout


@_cached(AGNHOST_BIN, "agnhost (lab Kubernetes build)")
def test_agnhost_image_is_tagged_with_agnhost_version():
    ref = images.build_image("agnhost", progress=lambda _: None)  # the lab's cached layout
    assert ref.tag == images.agnhost_version() and ref.tag[0].isdigit()
    config = json.loads(_blob(ref.layout, _manifest(ref.layout)["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/agnhost"] and config["config"]["Cmd"] == ["pause"]


# --- Go builds: cache hits and failures (a stub `go` so nothing is compiled) --------------------


def _stub_go(tmp_path: Path, monkeypatch, script: str) -> Path:
    bindir = tmp_path / "stub-bin"
    bindir.mkdir()
    (bindir / "go").write_text("#!/bin/sh\n" + script)
    (bindir / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return bindir


def test_go_binary_is_built_once_per_version(tmp_path, monkeypatch):
    # the stub "builds" by writing the binary go install would write into $GOBIN
    _stub_go(tmp_path, monkeypatch, 'echo "$@" >> "$XDG_CACHE_HOME/calls"; printf bin > "$GOBIN/kube-router"\n')
    lines: list[str] = []
    first = images.go_binary("kube-router", "example.org/m/cmd/kube-router", "v1.2.3", progress=lines.append)
    assert first == tmp_path / "cache/cni-runbook/build/kube-router-v1.2.3/bin/kube-router"
    assert first.read_text() == "bin"
    assert lines[0].startswith("[images] building kube-router v1.2.3 (go build")
    again = images.go_binary("kube-router", "example.org/m/cmd/kube-router", "v1.2.3", progress=lines.append)
    assert again == first and len(lines) == 2  # "building" + "built", nothing for the cache hit
    calls = (tmp_path / "cache/calls").read_text().splitlines()
    assert calls == ["install -trimpath -ldflags -s -w example.org/m/cmd/kube-router@v1.2.3"]


def test_failed_go_build_points_at_its_log(tmp_path, monkeypatch):
    _stub_go(tmp_path, monkeypatch, 'echo "go: module example.org/m@v9: 403 Forbidden" >&2; exit 1\n')
    with pytest.raises(images.ImageBuildError, match=r"(?s)failed \(exit 1\); full log: .*coredns-v9\.log.*403"):
        images.go_binary("coredns", "example.org/m", "v9", progress=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "cache/cni-runbook/build").iterdir()) == ["coredns-v9.log"]


def test_flannel_image_set_names_what_the_vendor_manifests_reference():
    assert images.images_for("kube-router") == images.IMAGE_NAMES
    assert set(images.images_for("flannel")) - set(images.IMAGE_NAMES) == set(images.FLANNEL_IMAGE_NAMES)
    assert images.image_ref("flannel-v0.28.4") == "registry.cnilab.local:5000/flannel-io/flannel:v0.28.4"
    assert images.image_ref("flannel-v0.28.10") == "registry.cnilab.local:5000/flannel-io/flannel:v0.28.10"
    # v0.28.4's kube-flannel.yml names -flannel1, v0.28.9's (v0.28.10's shape) -flannel3: both are pushed
    assert images.image_tag("flannel-cni-plugin") == "v1.9.1-flannel1"
    assert images.extra_tags("flannel-cni-plugin") == ("v1.9.1-flannel3",) and images.extra_tags("pause") == ()
    assert not images._has_install_conf("v0.28.4") and images._has_install_conf("v0.28.10")
    with pytest.raises(KeyError, match="unknown lab CNI 'calico'"):
        images.images_for("calico")


def test_go_binaries_with_replaced_dependencies_build_in_a_module_of_their_own(tmp_path, monkeypatch):
    # the stub records its working directory's go.mod and "builds" into the -o folder
    _stub_go(tmp_path, monkeypatch, 'cp go.mod "$XDG_CACHE_HOME/go.mod"; echo "$@" >> "$XDG_CACHE_HOME/calls"\n'
                                    'for last; do :; done; out=$(echo "$@" | sed "s/.* -o \\([^ ]*\\) .*/\\1/")\n'
                                    'printf f > "${out}flannel"; printf i > "${out}install_conf"\n')
    built = images.go_binaries("flannel", {"flanneld": "example.org/flannel", "install-conf": "example.org/flannel/cmd/install_conf"},
                               "v9.9.9", module="example.org/flannel", progress=lambda _: None,
                               replace={"example.org/sdk/vpc": "v1.3.75"})
    assert built["flanneld"].read_text() == "f" and built["install-conf"].read_text() == "i"
    gomod = (tmp_path / "cache" / "go.mod").read_text()
    assert "require example.org/flannel v9.9.9" in gomod
    assert "replace example.org/sdk/vpc => example.org/sdk/vpc v1.3.75" in gomod
    assert (tmp_path / "cache" / "calls").read_text().startswith("build -trimpath")
