"""The ansible-runner wrapper, run for real (local connection and real SSH on 127.0.0.1)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from cni_runbook.ansible import Progress, run_playbook, start_playbook, tqdm_listener
from cni_runbook.ansible.runner import AnsibleRunError, failure_message
from conftest_ssh import loopback_ssh  # noqa: F401  (fixture)

SECRET = "s3cr3t-token-value"

PLAYBOOK = """
- name: wrapper test
  hosts: all
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.command: echo hello {{ greeting_suffix | default('') }}
      changed_when: false
    - name: change something
      ansible.builtin.command: "true"
      changed_when: true
    - name: fail on purpose
      ansible.builtin.command: sh -c 'echo "token={{ token }}" >&2; exit 3'
      when: should_fail | default(false) | bool
    - name: tolerated failure
      ansible.builtin.command: "false"
      changed_when: false
      ignore_errors: true
"""

SLOW_PLAYBOOK = """
- name: slow
  hosts: all
  gather_facts: false
  tasks:
    - name: sleep
      ansible.builtin.command: sleep 30
"""


def local_inventory() -> dict:
    return {"all": {"hosts": {"ctl": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "site.yml").write_text(PLAYBOOK)
    (root / "slow.yml").write_text(SLOW_PLAYBOOK)
    return root


def redact(text: str) -> str:
    return text.replace(SECRET, "***")


def test_successful_run_counts_and_recap(tmp_path: Path, project: Path) -> None:
    seen: list[str] = []
    progress = Progress()
    progress.add_listener(lambda p: seen.append(p.status))
    result = run_playbook(
        "site.yml", project_dir=project, run_dir=tmp_path / "run", inventory=local_inventory(),
        progress=progress, capture=["say hello"], extravars={"greeting_suffix": "world"},
    )
    assert result.ok, result.summary()
    assert result.status == "successful" and result.rc == 0
    recap = result.recap()
    assert recap.loc["ctl"].to_dict() == {
        "ok": 3, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 1, "rescued": 0, "ignored": 1,
    }
    assert result.failed_tasks().empty
    assert result.results("say hello")["ctl"].res["stdout"] == "hello world"
    assert progress.tasks == ["say hello", "change something", "fail on purpose", "tolerated failure"]
    assert seen[-1] == "successful" and "running" in seen
    assert result.private_data_dir.parent == tmp_path / "run" / "ansible"
    assert (result.artifact_dir / "stdout").is_file()


def test_each_run_gets_a_fresh_private_data_dir(tmp_path: Path, project: Path) -> None:
    first = run_playbook("site.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory(),
                         extravars={"greeting_suffix": "first"}, capture=["say hello"])
    second = run_playbook("site.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory(),
                          capture=["say hello"])
    assert first.private_data_dir != second.private_data_dir
    # The env/ reuse trap: the first run's extravars must not leak into the second run.
    assert second.results("say hello")["ctl"].res["stdout"] == "hello"
    assert not (second.private_data_dir / "env" / "extravars").exists()


def test_failure_is_reported_and_secrets_are_redacted(tmp_path: Path, project: Path) -> None:
    result = run_playbook(
        "site.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory(),
        extravars={"should_fail": True, "token": SECRET}, redact=redact,
    )
    assert not result.ok and result.status == "failed"
    failures = result.failed_tasks()
    assert failures[["host", "task", "kind"]].values.tolist() == [["ctl", "fail on purpose", "failed"]]
    assert "token=***" in failures.loc[0, "message"]
    assert result.recap().loc["ctl", "failed"] == 1
    leaked = [p for p in result.private_data_dir.rglob("*") if p.is_file() and SECRET in p.read_text(errors="ignore")]
    assert leaked == []
    events = [json.loads(p.read_text()) for p in (result.artifact_dir / "job_events").glob("*.json")]
    assert any("token=***" in e.get("stdout", "") for e in events)
    with pytest.raises(AnsibleRunError, match=r"failed ctl: fail on purpose: .*rc=3|failed ctl: fail on purpose"):
        result.raise_for_status()


def test_timeout_and_cancel(tmp_path: Path, project: Path) -> None:
    timed_out = run_playbook("slow.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory(), timeout=2)
    assert timed_out.status == "timeout" and not timed_out.ok

    job = start_playbook("slow.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory())
    threading.Timer(1.5, job.cancel).start()
    canceled = job.wait(timeout=60)
    assert canceled.status == "canceled"
    assert canceled.duration_s < 20

    polls = iter(range(1000))
    by_callback = run_playbook("slow.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory(),
                               cancel_callback=lambda: next(polls) >= 2, poll_interval_s=0.5)
    assert by_callback.status == "canceled"
    assert by_callback.duration_s < 20


def test_tqdm_listener_follows_tasks(tmp_path: Path, project: Path) -> None:
    from tqdm import tqdm

    with tqdm(total=None, unit="task", disable=False, file=open("/dev/null", "w")) as bar:
        progress = Progress()
        progress.add_listener(tqdm_listener(bar))
        run_playbook("site.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory(), progress=progress)
        assert bar.n == 4
        assert bar.postfix and "changed=1" in bar.postfix


def test_missing_playbook_and_inventory_are_clear(tmp_path: Path, project: Path) -> None:
    with pytest.raises(FileNotFoundError, match="playbook nope.yml not found"):
        start_playbook("nope.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory())
    with pytest.raises(FileNotFoundError, match="inventory .* does not exist"):
        start_playbook("site.yml", project_dir=project, run_dir=tmp_path, inventory=tmp_path / "missing.yml")


def test_failure_message_prefers_msg_then_stderr() -> None:
    assert failure_message({"msg": "non-zero return code", "stderr": "boom", "rc": 2}) == "non-zero return code\nboom"
    assert failure_message({"rc": 4}) == "rc=4"
    assert failure_message({"results": [{"item": "a", "failed": True, "msg": "bad"}]}) == "item 'a': bad"


def test_real_ssh_run_and_unreachable_host(tmp_path: Path, project: Path, loopback_ssh) -> None:  # noqa: F811
    inventory = {
        "all": {
            "hosts": {
                "node1": loopback_ssh.host_vars(),
                # Same server, a port nothing listens on: must be reported as unreachable.
                "ghost": {**loopback_ssh.host_vars(), "ansible_port": 1},
            }
        }
    }
    result = run_playbook("site.yml", project_dir=project, run_dir=tmp_path, inventory=inventory,
                          envvars=loopback_ssh.envvars, capture=["say hello"])
    assert result.status == "failed"
    recap = result.recap()
    assert recap.loc["node1", "ok"] == 3 and recap.loc["node1", "failed"] == 0
    assert recap.loc["ghost", "unreachable"] == 1
    assert result.results("say hello")["node1"].res["stdout"] == "hello"
    [unreachable] = result.failures
    assert unreachable.host == "ghost" and unreachable.kind == "unreachable"
    assert "Connection refused" in unreachable.message or "port 1" in unreachable.message


def test_the_operators_environment_is_not_recorded(tmp_path: Path, project: Path, monkeypatch) -> None:
    """Only allow-listed variables reach ansible-playbook and artifacts/<ident>/command."""
    canary = "canary-aws-secret-0xDEADBEEF-31337"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    monkeypatch.setenv("UNRELATED_SETTING", "canary-unrelated-value")
    result = run_playbook("site.yml", project_dir=project, run_dir=tmp_path, inventory=local_inventory(),
                          envvars={"ANSIBLE_PIPELINING": "True", "RUNBOOK_OWN": "kept"})
    assert result.ok, result.summary()
    command = json.loads((result.artifact_dir / "command").read_text())
    assert "AWS_SECRET_ACCESS_KEY" not in command["env"] and "UNRELATED_SETTING" not in command["env"]
    assert command["env"]["RUNBOOK_OWN"] == "kept" and "PATH" in command["env"]
    leaked = [p for p in result.private_data_dir.rglob("*") if p.is_file()
              and (canary in p.read_text(errors="ignore") or "canary-unrelated" in p.read_text(errors="ignore"))]
    assert leaked == []
