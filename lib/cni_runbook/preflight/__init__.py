"""Stage 00 preflight: a read-only fact-gathering playbook and its evaluation per CNI profile."""

from cni_runbook.preflight.checks import (
    PROFILES,
    STATUS_COLORS,
    CheckRow,
    PreflightFailed,
    PreflightReport,
    Profile,
    check_names,
    evaluate,
)
from cni_runbook.preflight.run import PreflightRun, collect_reports, playbook_path, run_preflight

__all__ = [
    "PROFILES",
    "STATUS_COLORS",
    "CheckRow",
    "PreflightFailed",
    "PreflightReport",
    "PreflightRun",
    "Profile",
    "check_names",
    "collect_reports",
    "evaluate",
    "playbook_path",
    "run_preflight",
]
