"""Stages 00 and 01 for real against the lab: ansible-runner over SSH to the lab's hosts,
Kubespray's contract double, the verification against the lab cluster, and both notebooks
through the runner (papermill) with params/lab.yaml.

Order matters (one lab per session): the hosts-only phase first (preflight needs the Kubernetes
ports free), then the cluster. The module leaves the lab as a fresh cluster without a CNI, which
is what ``lab.fresh()`` gives the next module (the last tests run the runbook again on the lab an
earlier run left up, then bring it back to that state).
"""

from __future__ import annotations

import json

import pytest
import yaml

from cni_runbook import cli, display
from cni_runbook.lab import cluster
from cni_runbook.params import LAB_FILE, PROJECT_ROOT
from cni_runbook.preflight import check_names
from cni_runbook.stages.cluster import ClusterStage
from cni_runbook.stages.preflight import PreflightStage
from cni_runbook.state import StageFailed, open_stage

pytestmark = pytest.mark.lab
DOUBLE = PROJECT_ROOT / "tests" / "doubles" / "kubespray"


@pytest.fixture(autouse=True)
def private_state(tmp_path, monkeypatch):
    monkeypatch.setenv("CNI_RUNBOOK_PRIVATE_HOME", str(tmp_path / "private"))


@pytest.fixture(scope="module")
def hosts(lab):
    """The lab's bare hosts (namespaces + sshd), nothing of Kubernetes running."""
    if cluster.phase(lab.cfg) != "down":
        cluster.down(lab.cfg, progress=print)
    cluster.up(lab.cfg, hosts_only=True, progress=print)
    return lab.cfg


def preflight(cfg, tmp_path, sets=()):
    ctx = open_stage("00_preflight", [str(LAB_FILE)], list(sets), tmp_path / "run", False)
    stage = PreflightStage(ctx, cfg)
    stage.outcome_ = stage.run_apply(stage.run_plan())
    if getattr(ctx, "lock", None) is not None:  # a stage run outside the runner: give its cluster lock up
        ctx.lock.release()
    return ctx, stage


def test_lab_profile_passes_on_the_bare_hosts(hosts, tmp_path):
    ctx, stage = preflight(hosts, tmp_path)
    assert cluster.phase(hosts) == "hosts"
    report = stage.report
    assert report.profile == "lab" and report.ok, report.summary()
    matrix = report.matrix()
    assert list(matrix.index) == [n.name for n in hosts.nodes]
    assert list(matrix.columns) == check_names("lab")
    assert set(matrix.to_numpy().ravel()) <= {"pass", "warn", "n/a"}
    assert set(stage.problems()["check"]) <= {"time_sync"}  # no NTP daemon in the lab's namespaces
    for port in ("port_6443_tcp", "port_2379-2380_tcp", "port_10250_tcp"):
        assert matrix.loc["lab-cp1", port] == "pass"
    assert matrix.loc["lab-w1", "port_6443_tcp"] == "n/a"  # only control-plane nodes need 6443 free
    rows = {(r.node, r.check): r for r in report.rows}
    assert rows[("lab-w2", "ip_local")].seen == f"{hosts.node('lab-w2').ip} is a local address"
    assert rows[("lab-w2", "hostname")].seen == "lab-w2 (system: lab-w2)"
    assert stage.heatmap() is not None and (ctx.artifacts / "heatmap.png").stat().st_size > 1000
    record = stage.finish(stage.outcome_)
    assert record["status"] == "passed" and len(record["checks"]) == len(report.rows)
    assert record["data"]["host_source"] == f"lab instance {hosts.index} ({hosts.name}, {hosts.network})"
    assert (ctx.run_dir / record["data"]["ansible"]["artifacts"] / "artifacts" / "run" / "job_events").is_dir()


def test_antrea_profile_fails_on_openvswitch_and_a_waiver_is_recorded(hosts, tmp_path):
    ctx, stage = preflight(hosts, tmp_path / "a", ["cluster.preflight.profile=antrea"])
    failing = {(r.node, r.check) for r in stage.report.failures}
    # this kernel has no openvswitch; the lab's namespaces run no systemd
    assert failing == {(n.name, c) for n in hosts.nodes for c in ("module_openvswitch", "systemd")}
    [row] = [r for r in stage.report.rows if (r.node, r.check) == ("lab-w1", "module_openvswitch")]
    assert row.seen == "not available (CONFIG_OPENVSWITCH is not set)"
    assert stage.outcome_.status == "failed" and "waive a check by name" in stage.outcome_.summary
    with pytest.raises(StageFailed):
        stage.finish(stage.outcome_)

    ctx, stage = preflight(hosts, tmp_path / "b", ["cluster.preflight.profile=antrea",
                                            "cluster.preflight.waivers=[module_openvswitch, systemd]"])
    assert stage.outcome_.status == "passed", stage.outcome_.summary
    record = stage.finish(stage.outcome_)
    result = json.loads((ctx.artifacts / "result.json").read_text())
    assert result == json.loads(json.dumps(record))
    assert result["data"]["waivers"] == ["module_openvswitch", "systemd"]
    assert {(w["node"], w["check"]) for w in result["data"]["waived"]} == failing
    skipped = {c["name"]: c["message"] for c in result["checks"] if c["status"] == "skipped"}
    assert skipped["lab-cp1/module_openvswitch"].endswith("(waived by cluster.preflight.waivers: module_openvswitch)")
    assert "skipped" in (ctx.artifacts / "junit.xml").read_text()


@pytest.fixture(scope="module")
def lab_up(hosts):
    """The lab cluster without a CNI, started from the bare hosts."""
    cluster.up(hosts, progress=print)
    return hosts


def kubespray_sets(cfg) -> list[str]:
    nodes = [{"name": n.name, "roles": ["kube_control_plane", "etcd"] if n.control_plane else ["kube_node"],
              "ansible_host": str(n.ip), "ip": str(n.ip), "access_ip": str(n.ip)} for n in cfg.nodes]
    extra = {"ansible_python_interpreter": "/usr/bin/python3", "kubespray_double_admin_conf": str(cfg.admin_kubeconfig)}
    return ["provisioner.kind=kubespray", f"cluster.nodes={json.dumps(nodes)}", f"cluster.ssh.key_file={cfg.ssh_key}",
            f"kubespray.dir={DOUBLE}", f"kubespray.extra_vars={json.dumps(extra)}"]


def secrets_of(kubeconfig) -> list[str]:
    conf = yaml.safe_load(kubeconfig.read_text())
    return [v for u in conf["users"] for k, v in u["user"].items() if k in ("client-key-data", "token")]


def test_kubespray_through_the_contract_double_then_verified(lab_up, tmp_path):
    ctx = open_stage("01_cluster_no_cni", [str(LAB_FILE)], kubespray_sets(lab_up), tmp_path / "run", False)
    stage = ClusterStage(ctx, lab_up)
    plan = stage.run_plan()
    assert stage.findings == [] and plan.findings == [] and not stage.become  # root: no --become (no sudo here)
    with display.live_ansible("cluster.yml") as live:
        kubeconfig = stage.provision(progress=live.progress)
    assert stage.kubespray.ok, stage.kubespray.ansible.summary() + stage.failed_tasks().to_string()
    recap = stage.recap()
    assert list(recap.index) == ["lab-cp1", "lab-w1", "lab-w2"]
    assert recap["failed"].sum() == 0 and recap["unreachable"].sum() == 0 and recap.loc["lab-cp1", "changed"] == 2
    assert stage.failed_tasks().empty

    # the kubeconfig: fetched outside the run folder, mode 0600, handed on by path
    assert ctx.get("kubeconfig") == str(kubeconfig) and not str(kubeconfig).startswith(str(ctx.run_dir))
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
    assert kubeconfig.read_bytes() == lab_up.admin_kubeconfig.read_bytes()

    v = stage.verify(say=print)
    assert v.ok, v.summary()
    assert v.server == lab_up.api_server and v.version == "v1.35.4"
    nodes = v.nodes.set_index("name")
    assert list(nodes.index) == ["lab-cp1", "lab-w1", "lab-w2"]
    assert set(nodes["ready"]) == {"False"} and nodes["ready_message"].str.contains("cni plugin not initialized").all()
    assert nodes.loc["lab-cp1", "roles"] == "control-plane" and set(nodes["kubelet"]) == {"v1.35.4"}
    assert nodes["podCIDR"].str.startswith("10.233.").all()
    record = stage.finish(stage.outcome())
    assert record["status"] == "passed"
    assert ctx.target().kubeconfig == str(kubeconfig) and ctx.target().provisioner == "kubespray"
    assert [c["name"] for c in record["checks"]] == ["kubespray_validation", "kubespray_cluster_yml", "api_reachable",
                                                     "nodes_registered", "pod_cidrs", "nodes_not_ready_no_cni",
                                                     "coredns_pending"]
    # ansible-runner's artifacts are in the run folder, and no credential is anywhere in it
    assert (ctx.run_dir / record["data"]["kubespray"]["artifacts"] / "artifacts" / "run" / "job_events").is_dir()
    values = secrets_of(kubeconfig)
    assert values
    for path in ctx.run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            assert not any(v in text for v in values), path


def test_kubespray_failure_shows_the_failed_task_and_keeps_going_to_a_result(lab_up, tmp_path):
    sets = [s for s in kubespray_sets(lab_up) if not s.startswith("kubespray.extra_vars")]
    sets.append("kubespray.extra_vars={ansible_python_interpreter: /usr/bin/python3}")  # no admin.conf to hand over
    ctx = open_stage("01_cluster_no_cni", [str(LAB_FILE)], sets, tmp_path / "run", False)
    stage = ClusterStage(ctx, lab_up)
    outcome = stage.run_apply(stage.run_plan())
    assert ctx.get("kubeconfig") is None and ctx.target() is None
    failed = stage.failed_tasks()
    assert failed[["host", "task"]].values.tolist() == [["lab-cp1", "A kubeconfig to hand over was given"]]
    assert outcome.status == "failed"
    assert outcome.summary.startswith("cluster.yml failed (rc=2): failed lab-cp1: A kubeconfig to hand over was given")
    assert {c.name: c.status.value for c in outcome.checks}["kubespray_cluster_yml"] == "failed"


def test_provisioner_lab_is_a_no_op_on_a_running_lab_and_verifies(lab_up, tmp_path):
    ctx = open_stage("01_cluster_no_cni", [str(LAB_FILE)], [], tmp_path / "run", False)
    stage = ClusterStage(ctx, lab_up)
    outcome = stage.run_apply(stage.run_plan())
    assert stage.kubeconfig == lab_up.admin_kubeconfig
    assert outcome.status == "passed", outcome.summary
    target = ctx.target()
    assert target.provisioner == "lab" and target.images["probe"].startswith("registry.cnilab.local")
    assert stage.finish(outcome)["status"] == "passed"


def test_provisioner_existing_verifies_the_given_kubeconfig(lab_up, tmp_path):
    ctx = open_stage("01_cluster_no_cni", [str(LAB_FILE)],
                     ["provisioner.kind=existing", f"provisioner.kubeconfig={lab_up.admin_kubeconfig}"],
                     tmp_path / "run", False)
    stage = ClusterStage(ctx, lab_up)
    plan = stage.run_plan()
    assert stage.expected_nodes == ["lab-cp1", "lab-w1", "lab-w2"]
    outcome = stage.run_apply(plan)
    assert stage.kubeconfig == lab_up.admin_kubeconfig
    assert stage.verification.ok and outcome.status == "passed"


def test_both_notebooks_through_the_runner_from_a_down_lab(lab, tmp_path, capsys):
    """`cni-runbook run --params params/lab.yaml --stages 00 01`: stage 00 brings the bare hosts up
    and preflights them, stage 01 brings up the cluster and verifies it."""
    cluster.down(lab.cfg, progress=print)
    rc = cli.main(["--outputs", str(tmp_path / "out"), "run", "--params", str(LAB_FILE), "--stages", "00", "01"])
    err = capsys.readouterr().err
    assert rc == 0, err[-3000:]
    [run_dir] = (tmp_path / "out").iterdir()
    r0 = json.loads((run_dir / "artifacts" / "00_preflight" / "result.json").read_text())
    r1 = json.loads((run_dir / "artifacts" / "01_cluster_no_cni" / "result.json").read_text())
    assert r0["status"] == "passed" and r0["summary"].startswith("preflight (lab): ")
    assert r1["status"] == "passed" and "3 nodes NotReady (cni plugin not initialized), CoreDNS Pending" in r1["summary"]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["kubeconfig"]["value"] == str(lab.cfg.admin_kubeconfig)
    assert state["target"]["value"]["kubeconfig"] == str(lab.cfg.admin_kubeconfig)
    assert cluster.phase(lab.cfg) == "cluster"
    assert cli.main(["--outputs", str(tmp_path / "out"), "verify", run_dir.name]) == 0
    lab.has_cni = False  # a fresh cluster without a CNI: what lab.fresh() gives the next module


KUBERNETES_PORT_CHECKS = ("port_6443_tcp", "port_2379-2380_tcp", "port_10250_tcp", "port_10257_tcp", "port_10259_tcp")


def test_a_running_lab_is_reused_and_its_own_ports_are_recognised(lab, tmp_path):
    """provisioner.lab_running=reuse: preflight on the lab's running cluster passes; each
    Kubernetes port is reported as held by this very cluster's component, not as a conflict."""
    assert cluster.phase(lab.cfg) == "cluster"
    ctx, stage = preflight(lab.cfg, tmp_path, ["provisioner.lab_running=reuse"])
    assert stage.outcome_.status == "passed", stage.outcome_.summary
    assert stage.lab_phase == "cluster" and cluster.phase(lab.cfg) == "cluster"
    rows = {(r.node, r.check): r for r in stage.report.rows}
    assert rows[("lab-cp1", "port_6443_tcp")].seen == "held by kube-apiserver of this very cluster (already running)"
    for node in ("lab-w1", "lab-w2"):
        assert rows[(node, "port_10250_tcp")].seen == "held by kubelet of this very cluster (already running)"
    held = [c for c in KUBERNETES_PORT_CHECKS if ("lab-cp1", c) in rows]
    assert len(held) == 5 and all(rows[("lab-cp1", c)].status == "pass" for c in held)


def test_the_runbook_runs_again_on_the_lab_an_earlier_run_left_up(lab, tmp_path, capsys):
    """`make run` twice in a row: the second run finds the lab up with its CNI, as the first left it.
    Stage 00 rebuilds it from bare hosts (provisioner.lab_running defaults to rebuild), so every
    port check passes as free, and stages 01 and 02 pass again."""
    lab.with_cni()
    rc = cli.main(["--outputs", str(tmp_path / "out"), "run", "--params", str(LAB_FILE), "--stages", "00", "01", "02"])
    err = capsys.readouterr().err
    assert rc == 0, err[-3000:]
    [run_dir] = (tmp_path / "out").iterdir()
    r0 = json.loads((run_dir / "artifacts" / "00_preflight" / "result.json").read_text())
    assert r0["status"] == "passed" and r0["data"]["lab_phase"] == "rebuilt"
    ports = [c for c in r0["checks"] if c["name"].split("/", 1)[-1] in KUBERNETES_PORT_CHECKS]
    assert len(ports) == 7 and all(c["status"] == "passed" for c in ports), ports
    for stage_id in ("01_cluster_no_cni", "02_cni_install"):
        result = json.loads((run_dir / "artifacts" / stage_id / "result.json").read_text())
        assert result["status"] == "passed", (stage_id, result["summary"])
    lab.fresh()  # leave what the next module expects: a fresh cluster without a CNI
