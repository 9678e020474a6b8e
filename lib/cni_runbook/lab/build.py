"""Build the lab's Kubernetes binaries from the k8s.io/kubernetes Go module.

The module in ``gobuild/`` requires k8s.io/kubernetes at the pinned version and
replaces every k8s.io staging module with the matching v0.x release (the upstream
go.mod points them at ./staging, which a module download does not have). The
binaries are the upstream main packages, unmodified, with the version stamped in
the way the upstream build does. Outputs are cached under the XDG cache folder,
keyed by version; a finished build is reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .config import K8S_VERSION, build_dir
from .sysutil import LabError, heartbeat

GOBUILD = Path(__file__).parent / "gobuild"
#: binary name -> Go main package
PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "agnhost": "k8s.io/kubernetes/test/images/agnhost",
    "etcd": "go.etcd.io/etcd/server/v3",
}


def _ldflags() -> str:
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={K8S_VERSION}", f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def missing_binaries(out: Path | None = None) -> list[str]:
    out = out or build_dir()
    return [name for name in PACKAGES if not (out / name).is_file()]


def build(progress: Callable[[str], None] = print, force: bool = False) -> Path:
    """Build (or reuse) every Kubernetes binary the lab runs; returns the bin folder."""
    out = build_dir()
    missing = list(PACKAGES) if force else missing_binaries(out)
    if not missing:
        progress(f"[build] Kubernetes {K8S_VERSION} binaries cached in {out}")
        return out
    if shutil.which("go") is None:
        raise LabError("the lab builds Kubernetes from source: install Go >= 1.25 (Debian package golang, or go.dev)")
    out.mkdir(parents=True, exist_ok=True)
    staging = out.parent / "staging"
    staging.mkdir(exist_ok=True)
    progress(f"[build] building {', '.join(missing)} for Kubernetes {K8S_VERSION} "
             "(first time on a machine: about 5 minutes on 2 idle cores, much longer on a busy machine; cached afterwards)")
    cmd = ["go", "build", "-trimpath", "-ldflags", _ldflags(), "-o", str(staging) + "/", *(PACKAGES[n] for n in missing)]
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false"}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=GOBUILD, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    downloads = 0
    with heartbeat(lambda m: progress(f"[build] {m}"), "compiling the Kubernetes binaries"):
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("go: downloading"):  # ~190 on a fresh machine: a line per 25
                downloads += 1
                if downloads == 1 or downloads % 25 == 0:
                    progress(f"[build] Go modules downloaded: {downloads} ({line.split('downloading', 1)[1].strip()})")
        rc = proc.wait()
    if downloads:
        progress(f"[build] {downloads} Go modules downloaded from the module proxy")
    if rc != 0:
        tail = "\n".join(lines[-30:])
        raise LabError(f"go build failed (exit {rc}) in {GOBUILD}:\n{tail}")
    for name in missing:
        produced = staging / Path(PACKAGES[name]).name
        if name == "etcd":  # go names go.etcd.io/etcd/server/v3 "server"
            produced = staging / "server"
        if not produced.exists():
            produced = staging / name
        produced.replace(out / name)
    progress(f"[build] done in {time.monotonic() - started:.0f}s -> {out}")
    return out


if __name__ == "__main__":
    try:
        build(force="--force" in sys.argv)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
