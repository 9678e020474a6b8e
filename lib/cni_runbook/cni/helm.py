"""The Helm route: a chart becomes manifests with ``helm template``, applied by the same engine.

The chart archive is obtained (and hashed into the run's artifacts) by
:mod:`cni_runbook.cni.sources`; this module only runs the ``helm`` client, which the Helm route
needs and nothing else does:

- :func:`template`: ``helm template`` -> a :class:`~cni_runbook.cni.manifests.Manifest`
  (``--include-crds``, the release namespace, values files in order), so the rendered objects go
  through the same ordering, server-side apply, record and rollback as any manifest;
- :func:`upgrade_install`: ``helm upgrade --install --wait --atomic`` (what Kubespray's
  custom_cni Helm mode does), for operators who want a Helm release on the cluster.

Every call has a timeout; errors name the chart and quote helm's own message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError
from .manifests import Manifest

DEFAULT_TIMEOUT_S = 120.0


def helm_binary(helm: str | None = None) -> str:
    """The helm client to use: ``helm``, else ``$CNI_RUNBOOK_HELM``, else ``helm`` on PATH."""
    wanted = helm or os.environ.get("CNI_RUNBOOK_HELM") or "helm"
    found = shutil.which(wanted)
    if found is None:
        raise SourceError(f"the Helm route needs the helm client: {wanted!r} is not on PATH "
                          "(install helm, or set CNI_RUNBOOK_HELM to its path)")
    return found


def _run(command: list[str], *, what: str, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"{what}: helm took more than {timeout:g} s") from exc
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}")
        raise SourceError(f"{what}: helm {command[1]} failed: {message}")
    return done.stdout


def template(
    chart: str | Path,
    *,
    release: str,
    namespace: str,
    values_files: Sequence[str | Path] = (),
    kube_version: str | None = None,
    helm: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Manifest:
    """``helm template RELEASE CHART --namespace NS --include-crds [-f values]...`` as a Manifest.

    ``chart`` is a chart archive or directory; ``values_files`` are applied in order (later
    wins). The manifest's ``source`` names the chart, so parse errors point at it.
    """
    chart = Path(chart)
    if not chart.exists():
        raise SourceError(f"{chart}: no such chart archive or directory")
    command = [helm_binary(helm), "template", release, str(chart), "--namespace", namespace, "--include-crds"]
    for values in values_files:
        if not Path(values).is_file():
            raise SourceError(f"{values}: values file not found (chart {chart.name})")
        command += ["--values", str(values)]
    if kube_version:
        command += ["--kube-version", kube_version]
    text = _run(command, what=f"chart {chart}", timeout=timeout)
    if not text.strip():
        raise SourceError(f"chart {chart}: helm template produced no objects")
    return Manifest(text, f"helm template {release} {chart.name}")


@dataclass(frozen=True)
class HelmRelease:
    """The outcome of :func:`upgrade_install`: release, namespace, chart and helm's output."""

    release: str
    namespace: str
    chart: str
    output: str


def upgrade_install(
    chart: str | Path,
    *,
    release: str,
    namespace: str,
    kubeconfig: str | Path,
    values_files: Sequence[str | Path] = (),
    version: str | None = None,
    create_namespace: bool = False,
    wait_timeout_s: int = 300,
    helm: str | None = None,
) -> HelmRelease:
    """``helm upgrade --install --wait --atomic`` (Kubespray custom_cni's Helm mode, by hand).

    The kubeconfig is passed by path (``--kubeconfig``); nothing of it is printed.
    """
    command = [helm_binary(helm), "upgrade", release, str(chart), "--install", "--namespace", namespace,
               "--kubeconfig", str(kubeconfig), "--wait", "--atomic", "--timeout", f"{wait_timeout_s}s"]
    if create_namespace:
        command.append("--create-namespace")
    if version:
        command += ["--version", version]
    for values in values_files:
        command += ["--values", str(values)]
    out = _run(command, what=f"helm release {namespace}/{release} (chart {chart})", timeout=wait_timeout_s + 60)
    return HelmRelease(release, namespace, str(chart), out)
