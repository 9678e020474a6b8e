"""Route ``kubespray_custom_cni``: Kubespray's custom_cni role applies the rendered CNI.

1. :func:`write_custom_cni` writes the rendered manifest, protected from Kubespray's Jinja
   templating (:func:`~cni_runbook.cni.custom_cni.protect_jinja`), into the inventory folder and
   the ``custom_cni`` group_vars next to the other group_vars (``group_vars/all/custom_cni.yml``:
   ``kube_network_plugin: custom_cni`` + ``custom_cni_manifests``). :func:`write_custom_cni_chart`
   writes the Helm mode's ``custom_cni_chart_*`` variables instead.
2. :func:`run_network_step` runs Kubespray's network step (``cluster.yml --tags network`` by
   default) through :func:`cni_runbook.kubespray.run_kubespray` (ansible-runner, fresh private
   data dir, redaction).
3. :func:`install_via_kubespray` wraps both with the engine's bookkeeping: it notes which of the
   objects exist before, runs the step, records what the run created/configured/left unchanged
   in ``applied.jsonl`` (so ``rollback`` works as for the direct route), then runs the same
   waits and health table as the direct route (:func:`cni_runbook.cni.waits.verify_installation`).
   Kubespray's role itself does not wait for the CNI pods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .custom_cni import chart_vars, group_vars_yaml, manifest_vars, write_manifest
from .errors import CniError
from .result import RECORD_NAME, InstallError, InstallResult, Progress, Step, Timeouts, roll_back_created
from .waits import verify_installation
from .manifests import Manifest, ManifestObject

GROUP_VARS_FILE = Path("group_vars") / "all" / "custom_cni.yml"
MANIFEST_DIR = "custom_cni"
DEFAULT_FILENAME = "cni-runbook-cni.yml"


@dataclass(frozen=True)
class CustomCniFiles:
    """What :func:`write_custom_cni` wrote: the protected manifest (manifest mode), the group_vars file and its variables."""

    group_vars: Path
    variables: Mapping[str, Any]
    manifest: Path | None = None


def _write_group_vars(inventory_dir: Path, variables: Mapping[str, Any]) -> Path:
    path = Path(inventory_dir) / GROUP_VARS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(group_vars_yaml(variables), encoding="utf-8")
    return path


def write_custom_cni(manifest: Manifest, inventory_dir: str | Path, *, filename: str = DEFAULT_FILENAME) -> CustomCniFiles:
    """Manifest mode: ``<inventory_dir>/custom_cni/<filename>`` (Jinja-protected) and its group_vars.

    ``filename`` is also the name Kubespray gives the file in ``kube_config_dir`` on the first
    control-plane node.
    """
    inventory_dir = Path(inventory_dir)
    path = write_manifest(manifest, inventory_dir / MANIFEST_DIR, filename)
    variables = manifest_vars([path])
    return CustomCniFiles(_write_group_vars(inventory_dir, variables), variables, path)


def write_custom_cni_chart(inventory_dir: str | Path, **chart: Any) -> CustomCniFiles:
    """Helm mode: the ``custom_cni_chart_*`` group_vars (keyword arguments as :func:`~cni_runbook.cni.custom_cni.chart_vars`)."""
    variables = chart_vars(**chart)
    return CustomCniFiles(_write_group_vars(Path(inventory_dir), variables), variables, None)


def next_helm_revision(kube, release: str, namespace: str) -> int:
    """The revision ``helm upgrade --install`` would record next for ``release`` (1 for a new one),
    read from helm's release Secrets (labels ``owner=helm``, ``name``, ``version``)."""
    found = kube.core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
    return max((int((s.metadata.labels or {}).get("version", 0)) for s in found), default=0) + 1


def run_network_step(
    kubespray_dir: str | Path,
    inventory: str | Path,
    run_dir: str | Path,
    *,
    playbook: str = "cluster.yml",
    tags: str | None = "network",
    extravars_files: Sequence[str | Path] = (),
    extravars: Mapping[str, Any] | None = None,
    envvars: Mapping[str, str] | None = None,
    become: bool = True,
    timeout: int | None = 3600,
    idle_timeout: int | None = 900,
    redact=None,
):
    """Run Kubespray's network step; returns the :class:`~cni_runbook.kubespray.KubesprayRun` (no kubeconfig fetch)."""
    from ..kubespray import run_kubespray

    return run_kubespray(kubespray_dir, inventory, run_dir, playbook=playbook, tags=tags,
                         extravars_files=extravars_files, extravars=extravars, envvars=envvars, become=become,
                         timeout=timeout, idle_timeout=idle_timeout, redact=redact, fetch_kubeconfig=False)


def _versions(kube, objects: Sequence[ManifestObject]) -> dict[int, str | None]:
    """object index -> resourceVersion on the cluster (None: absent)."""
    from ..kube import KubeError

    out = {}
    for i, o in enumerate(objects):
        try:
            live = kube.get(o.ref.api_version, o.ref.kind, o.ref.name, o.ref.namespace if o.namespaced else None)
        except KubeError:  # a kind not served yet (its CRD is not installed): the object is absent
            live = None
        out[i] = (live or {}).get("metadata", {}).get("resourceVersion")
    return out


def record_changes(kube, objects: Sequence[ManifestObject], before: Mapping[int, str | None], record: Path) -> list:
    """Append to ``record`` what happened to each object since ``before`` (created, configured, unchanged).

    Objects still absent are not recorded (Kubespray did not get to them). Returns the
    :class:`~cni_runbook.kube.apply.Applied` entries.
    """
    from ..kube.apply import Applied

    after = _versions(kube, objects)
    entries = []
    for i, o in enumerate(objects):
        if after[i] is None:
            continue
        action = "created" if before[i] is None else "unchanged" if before[i] == after[i] else "configured"
        entries.append(Applied(o.ref.api_version, o.ref.kind, o.ref.namespace if o.namespaced else None, o.ref.name,
                               action, "applied by Kubespray custom_cni"))
    with open(record, "a", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(asdict(entry)) + "\n")
    return entries


def install_via_kubespray(
    kube,
    objects: Sequence[ManifestObject],
    *,
    inventory: str | Path,
    record_dir: str | Path,
    job: Any = None,
    kubespray_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    playbook: str = "cluster.yml",
    tags: str | None = "network",
    extravars_files: Sequence[str | Path] = (),
    extravars: Mapping[str, Any] | None = None,
    envvars: Mapping[str, str] | None = None,
    become: bool = True,
    timeouts: Timeouts = Timeouts(),
    expected_nodes: int | None = None,
    rollback_on_failure: bool = True,
    redact=None,
    progress: Progress | None = None,
) -> tuple[Any, InstallResult]:
    """Run the network step for ``objects`` (already written by :func:`write_custom_cni`), record, wait.

    ``job`` - stage 02's :class:`~cni_runbook.provision.kubespray_job.KubesprayJob` (the same
    Kubespray job as stage 01: Ansible environment, become and become password); without it the
    step runs with ``kubespray_dir``/``run_dir`` and the keyword arguments as given.
    Returns (KubesprayRun, InstallResult). A failed Kubespray run or wait raises
    :class:`~cni_runbook.cni.result.InstallError` after rolling back what the run created
    (when ``rollback_on_failure``).
    """

    say = progress or (lambda _m: None)
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    result = InstallResult(dry_run=False, record=record_dir / RECORD_NAME)
    before = _versions(kube, objects)
    say(f"Kubespray network step ({playbook}" + (f" --tags {tags}" if tags else "") + f") for {len(objects)} objects")
    run = None
    try:
        if job is not None:
            run = job.run(Path(inventory), playbook=playbook, tags=tags, extravars=extravars, progress=None,
                          timeout=3600, idle_timeout=900, fetch_kubeconfig=False)
        else:
            run = run_network_step(kubespray_dir, inventory, run_dir, playbook=playbook, tags=tags,
                                   extravars_files=extravars_files, extravars=extravars, envvars=envvars, become=become,
                                   redact=redact)
        result.applied = record_changes(kube, objects, before, result.record)
        if not run.ansible.ok:
            failed = run.ansible.failed_tasks()
            detail = failed.to_string(index=False) if not failed.empty else run.ansible.summary()
            result.steps.append(Step("Kubespray network step", "failed", run.ansible.summary()))
            raise CniError(f"Kubespray's network step failed ({run.ansible.summary()}):\n{detail}")
        result.steps.append(Step("Kubespray network step", "passed", run.ansible.summary()))
        verify_installation(kube, objects, result, timeouts=timeouts, expected_nodes=expected_nodes, progress=say)
    except Exception as exc:  # noqa: BLE001 - roll back whatever the run created, then report
        if not result.applied and before:
            result.applied = record_changes(kube, objects, before, result.record)
        message = f"CNI install through Kubespray custom_cni failed: {exc}"
        if rollback_on_failure:
            message += roll_back_created(kube, result, timeouts.rollback_s, say)
        raise InstallError(message, result) from exc
    return run, result


__all__ = [
    "CustomCniFiles",
    "install_via_kubespray",
    "next_helm_revision",
    "record_changes",
    "run_network_step",
    "write_custom_cni",
    "write_custom_cni_chart",
]
