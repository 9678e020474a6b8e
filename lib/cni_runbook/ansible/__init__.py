"""ansible-runner wrapper: one fresh private_data_dir per run, live progress, redacted artifacts."""

from cni_runbook.ansible.runner import (
    AnsibleJob,
    AnsibleResult,
    Failure,
    Progress,
    TaskResult,
    start_playbook,
    run_playbook,
    tqdm_listener,
)

__all__ = [
    "AnsibleJob",
    "AnsibleResult",
    "Failure",
    "Progress",
    "TaskResult",
    "start_playbook",
    "run_playbook",
    "tqdm_listener",
]
