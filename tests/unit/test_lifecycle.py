"""Stage 05 (CNI lifecycle), every pure part without a cluster: compatibility rules, installed
version reading, the object diff of the real Antrea v2.5.3 -> v2.7.0 manifests, upgrade and
replacement plans and their refusals, Kubespray group_vars, node leftover scripts, views."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cni_runbook.cni.antrea import render_antrea
from cni_runbook.cni.manifests import Manifest, ordered_objects
from cni_runbook.lifecycle import compare, compat, nodes, objdiff, profiles, replace, upgrade, views
from cni_runbook.lifecycle.installed import clean_live, describe_installed
from cni_runbook.params import load_params
from cni_runbook.params.schema import Cni, CniSource

ROOT = Path(__file__).resolve().parents[2]
ANTREA = ROOT.parent / "shared" / "fixtures" / "antrea"
FLANNEL = ROOT.parent / "shared" / "fixtures" / "flannel"
LAB_MANIFEST = ROOT / "lib" / "cni_runbook" / "lab" / "manifests" / "kube-router.yaml"
needs_fixtures = pytest.mark.skipif(not ANTREA.is_dir(), reason="../shared/fixtures/antrea not present")


def antrea_objects(version: str):
    rendered = render_antrea(Manifest.from_file(ANTREA / f"antrea-{version}-dev-manifest.yml"), version=version)
    return ordered_objects(rendered.rendered, default_namespace="kube-system")


def cni(profile="antrea", version="v2.5.3", **kw):
    return Cni(profile=profile, version=version, **kw)


# --------------------------------------------------------------------------- compatibility


@pytest.mark.parametrize("antrea, kube, status", [
    ("v2.7.0", "v1.35.4", "supported"), ("v2.7.0", "v1.33.0", "supported"), ("v2.7.0", "v1.36.1", "supported"),
    ("v2.7.0", "v1.32.9", "unsupported"), ("v2.7.0", "v1.37.0", "unsupported"),
    ("v2.5.3", "v1.34.2", "supported"), ("v2.5.3", "v1.35.4", "unsupported"), ("v2.0.0", "v1.27.0", "supported"),
    ("v3.1.0", "v1.35.0", "unknown"),
])
def test_antrea_supports_the_four_kubernetes_minors_maintained_at_its_release(antrea, kube, status):
    check = compat.check_kube("antrea", antrea, kube, kube_from="the live API server")
    assert check.status == status
    assert "docs/versioning.md" in check.source or status == "unknown"
    assert "the live API server" in check.detail or status == "unknown"


def test_an_unsupported_combination_is_accepted_only_explicitly():
    refused = compat.check_kube("antrea", "v2.7.0", "v1.30.0")
    assert refused.refused and refused.as_check()["status"] == "failed"
    accepted = compat.check_kube("antrea", "v2.7.0", "v1.30.0", accept=True)
    assert accepted.status == "accepted" and not accepted.refused and "accepted by the site" in accepted.detail


def test_a_generic_cni_uses_the_range_its_params_declare():
    declared = {"kube_min": "1.28", "kube_max": "1.34"}
    assert compat.check_kube("generic", "v1", "v1.35.4", declared=declared).status == "unsupported"
    assert compat.check_kube("generic", "v1", "v1.30.1", declared=declared).status == "supported"
    nothing = compat.check_kube("lab", None, "v1.35.4")
    assert nothing.status == "unknown" and "cni.compatibility" in nothing.detail and not nothing.refused


@pytest.mark.parametrize("current, target, status", [
    ("v2.5.3", "v2.7.0", "supported"), ("v2.3.0", "v2.7.0", "supported"), ("v2.2.1", "v2.7.0", "unsupported"),
    ("v2.7.0", "v2.5.3", "unsupported"), ("v1.15.1", "v2.0.0", "unsupported"),
])
def test_antrea_skew_at_most_four_minors_forward(current, target, status):
    check = compat.check_skew("antrea", current, target)
    assert check.status == status
    assert "4 minor" in check.source


def test_generic_skew_is_what_the_params_declare():
    assert compat.check_skew("flannel", "v0.28.4", "v0.28.10").status == "unknown"
    assert compat.check_skew("flannel", "v0.26.0", "v0.28.10", declared={"max_minor_skew": 1}).status == "unsupported"
    assert compat.check_skew("flannel", "v0.27.0", "v0.28.10", declared={"max_minor_skew": 1}).status == "supported"


# --------------------------------------------------------------------------- installed


def live(kind, name, image, *, manager="cni-runbook", ns="kube-system", labels=None):
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": "u", "resourceVersion": "7", "labels": labels or {},
                         "managedFields": [{"manager": manager}],
                         "annotations": {"deprecated.daemonset.template.generation": "3", "keep": "me"}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}, "status": {"x": 1}}


def test_installed_version_is_read_from_the_first_workload_of_the_rollout_order():
    facts = profiles.facts("antrea")
    found = describe_installed(facts, [live("DaemonSet", "antrea-agent", "antrea/antrea-agent-ubuntu:v2.5.3"),
                                       live("Deployment", "antrea-controller", "antrea/antrea-controller-ubuntu:v2.6.0")])
    assert found.version == "v2.6.0"  # the controller, rolled out first: a half-done upgrade shows
    assert list(found.table()["workload"]) == ["Deployment kube-system/antrea-controller", "DaemonSet kube-system/antrea-agent"]
    assert found.made_by == "cni-runbook" and found.problem() is None


def test_an_install_not_made_here_whose_version_cannot_be_read_is_refused():
    facts = profiles.facts("antrea")
    foreign = describe_installed(facts, [live("DaemonSet", "antrea-agent", "mirror/agent@sha256:" + "a" * 64, manager="kubectl")])
    assert foreign.version is None and "not made by this runbook" in foreign.problem()
    assert "nothing to upgrade" in describe_installed(facts, [], expected=["DaemonSet kube-system/antrea-agent"]).problem()


def test_clean_live_drops_status_and_server_metadata():
    body = clean_live(live("DaemonSet", "a", "x:1"))
    assert "status" not in body and set(body["metadata"]) == {"name", "namespace", "labels", "annotations"}
    assert body["metadata"]["annotations"] == {"keep": "me"}


# --------------------------------------------------------------------------- object diff, upgrade plan


@needs_fixtures
def test_antrea_253_to_270_diff_of_the_real_manifests():
    old, new = antrea_objects("v2.5.3"), antrea_objects("v2.7.0")
    diff = objdiff.diff_objects(objdiff.objects_by_key(old), new, live=False)
    assert objdiff.counts(diff) == {"added": 1, "changed": 9, "unchanged": 37, "removed": 0}
    added = diff[diff["change"] == "added"]
    assert list(added["name"]) == ["antreanodeconfigs.crd.antrea.io"]
    agent = diff[(diff["kind"] == "DaemonSet")].iloc[0]
    assert agent["change"] == "changed" and "spec.template.spec.containers[0].image" in agent["paths"]


@needs_fixtures
def test_upgrade_plan_crds_first_controller_before_agents():
    plan = upgrade.plan_upgrade(current=cni(), target=cni(version="v2.7.0"), facts=profiles.facts("antrea"),
                                objects=antrea_objects("v2.7.0"), installed=None, previous=antrea_objects("v2.5.3"),
                                kube_version="v1.35.4", kube_from="kubespray.kube_version")
    assert plan.ok, plan.refusals
    kinds = [o.ref.kind for o in plan.objects]
    assert kinds[:20] == ["CustomResourceDefinition"] * 20
    assert kinds.index("Deployment") < kinds.index("DaemonSet")
    rollouts = [s["target"] for s in plan.steps if s["step"] == "wait rollout"]
    assert rollouts == ["Deployment kube-system/antrea-controller", "DaemonSet kube-system/antrea-agent"]
    assert plan.steps[0]["step"] == "apply CRDs"
    assert set(plan.checks_table()["status"]) == {"supported"}


@needs_fixtures
def test_upgrade_is_refused_when_the_skew_is_broken_or_kube_unsupported_unless_accepted():
    kw = dict(facts=profiles.facts("antrea"), objects=antrea_objects("v2.7.0"), installed=None,
              previous=antrea_objects("v2.5.3"), kube_from="kubespray.kube_version")
    refused = upgrade.plan_upgrade(current=cni(version="v2.2.0"), target=cni(version="v2.7.0"), kube_version="v1.30.0", **kw)
    assert len(refused.refusals) == 2 and "5 minor" in refused.refusals[1] and "REFUSED" in refused.summary()
    accepted = upgrade.plan_upgrade(current=cni(version="v2.2.0"), target=cni(version="v2.7.0"), kube_version="v1.30.0",
                                    accept={"unsupported_kube_version": True, "version_skew": True}, **kw)
    assert accepted.ok and {c.status for c in accepted.checks} == {"accepted"}


@needs_fixtures
def test_upgrade_refuses_another_profile_and_an_unreadable_install():
    kw = dict(facts=profiles.facts("antrea"), objects=antrea_objects("v2.7.0"), kube_version="v1.35.4", kube_from="x")
    other = upgrade.plan_upgrade(current=cni(), target=cni(profile="lab", version=None), installed=None, **kw)
    assert any("that is a replacement" in r for r in other.refusals)
    unread = describe_installed(profiles.facts("antrea"), [live("DaemonSet", "antrea-agent", "x/y@sha256:" + "b" * 64,
                                                                manager="kubectl")])
    plan = upgrade.plan_upgrade(current=cni(), target=cni(version="v2.7.0"), installed=unread, **kw)
    assert any("not made by this runbook" in r for r in plan.refusals)


@needs_fixtures
def test_live_objects_compare_as_a_subset_so_server_defaults_are_no_change():
    new = antrea_objects("v2.7.0")
    installed = objdiff.objects_by_key(new)
    agent_key = next(k for k in installed if k[1] == "DaemonSet")
    installed[agent_key]["spec"]["revisionHistoryLimit"] = 10  # a server default
    installed[agent_key]["status"] = {"numberReady": 3}
    diff = objdiff.diff_objects(installed, new, live=True)
    assert set(diff["change"]) == {"unchanged"}
    installed[("", "ConfigMap", "kube-system", "gone")] = {"apiVersion": "v1", "kind": "ConfigMap"}
    diff = objdiff.diff_objects(installed, new, live=True)
    assert list(diff[diff["change"] == "removed"]["name"]) == ["gone"]


def test_helm_target_upgrades_a_helm_release_with_helm_and_a_runbook_rendering_by_server_side_apply():
    target = cni(profile="flannel", version="v0.28.10", source=CniSource(
        kind="helm", helm={"path": str(FLANNEL / "charts" / "kube-flannel-v0.28.4"), "release_name": "flannel"}))
    body = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-flannel-ds", "namespace": "kube-system"},
            "spec": {"template": {"spec": {"containers": [{"name": "f", "image": "ghcr.io/flannel-io/flannel:v0.28.4"}]}}}}
    facts = profiles.facts("flannel")
    release = dict(body, metadata={**body["metadata"], "labels": {"app.kubernetes.io/managed-by": "Helm"}})
    notes: list[str] = []
    assert upgrade.helm_route(target, describe_installed(facts, [release]), notes) == "flannel" and not notes
    assert upgrade.helm_route(target, None, notes) == "flannel"  # cluster not read: the source's route
    ours = dict(body, metadata={**body["metadata"], "managedFields": [{"manager": "cni-runbook"}]})
    assert upgrade.helm_route(target, describe_installed(facts, [ours]), notes) is None
    [note] = notes
    assert "no Helm release" in note and "helm template --include-crds" in note and "CRDs first" in note
    assert upgrade.helm_route(cni(), None, []) is None  # not a chart


def test_helm_target_applies_the_charts_crds_before_helm_upgrade():
    crd = ordered_objects(Manifest(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: a.b.io}\n"
        "spec: {group: b.io, names: {kind: A, plural: a}, scope: Namespaced, versions: []}\n---\n"
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: kube-flannel-ds, namespace: kube-flannel}\nspec: {}\n"),
        existing_namespaces=["kube-flannel"])
    steps = objdiff.steps(crd, pd.DataFrame(columns=objdiff.DIFF_COLUMNS), helm_release="flannel")
    assert [s["step"] for s in steps] == ["apply CRDs", "helm upgrade", "wait rollout"]
    assert "helm upgrade does not upgrade CRDs" in steps[0]["detail"]


# --------------------------------------------------------------------------- replacement


def test_replacement_refused_while_policies_exist_and_the_target_does_not_enforce_them():
    policies = replace.PoliciesInForce.from_objects([{"metadata": {"namespace": "x"}}, {"metadata": {"namespace": "x"}},
                                                     {"metadata": {"namespace": "y"}}])
    kw = dict(current=cni(profile="lab", version=None), target=cni(profile="generic", version=None,
                                                                  source=CniSource(kind="file", path="/f.yaml")),
              current_facts=profiles.facts("lab"), target_facts=profiles.facts("flannel"), current_objects=[],
              target_objects=[], kube_version="v1.35.4", kube_from="x")
    refused = replace.plan_replacement(policies=policies, **kw)
    assert not refused.ok and "3 NetworkPolicy object(s) in 2 namespace(s): x (2), y (1)" in refused.refusals[0]
    assert replace.plan_replacement(policies=replace.PoliciesInForce(), **kw).ok
    accepted = replace.plan_replacement(policies=policies, accept={"policies_not_enforced": True}, **kw)
    assert accepted.ok and "accepted by the site" in accepted.notes[-1 if len(accepted.notes) == 1 else 0]
    assert list(accepted.policies_table()["enforced after"]) == ["NO", "NO"]


def test_removal_order_is_the_reverse_apply_order_and_keeps_cluster_namespaces():
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
               {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-flannel"}},
               {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "flannel", "namespace": "kube-flannel"}},
               {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-flannel-ds", "namespace": "kube-flannel"}}]
    order = [r["kind"] for r in replace.removal_order(objects)]
    assert order == ["DaemonSet", "ServiceAccount", "Namespace"]


def test_kubespray_group_vars_after_the_replacement_with_a_diff():
    cluster = {"kube_proxy_mode": "iptables"}
    direct = replace.kubespray_vars(network_plugin="custom_cni", cluster=cluster, extras={"custom_cni_manifests": ["/a.yml"]},
                                    target_route="direct")
    assert direct["after"]["kube_network_plugin"] == "none"
    assert "-kube_network_plugin: custom_cni" in direct["diff"] and "+kube_network_plugin: none" in direct["diff"]
    custom = replace.kubespray_vars(network_plugin="none", cluster=cluster, extras={}, target_route="kubespray_custom_cni",
                                    target_manifest="/run/target/rendered.yaml")
    assert custom["after"]["custom_cni_manifests"] == ["/run/target/rendered.yaml"]
    unchanged = replace.kubespray_vars(network_plugin="none", cluster=cluster, extras={}, target_route="direct")
    assert unchanged["diff"].startswith("no change")


# --------------------------------------------------------------------------- node leftovers


LISTING = "\n".join([
    "conflist\t/etc/cni/net.d/10-kuberouter.conflist", "interface\tlo", "interface\tkube-bridge", "interface\ttun-10a",
    "interface\teth0", "chain\tiptables-legacy:filter/KUBE-ROUTER-FORWARD", "chain\tiptables-nft:filter/KUBE-FORWARD", "chain\tiptables-legacy:nat/KUBE-SERVICES",
    "ipset\tkube-router-pod-subnets", "ipset\tKUBE-DST-ABC", "route\t10.233.65.0/24 via 10.99.7.12 dev eth0 proto 17",
    "route\t10.233.64.0/24 dev kube-bridge", "junk line"])


def test_leftovers_found_in_a_listing():
    found = nodes.leftovers_found(nodes.parse_listing(LISTING), profiles.facts("lab").leftovers,
                                  pod_cidrs=["10.233.64.0/24", "10.233.65.0/24"], own_pod_cidr="10.233.64.0/24")
    names = {(r["what"], r["name"]) for r in found}
    assert ("interface", "kube-bridge") in names and ("interface", "tun-10a") in names
    assert ("iptables chain", "iptables-legacy:filter/KUBE-ROUTER-FORWARD") in names and ("iptables chain", "iptables-nft:filter/KUBE-FORWARD") not in names
    assert ("ipset", "KUBE-DST-ABC") in names and ("route", "10.233.65.0/24 via 10.99.7.12 dev eth0 proto 17") in names
    assert ("interface", "eth0") not in names and len(found) == 7
    # listed after the next CNI routed the pod CIDRs itself (kube-router via eth0): only routes
    # through one of the removed CNI's interfaces count
    flannel = nodes.leftovers_found({"route": ["10.233.65.0/24 via 10.99.7.12 dev eth0 proto 17",
                                               "10.233.66.0/24 via 10.233.66.0 dev flannel.1 onlink"]},
                                    profiles.facts("flannel").leftovers, pod_cidrs=["10.233.65.0/24", "10.233.66.0/24"],
                                    new_cni_routes=True)
    assert [r["name"] for r in flannel] == ["10.233.66.0/24 via 10.233.66.0 dev flannel.1 onlink"]


def test_the_shell_scripts_are_valid_posix_sh():
    leftovers = profiles.facts("flannel").leftovers
    for script in (nodes.listing_script(leftovers), nodes.cleanup_script(leftovers, pod_cidrs=["10.233.65.0/24"]),
                   nodes.cleanup_script(profiles.facts("lab").leftovers)):
        assert subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True).returncode == 0
    cleanup = nodes.cleanup_script(leftovers, pod_cidrs=["10.233.65.0/24"])
    assert "ip link delete flannel.1" in cleanup and "rm -f /etc/cni/net.d/10-flannel.conflist" in cleanup
    assert "FLANNEL-" in cleanup and "ip -4 route del 10.233.65.0/24" in cleanup
    assert "bridge" not in nodes.cleanup_script(profiles.facts("flannel").leftovers).replace("cni0", "")


def test_the_playbook_runs_one_shell_task_on_every_host():
    import yaml

    play = yaml.safe_load(nodes.playbook("list CNI leftovers", "echo hi"))
    assert play[0]["hosts"] == "all" and play[0]["gather_facts"] is False
    assert play[0]["tasks"][0]["ansible.builtin.shell"]["cmd"] == "echo hi"


# --------------------------------------------------------------------------- compare, views, params


def test_disruption_summary_per_pair_and_node():
    outages = pd.DataFrame([{"pair": "a->b", "src_node": "n1", "dst_node": "n2", "start_s": 1.0, "end_s": 3.5},
                            {"pair": "a->b", "src_node": "n1", "dst_node": "n2", "start_s": 10.0, "end_s": 10.5}],
                           columns=compare.OUTAGE_COLUMNS)
    summary = compare.disruption_summary(outages, [{"pair": "c->d", "src_node": "n2", "dst_node": "n3"}])
    assert summary.set_index("pair").loc["a->b", "total_s"] == 3.0 and summary.set_index("pair").loc["c->d", "outages"] == 0
    figures = compare.disruption_figures(summary)
    assert figures == {"pairs": 2, "median_outage_s": 1.5, "max_outage_s": 2.5}
    assert compare.per_node(summary).set_index("node").loc["n2", "pairs"] == 2


def test_a_relay_joins_both_streams_and_counts_the_hand_over_as_an_outage():
    """The relay of a replacement (lifecycle.disruption): the first stream's pairs and time axis,
    the hand-over a failed sample of every pair, the outage ending at the first answer on the new CNI."""
    import threading
    from types import SimpleNamespace

    from cni_runbook.lifecycle.disruption import HANDOVER, Measured, join
    from cni_runbook.validation.probe import Probe
    from cni_runbook.validation.stream import Sample

    def stream(probes, samples, started, stopped):
        return SimpleNamespace(probes=probes, samples=samples, started=started, stopped=stopped, interval_s=0.5,
                               nodes={"ns/a": "n1", "10.0.0.2": "n2"}, marks=[], errors={}, _lock=threading.Lock())

    t0 = 1000.0
    old = [Probe("ns/a", "10.0.0.2", 80, name="a->b"), Probe("ns/a", "10.0.0.3", 80, name="a->c")]
    first = stream(old, [Sample(0, 0, t0 + 1, t0 + 1.1, True, 1, "ok"), Sample(0, 1, t0 + 2, t0 + 3, False, None, "timeout"),
                         Sample(1, 0, t0 + 1, t0 + 1.1, True, 1, "ok"), Sample(1, 1, t0 + 2, t0 + 2.1, True, 1, "ok")],
                   t0, t0 + 3)
    new = [Probe("ns-after/a", "10.1.0.2", 80, name="a->b"), Probe("ns-after/a", "10.1.0.3", 80, name="a->c")]
    second = stream(new, [Sample(0, 0, t0 + 20, t0 + 20.1, True, 1, "ok"), Sample(1, 0, t0 + 20, t0 + 21, False, None, "x"),
                          Sample(1, 1, t0 + 21, t0 + 21.5, True, 1, "ok")], t0 + 19, t0 + 22)
    result = join(first, second, t0 + 4)
    windows = result.outages.set_index("label")
    assert windows.loc["a->b", "start_s"] == 2 and windows.loc["a->b", "end_s"] == 20.1  # failed on the old CNI first
    assert windows.loc["a->c", "start_s"] == 4 and windows.loc["a->c", "end_s"] == 21.5  # from the hand-over
    assert not windows["open"].any() and result.duration_s == 22
    assert [label for _, label in result.marks] == [HANDOVER, "probes on the new CNI"]
    assert set(result.pairs["src_node"]) == {"n1"}  # the first probes' attribution
    still = join(first, None, t0 + 4).outages.set_index("label")  # the hand-over failed: open from then on
    assert still.loc["a->c", "open"] and Measured(result).per_pair().set_index("pair").loc["a->b", "total_s"] == 18.1


def test_side_by_side_marks_changes():
    before = pd.DataFrame({"test": ["t1", "t2"], "status": ["passed", "passed"]})
    after = pd.DataFrame({"test": ["t1", "t2"], "status": ["passed", "failed"]})
    table = compare.side_by_side(before, after)
    assert list(table["changed"]) == ["", "CHANGED"]


def test_params_lifecycle_section(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("lifecycle:\n  mode: replace\n  target: {profile: lab}\n  pod_restart: all-at-once\n")
    params = load_params([str(site)]).params
    assert params.lifecycle.target.version is None  # not Antrea's default version
    assert params.lifecycle.disruption.sample_pairs == 6 and params.lifecycle.accept.policies_not_enforced is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("lifecycle:\n  pod_restart: sometimes\n")
    with pytest.raises(Exception, match="pod_restart"):
        load_params([str(bad)])


def test_example_params_validate():
    for name in ("lab-upgrade-antrea-dry-run.yaml", "lab-upgrade-broken.yaml", "lab-replace-flannel.yaml",
                 "lab-upgrade-flannel.yaml", "lab-replace-kube-router.yaml"):
        path = ROOT / "params" / "examples" / name
        assert load_params([str(path)]).params.lifecycle.target is not None, name


def test_result_without_a_target_is_skipped():
    from cni_runbook.lifecycle.stage import LifecyclePlan

    assert views.result_args(LifecyclePlan("upgrade", skipped="no target"), plan=True)["status"] == "skipped"


def test_stage02_checks_compatibility_in_its_plan_and_refuses_in_its_apply():
    from cni_runbook import stages
    from cni_runbook.stages.cni_install import compatibility_step

    params = load_params([], ["kubespray.kube_version=v1.30.2"], {"site": "x"}).params
    action = stages.outline("02_cni_install", params)[-1]
    assert action["target"] == "compatibility" and action["detail"].startswith("unsupported: Antrea v2.7.0 supports")
    step = compatibility_step(params.cni, "v1.30.2", kube_from="the live API server")
    assert step.status == "failed" and "docs/versioning.md" in step.detail
    accepting = load_params([], ["cni.compatibility.accept_unsupported=true"], {"site": "x"}).params
    assert compatibility_step(accepting.cni, "v1.30.2", kube_from="x").status == "passed"
    assert compatibility_step(params.cni, "v1.35.4", kube_from="x").status == "passed"


def test_rollback_of_an_upgrade_run_needs_its_target_record(tmp_path, capsys):
    from cni_runbook import cli

    run = tmp_path / "outputs" / "r1"
    (run / "artifacts" / "05_cni_lifecycle").mkdir(parents=True)
    (run / "artifacts" / "05_cni_lifecycle" / "previous-objects.json").write_text('{"objects": []}')
    assert cli.main(["--outputs", str(tmp_path / "outputs"), "rollback", str(run)]) == 1
    assert "target.json: missing" in capsys.readouterr().out


def test_refusals_become_blocking_findings_named_by_their_params_key():
    from cni_runbook.lifecycle.stage import LifecycleStage, refusal_finding
    from cni_runbook.stages import stage_class

    assert stage_class("05") is LifecycleStage
    finding = refusal_finding("flannel does not enforce NetworkPolicy and 2 NetworkPolicy object(s) ...")
    assert finding.key == "lifecycle.accept.policies_not_enforced" and finding.blocking
    assert refusal_finding("version skew current -> target: v2.2.0 -> v2.7.0").key == "lifecycle.accept.version_skew"
    assert refusal_finding("no antrea workload found on the cluster").key == "cni"


@needs_fixtures
def test_a_refused_plan_fails_in_plan_mode_too(tmp_path):
    from cni_runbook import stages

    site = tmp_path / "site.yaml"
    site.write_text(f"""
cni: {{profile: antrea, version: v2.2.0, source: {{kind: file, path: {ANTREA / 'antrea-v2.5.3-dev-manifest.yml'}}}}}
kubespray: {{kube_version: v1.35.4}}
provisioner: {{kind: existing, kubeconfig: {tmp_path / 'no-such-kubeconfig'}}}
lifecycle:
  target: {{profile: antrea, version: v2.7.0, source: {{kind: file, path: {ANTREA / 'antrea-v2.7.0-dev-manifest.yml'}}}}}
""")  # no cluster is reachable (whatever lab may be up on this machine): the plan uses the params
    job = stages.open("05", [str(site)], [], tmp_path / "run", True)
    planned = job.run_plan()
    assert [f.key for f in planned.blocking] == ["lifecycle.accept.version_skew"]
    outcome = job.run_apply(planned)
    assert outcome.status == "failed" and "version skew" in outcome.summary


def test_disruption_pairs_cover_every_node_other_nodes_first():
    from cni_runbook.lifecycle.disruption import sample_pairs

    pairs = sample_pairs(["w2", "cp1", "w1"], 6)
    assert pairs == [("cp1", "w1"), ("w1", "w2"), ("w2", "cp1"), ("cp1", "w2"), ("w1", "cp1"), ("w2", "w1")]
    assert {a for a, _ in pairs} == {b for _, b in pairs} == {"cp1", "w1", "w2"}
    assert sample_pairs(["n1"], 3) == [("n1", "n1")] and sample_pairs([], 3) == []
    assert len(sample_pairs(["a", "b"], 10)) == 4  # every ordered pair once: 2 other-node, 2 same-node


def test_only_controller_owned_pods_that_are_not_host_network_are_restarted():
    from cni_runbook.lifecycle.swap import by_node, restartable

    def pod(name, node, *, host=False, owner=True, created="2026-12-01T10:00:00Z", phase="Running"):
        meta = {"name": name, "namespace": "x", "creationTimestamp": created}
        if owner:
            meta["ownerReferences"] = [{"kind": "ReplicaSet", "controller": True}]
        return {"metadata": meta, "spec": {"nodeName": node, "hostNetwork": host}, "status": {"phase": phase}}

    pods = [pod("a", "n1"), pod("b", "n2"), pod("agent", "n1", host=True), pod("bare", "n1", owner=False),
            pod("new", "n2", created="2026-12-01T12:00:00Z"), pod("done", "n1", phase="Succeeded")]
    restart, bare = restartable(pods, before="2026-12-01T11:00:00Z")
    assert [p["metadata"]["name"] for p in restart] == ["a", "b"] and [p["metadata"]["name"] for p in bare] == ["bare"]
    assert list(by_node(restart)) == ["n1", "n2"]


def test_upgrade_result_shows_before_after_side_by_side_and_records_steps():
    from cni_runbook.lifecycle.apply import LifecycleResult, Step

    result = LifecycleResult("upgrade", steps=[Step("rollout DaemonSet kube-system/x", "failed", "timed out")],
                             rolled_back=True, rollback_detail="re-applied 5", error="upgrade failed while waiting")
    result.before = {"validation": pd.DataFrame({"test": ["t1"], "result": ["passed"]})}
    result.after = {"validation": pd.DataFrame({"test": ["t1"], "result": ["passed"]})}
    assert not result.ok and "ROLLED BACK" in result.summary()
    captions = [c for c, _ in result.views()]
    assert captions == ["steps", "before/after validation"]
    assert result.record()["rolled_back"] is True and result.checks()[0]["status"] == "failed"


def test_failed_rows_of_a_before_after_table_are_shown_with_their_reason():
    from cni_runbook.lifecycle.apply import LifecycleResult

    result = LifecycleResult("upgrade")
    result.before = {"truth tables": pd.DataFrame([{"set": "baseline", "status": "failed", "message": "UDP/80 observed X"}])}
    views = dict(result.views())
    assert "failures truth tables" in views and "UDP/80 observed X" in str(views["failures truth tables"])


@pytest.mark.skipif(not (FLANNEL / "kube-flannel-v0.28.4.yml").is_file(), reason="../shared/fixtures/flannel not present")
def test_a_flannel_target_renders_its_network_from_the_clusters_pod_cidr(tmp_path):
    import json

    from cni_runbook.lifecycle.stage import plan_stage
    from cni_runbook.state import open_stage

    site = tmp_path / "site.yaml"
    site.write_text(f"""
cni: {{profile: lab, version: null, source: null, image_registry: null}}
kubespray: {{kube_version: v1.35.4, kube_pods_subnet: 10.77.0.0/16}}
provisioner: {{kind: existing, kubeconfig: {tmp_path / 'no-such-kubeconfig'}}}
lifecycle:
  mode: replace
  target: {{profile: flannel, version: v0.28.4, source: {{kind: file, path: {FLANNEL / 'kube-flannel-v0.28.4.yml'}}}}}
""")  # no cluster is reachable: the plan renders both sides from the params
    ctx = open_stage("05_cni_lifecycle", [str(site)], [], tmp_path / "run", True)
    lp = plan_stage(ctx)
    config = next(o for o in lp.target.objects if o.ref.kind == "ConfigMap")
    assert json.loads(config.body["data"]["net-conf.json"])["Network"] == "10.77.0.0/16"  # not the vendor's 10.244.0.0/16
