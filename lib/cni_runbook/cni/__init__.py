"""CNI sources, rendering and the install engine of stage 02, one job per module.

- :mod:`.sources`     obtain a manifest (URL, file) or Helm chart into the run's artifacts, with sha256
- :mod:`.manifests`   parse multi-document YAML, object identity, checks, apply order, object table
- :mod:`.antrea`      the Antrea profile: config keys, image pinning and mirroring
- :mod:`.generic`     generic (and lab) manifests: pass-through with optional image mirroring
- :mod:`.profiles`    profile name -> renderer
- :mod:`.diff`        upstream vs rendered: unified diff and a table of changed objects
- :mod:`.custom_cni`  Kubespray custom_cni group_vars and Jinja protection of manifests
- :mod:`.preparation` obtain + render + order: what stage 02 would apply (no cluster)
- :mod:`.result`      what an install did (:class:`InstallResult`, :class:`Step`, :class:`Timeouts`)
- :mod:`.engine`      apply the ordered objects in phases (server-side apply), roll back on failure
- :mod:`.waits`       rollouts, APIServices, nodes Ready, CoreDNS, CNI pod health
- :mod:`.antrea_health` Antrea post-install checks and ``antctl check installation``
- :mod:`.kubespray_route` the ``kubespray_custom_cni`` route (Kubespray's network step)
- :mod:`.rollback`    remove what a recorded run created, on request

The engine's names are importable from this package (``from cni_runbook import cni; cni.prepare``),
loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "preparation": ("Prepared", "prepare", "obtain_source", "source_manifest", "render", "RENDERED_NAME", "LAB_MANIFEST"),
    "result": ("InstallError", "InstallResult", "Step", "Timeouts", "RECORD_NAME", "DRY_RUN_RECORD_NAME",
               "TARGET_NAME", "timed_step"),
    "engine": ("install", "objects_for_cluster", "cluster_facts", "STEP_PHASES"),
    "waits": ("verify_installation", "apiservices_available", "pod_health_rows", "unhealthy_pods", "health_table",
              "HEALTH_COLUMNS", "COREDNS_SELECTOR"),
    "antrea_health": ("antrea_checks", "antrea_post_checks", "antctl_check_installation", "parse_antctl_output"),
    "rollback": ("write_target", "run_records", "rollback_record", "rollback_run"),
    "errors": ("CniError", "ManifestError", "SettingsError", "SourceError"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_WHERE)
