"""Stages 00/01 without a cluster: which hosts, plan mode renders and touches nothing, validation
errors stop before Ansible starts, waivers are checked by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cni_runbook.lab.config import LabConfig
from cni_runbook.params import LAB_FILE, PROJECT_ROOT, ParamsError, load_params
from cni_runbook.provision import HostsError, private_dir, stage_hosts
from cni_runbook.stages.cluster import ClusterStage
from cni_runbook.stages.preflight import PreflightSetupError, PreflightStage, plan_preflight
from cni_runbook.state import StageFailed, open_stage

EXAMPLE = PROJECT_ROOT / "params" / "examples" / "kubespray-antrea.yaml"
DOUBLE = PROJECT_ROOT / "tests" / "doubles" / "kubespray"


@pytest.fixture(autouse=True)
def private_state(tmp_path, monkeypatch):
    monkeypatch.setenv("CNI_RUNBOOK_PRIVATE_HOME", str(tmp_path / "private"))


def test_lab_hosts_follow_the_instance_and_note_moved_addresses(tmp_path):
    params = load_params([str(LAB_FILE)]).params
    hosts = stage_hosts(params, LabConfig(index=7, state_dir=tmp_path / "lab7"))
    assert [(h.name, h.ansible_host, h.groups) for h in hosts.hosts] == [
        ("lab-cp1", "10.99.7.11", ("kube_control_plane", "kube_node", "etcd")),
        ("lab-w1", "10.99.7.12", ("kube_node",)), ("lab-w2", "10.99.7.13", ("kube_node",))]
    assert hosts.hosts[0].ansible_ssh_private_key_file == str(tmp_path / "lab7" / "ssh" / "id_ed25519")
    assert hosts.hosts[0].vars == {"ansible_python_interpreter": "/usr/bin/python3"}
    assert hosts.notes == ["the lab instance 7 has its own addresses (CNI_RUNBOOK_LAB_INDEX): "
                           "lab-cp1 10.99.0.11 -> 10.99.7.11, lab-w1 10.99.0.12 -> 10.99.7.12, lab-w2 10.99.0.13 -> 10.99.7.13"]
    assert stage_hosts(params, LabConfig(index=0, state_dir=tmp_path / "lab0")).notes == []


def test_lab_hosts_refuse_other_names_or_roles(tmp_path):
    cfg = LabConfig(index=7, state_dir=tmp_path)
    renamed = load_params([str(LAB_FILE)], ["cluster.nodes[2].name=lab-w3"]).params
    with pytest.raises(HostsError, match="cluster.nodes name lab-cp1, lab-w1, lab-w3 but the lab's nodes are"):
        stage_hosts(renamed, cfg)
    roles = load_params([str(LAB_FILE)], ["cluster.nodes[1].roles=[kube_node, etcd]", "cluster.nodes[2].roles=[kube_node, etcd]"]).params
    with pytest.raises(HostsError, match="lab-w1 has roles kube_node, etcd; the lab's lab-w1 is kube_node"):
        stage_hosts(roles, cfg)


def test_site_hosts_carry_the_ssh_settings():
    params = load_params([str(EXAMPLE)]).params
    hosts = stage_hosts(params)
    assert hosts.source == "cluster.nodes" and hosts.names == ["cp1", "cp2", "cp3", "w1", "w2"]
    h = hosts.hosts[0]
    assert (h.ansible_user, h.ansible_port, h.ip, h.access_ip) == ("ansible", 22, "192.0.2.11", None)
    assert h.ansible_ssh_private_key_file == str(Path("~/.ssh/id_ed25519").expanduser())


def test_unknown_waiver_is_refused_before_anything_runs():
    with pytest.raises(ParamsError, match=r"waivers\[0\] = 'module_openvswich': no preflight check has this name"):
        load_params([str(LAB_FILE)], ["cluster.preflight.waivers=[module_openvswich]"])  # params/checks.py
    # the stage's own check (a name of another profile's checks passes the params check)
    params = load_params([str(LAB_FILE)], ["cluster.preflight.waivers=[module_openvswich]"], static_checks=False).params
    with pytest.raises(PreflightSetupError, match=r"unknown check\(s\) module_openvswich for profile lab"):
        plan_preflight(params, LabConfig(index=7))
    antrea = load_params([str(LAB_FILE)], ["cluster.preflight.profile=antrea",
                                            "cluster.preflight.waivers=[module_openvswitch]"]).params
    plan = plan_preflight(antrea, LabConfig(index=7))
    assert plan.profile == "antrea" and plan.waivers == ["module_openvswitch"]
    assert plan.actions[-1]["step"] == "waive"


def test_preflight_plan_mode_writes_inventory_and_touches_nothing(tmp_path):
    ctx = open_stage("00_preflight", [str(EXAMPLE)], [], tmp_path / "run", True)
    stage = PreflightStage(ctx)
    plan = stage.run_plan()
    inventory = yaml.safe_load((ctx.artifacts / "inventory.yml").read_text())
    assert sorted(inventory["all"]["hosts"]) == ["cp1", "cp2", "cp3", "w1", "w2"]
    assert [a["step"] for a in plan.actions[:2]] == ["reach", "check"]
    assert "module_openvswitch" in plan.actions[1]["detail"]  # cni.profile antrea -> the antrea checks
    outcome = stage.run_apply(plan)
    assert outcome.status == "planned" and not (tmp_path / "run" / "ansible").exists()
    record = stage.finish(outcome)
    assert record["data"]["profile"] == "antrea"
    assert yaml.safe_load((ctx.artifacts / "plan.yaml").read_text())["actions"] == plan.actions


def test_preflight_with_a_bad_waiver_fails_the_stage_with_the_reason_in_plan_mode_too(tmp_path):
    with pytest.raises(ParamsError, match="'nope': no preflight check has this name"):  # params/checks.py
        open_stage("00_preflight", [str(LAB_FILE)], ["cluster.preflight.waivers=[nope]"], tmp_path / "run", False)
    # a check name of another profile passes the params check; the stage refuses it for its profile
    for mode in (True, False):
        ctx = open_stage("00_preflight", [str(LAB_FILE)], ["cluster.preflight.waivers=[module_openvswitch]"],
                         tmp_path / f"run{mode}", mode)
        stage = PreflightStage(ctx)
        plan = stage.run_plan()
        assert [f.key for f in plan.blocking] == ["cluster.preflight.waivers"]
        assert plan.blocking[0].where.startswith("--set cluster.preflight.waivers")
        outcome = stage.run_apply(plan)
        assert outcome.status == "failed" and "unknown check(s) module_openvswitch" in outcome.summary
        assert outcome.summary.startswith("the plan found 1 problem(s) that would stop the apply: "
                                          "cluster.preflight.waivers (--set cluster.preflight.waivers)")
        with pytest.raises(StageFailed):
            stage.finish(outcome)
        assert json.loads((ctx.artifacts / "result.json").read_text())["status"] == "failed"


def test_preflight_outcome_from_a_recorded_report(tmp_path):
    """The outcome logic without hosts: a report with a failure, a waiver and a warning."""
    from cni_runbook.preflight import PreflightReport
    from cni_runbook.preflight.checks import CheckRow

    ctx = open_stage("00_preflight", [str(LAB_FILE)], [], tmp_path / "run", False)
    stage = PreflightStage(ctx, LabConfig(index=7, state_dir=tmp_path / "lab7"))
    stage.run_plan()
    rows = [CheckRow("lab-cp1", "memory", "fail", "900 MB", ">= 1500 MB"),
            CheckRow("lab-w1", "systemd", "waived", "no", "yes", waived_by="systemd"),
            CheckRow("lab-w2", "time_sync", "warn", "none", "ntp")]
    report = PreflightReport(profile="lab", rows=rows, waivers=("systemd",), waived=[rows[1]])

    class Ansible:
        ok, status, rc, duration_s = True, "successful", 0, 1.0
        private_data_dir = ctx.run_dir / "ansible" / "x"

    class Run:
        pass

    stage.run_data = Run()
    stage.run_data.report, stage.run_data.ansible = report, Ansible()
    outcome = stage.outcome()
    assert outcome.status == "failed"
    assert outcome.summary.endswith("(waive a check by name in cluster.preflight.waivers to go on)")
    assert [(c.name, c.status.value, c.target) for c in outcome.checks] == [
        ("lab-cp1/memory", "failed", "lab-cp1"), ("lab-w1/systemd", "skipped", "lab-w1"),
        ("lab-w2/time_sync", "passed", "lab-w2")]
    assert list(stage.problems()["status"]) == ["fail", "waived", "warn"]
    assert outcome.data["waived"] == [{"node": "lab-w1", "check": "systemd", "seen": "no", "required": "yes"}]


def test_kubespray_plan_renders_validates_and_fails_on_validation_errors(tmp_path):
    ctx = open_stage("01_cluster_no_cni", [str(EXAMPLE)], [], tmp_path / "run", True)
    stage = ClusterStage(ctx)
    plan = stage.run_plan()
    assert [a["step"] for a in plan.actions] == ["render", "render", "validate", "run", "verify"]
    gv = yaml.safe_load((ctx.artifacts / "kubespray" / "group_vars" / "all" / "cni-runbook.yml").read_text())
    assert gv["kube_network_plugin"] == "none" and gv["kube_proxy_remove"] is True and gv["kubeconfig_localhost"] is True
    inventory = yaml.safe_load((ctx.artifacts / "kubespray" / "inventory.yml").read_text())
    assert sorted(inventory["all"]["children"]["etcd"]["hosts"]) == ["cp1", "cp2", "cp3"]
    rules = {f.rule: f for f in stage.findings}
    # /srv/kubespray does not exist here; 3 control-plane nodes with plugin none: the HA trap.
    assert rules["kubespray_dir"].severity == "error" and rules["trap_ha_no_cni"].severity == "warning"
    assert rules["trap_ha_no_cni"].key == "cluster.nodes[*].roles"
    assert stage.become  # user ansible: --become
    [blocking] = plan.blocking
    assert blocking.key == "kubespray.dir" and blocking.where.endswith("kubespray-antrea.yaml:" + blocking.where.rsplit(":", 1)[1])
    outcome = stage.run_apply(plan)
    assert outcome.status == "failed" and "kubespray.dir" in outcome.summary
    assert not (tmp_path / "run" / "ansible").exists() and not (tmp_path / "private").exists()


def test_kubespray_plan_passes_against_a_checkout(tmp_path):
    ctx = open_stage("01_cluster_no_cni", [str(EXAMPLE)], [f"kubespray.dir={DOUBLE}"], tmp_path / "run", True)
    stage = ClusterStage(ctx)
    plan = stage.run_plan()
    assert plan.blocking == [], plan.blocking
    outcome = stage.run_apply(plan)
    assert outcome.status == "planned" and outcome.summary.startswith("provisioner kubespray planned for 5 nodes")
    assert {c.name: c.status.value for c in outcome.checks} == {"kubespray_validation": "passed"}


def test_kubespray_validation_errors_stop_before_ansible(tmp_path):
    sets = ["kubespray.extra_vars={kubelet_rotate_server_certificates: 'yes'}", f"kubespray.dir={DOUBLE}"]
    ctx = open_stage("01_cluster_no_cni", [str(EXAMPLE)], sets, tmp_path / "run", False)
    stage = ClusterStage(ctx)
    plan = stage.run_plan()
    assert "kubespray.extra_vars.kubelet_rotate_server_certificates" in [f.key for f in plan.blocking]
    outcome = stage.run_apply(plan)
    assert stage.kubespray is None and outcome.status == "failed"
    assert "kubelet_rotate_server_certificates must be a real boolean" in outcome.summary
    assert not (tmp_path / "run" / "ansible").exists()


def test_existing_without_the_file_fails_clearly(tmp_path):
    ctx = open_stage("01_cluster_no_cni", [str(LAB_FILE)],
                     ["provisioner.kind=existing", f"provisioner.kubeconfig={tmp_path / 'nope.conf'}",
                      "cluster.nodes=[]"], tmp_path / "run", False)
    stage = ClusterStage(ctx)
    outcome = stage.run_apply(stage.run_plan())
    assert outcome.status == "failed"
    assert outcome.summary == f"provisioner.kubeconfig {tmp_path / 'nope.conf'} does not exist"
    assert [(c.name, c.status.value) for c in outcome.checks][:2] == [("provision", "failed"),
                                                                      ("api_reachable", "skipped")]
    assert ctx.get("kubeconfig") is None and ctx.target() is None


def test_cluster_outcome_from_a_recorded_verification(tmp_path):
    """The passed outcome logic without a cluster: a verification, a Target handed on."""
    from cni_runbook.checks import Check
    from cni_runbook.provision import Verification

    conf = tmp_path / "admin.conf"
    conf.write_text("apiVersion: v1\nkind: Config\n")
    ctx = open_stage("01_cluster_no_cni", [str(LAB_FILE)],
                     ["provisioner.kind=existing", f"provisioner.kubeconfig={conf}", "provisioner.context=ctx1"],
                     tmp_path / "run", False)
    stage = ClusterStage(ctx)
    stage.run_plan()
    stage.provision(say=lambda _m: None)
    assert ctx.target().kubeconfig == str(conf) and ctx.target().context == "ctx1"
    assert [h.name for h in ctx.target().hosts] == ["lab-cp1", "lab-w1", "lab-w2"]
    assert ctx.get("kubeconfig") == str(conf) and ctx.get("kube_context") == "ctx1"
    stage.verification = Verification([Check("api_reachable", "passed", "ok")], server="https://x", version="v1")
    outcome = stage.outcome()
    assert outcome.status == "passed" and outcome.summary.startswith("provisioner existing: cluster without CNI")
    assert outcome.data["server"] == "https://x" and outcome.data["kubeconfig"] == str(conf)


def test_private_dir_is_outside_the_run_folder_and_private(tmp_path):
    run = tmp_path / "outputs" / "20260101T000000Z-lab-abcd"
    path = private_dir(run)
    assert not str(path).startswith(str(run)) and path.stat().st_mode & 0o777 == 0o700
    assert path == private_dir(run) and path != private_dir(tmp_path / "other" / run.name)
    json.dumps(str(path))
