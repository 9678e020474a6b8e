"""Cross-field params errors name the key path and the expectation (not a whole section), accept
what Kubespray accepts, and `cni-runbook params` runs the stages' static plan checks."""

from __future__ import annotations

import pytest

from cni_runbook import cli
from cni_runbook.kubespray.vars import ManagedKeyOverride, render_group_vars
from cni_runbook.params import PROJECT_ROOT, ParamsError, load_params

EXAMPLE = PROJECT_ROOT / "params" / "examples" / "kubespray-antrea.yaml"
DOUBLE = PROJECT_ROOT / "tests" / "doubles" / "kubespray"
ONE_NODE = "cluster.nodes=[{name: a, roles: [kube_control_plane, kube_node], ansible_host: 192.0.2.1}]"


def problems(sets: list[str]) -> list[str]:
    with pytest.raises(ParamsError) as err:
        load_params([str(EXAMPLE)], sets)
    return err.value.problems


def test_errors_name_the_key_path_not_the_section():
    [p] = problems(["cluster.nodes[3].ip=10.233.64.5"])
    assert p == ("--set cluster.nodes[3].ip: cluster.nodes[3].ip: 10.233.64.5 of node w1 lies inside "
                 "kubespray.kube_pods_subnet; expected an address outside the pod and service networks")
    [p] = problems(["kubespray.kube_network_node_prefix=16"])
    assert p.startswith("--set kubespray.kube_network_node_prefix: kubespray.kube_network_node_prefix: 16 must be")
    assert all(" = {" not in p for p in problems(["cni.route=kubespray_custom_cni"]))


def test_no_etcd_host_is_accepted_with_kubeadm_etcd_as_kubespray_does():
    [p] = problems([ONE_NODE])
    assert "cluster.nodes[*].roles: the number of etcd nodes must be odd, got 0" in p and "kubeadm" in p
    load_params([str(EXAMPLE)], [ONE_NODE, "kubespray.extra_vars={etcd_deployment_type: kubeadm}"])


def test_the_managed_key_error_names_the_params_option():
    with pytest.raises(ManagedKeyOverride) as err:
        render_group_vars({"kube_proxy_mode": "ipvs"}, {"kube_proxy_mode": "iptables", "kubeconfig_localhost": False})
    assert "kubespray.extra_vars.kube_proxy_mode: 'iptables' would override 'ipvs', set kubespray.kube_proxy_mode" \
        in str(err.value)
    assert "kubeconfig_localhost" in str(err.value) and "allow_override" not in str(err.value)


def test_params_command_runs_the_static_plan_checks(capsys):
    # the example's kubespray.dir does not exist here: stage 01's plan check fails, and so does the command
    assert cli.main(["params", "--params", str(EXAMPLE)]) == 1
    err = capsys.readouterr().err
    assert "error: 01_cluster_no_cni: kubespray.dir (" in err and "plan checks: 1 error(s)" in err
    assert cli.main(["params", "--params", str(EXAMPLE), "--set", f"kubespray.dir={DOUBLE}"]) == 0
    assert "plan checks: 0 error(s)" in capsys.readouterr().err
    assert cli.main(["params", "--params", str(EXAMPLE), "--no-checks"]) == 0
