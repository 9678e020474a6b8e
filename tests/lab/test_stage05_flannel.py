"""Stage 05 with flannel on the real lab: an upgrade in place and replacements both ways.

One lab prepared for flannel (its images, the reference CNI plugins), the tests in order:

1. flannel v0.28.4 -> v0.28.10 from the vendor manifests (params/examples/lab-upgrade-flannel.yaml):
   the version read from the cluster before and after, validation passes after, the outage per
   pod pair measured by the streaming probe while the DaemonSet rolls;
2. flannel -> kube-router (lab-replace-kube-router.yaml): NetworkPolicies start being enforced -
   the truth table before is informational (flannel enforces nothing), after it passes;
   flannel's node leftovers (conflist, binary, flannel.1, cni0, FLANNEL- chains, /run/flannel
   contents) are gone from every node, listed over SSH;
3. kube-router -> flannel (lab-replace-flannel.yaml): refused while a NetworkPolicy is in force
   (naming its namespace), then with the explicit acceptance it proceeds; the policy is carried
   over as an API object (not enforced by flannel); kube-router's leftovers are gone.

Each operation prints its measured disruption (median and max outage per pair).
The module leaves the lab down (node leftovers must not meet the next module's CNI).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_runbook.lab import cluster
from cni_runbook.lifecycle import stage as lifecycle_stage
from cni_runbook.lifecycle.compare import disruption_figures
from cni_runbook.state import open_stage

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "params" / "lab.yaml"
EXAMPLES = ROOT / "params" / "examples"
FLANNEL = ROOT.parent / "shared" / "fixtures" / "flannel"
V0284, V0289 = FLANNEL / "kube-flannel-v0.28.4.yml", FLANNEL / "kube-flannel-v0.28.9.yml"
QUICK = ["validation.tests=pod-to-pod/", "validation.perf=false",  # a short before/after: pod-to-pod only,
         "policy.scenarios=[default-deny-ingress]"]  # and one truth table
FLANNEL_DS = ("kube-flannel", "kube-flannel-ds")
ROUTER_DS = ("kube-system", "kube-router")


@pytest.fixture(scope="module")
def flannel_lab(lab):
    if not V0289.is_file():
        pytest.skip(f"flannel fixtures not found beside the checkout ({FLANNEL})")
    cfg = lab.fresh(cni="flannel")
    cluster.install_cni(cfg, progress=print, cni="flannel", manifest=V0284)  # through the engine: the runbook's own
    yield cfg
    cluster.down(cfg, progress=print)
    lab.has_cni = False


@pytest.fixture(scope="module")
def kube(lab, flannel_lab):
    k = lab.kube()
    yield k
    k.close()


def _ctx(tmp_path, example: str, *extra: str):
    return open_stage("05_cni_lifecycle", [str(LAB), str(EXAMPLES / example)], [*QUICK, *extra], tmp_path / "run", False)


def _images(kube, ref) -> list[str] | None:
    ds = kube.get("apps/v1", "DaemonSet", ref[1], ref[0])
    if ds is None:
        return None
    spec = ds["spec"]["template"]["spec"]
    return [c["image"] for c in spec.get("initContainers", []) + spec["containers"]]


def _disruption(result, name: str) -> dict:
    measured = result.disruption
    assert measured is not None and measured.result is not None, getattr(measured, "error", "not measured")
    figures = disruption_figures(measured.per_pair())
    print(f"\nDISRUPTION {name}: {figures} ({measured.result.summary})")
    print(measured.per_pair().to_string())
    assert figures["pairs"] == 6 and (measured.result.pairs["ok"] > 0).all(), measured.result.summary
    assert measured.result.max_gap_s < 30, measured.result.summary  # the probes kept running
    # an exec session that did not end on STOP (seen once on the loaded machine) loses no samples
    assert not [e for e in measured.result.errors.values() if "did not end after STOP" not in e], measured.result.errors
    return figures


def _steps(result) -> str:
    return result.steps_table().to_string()


def _show(result) -> None:
    print(_steps(result))
    for when, tables in (("before", result.before), ("after", result.after)):
        for name, frame in tables.items():
            print(f"{when} {name}:\n{frame.to_string()}")
    if result.leftovers is not None:
        print(f"leftovers:\n{result.leftovers.to_string()}")


def test_flannel_upgrade_v0_28_4_to_v0_28_10(kube, tmp_path):
    assert "registry.cnilab.local:5000/flannel-io/flannel:v0.28.4" in _images(kube, FLANNEL_DS)
    ctx = _ctx(tmp_path, "lab-upgrade-flannel.yaml", "lifecycle.truth_tables=false")  # flannel enforces nothing
    plan = lifecycle_stage.plan_stage(ctx)
    assert plan.ok, plan.refusals
    assert plan.cluster_read and plan.plan.current_version == "v0.28.4" and plan.plan.target_version == "v0.28.10"
    assert plan.plan.installed.made_by == "cni-runbook"
    changed = plan.plan.diff[plan.plan.diff["change"] != "unchanged"]
    assert list(changed["kind"]) == ["DaemonSet"], changed

    result = lifecycle_stage.apply_stage(ctx, plan, progress=print)
    assert result.ok and not result.rolled_back, _steps(result)
    images = _images(kube, FLANNEL_DS)
    assert "registry.cnilab.local:5000/flannel-io/flannel:v0.28.10" in images, images
    [row] = result.identity
    assert row["cni"] == "flannel" and row["before"].startswith("v0.28.4 ") and row["after"].startswith("v0.28.10 "), row
    assert set(result.before["validation"]["result"]) == {"passed"}
    assert set(result.after["validation"]["result"]) == {"passed"}, result.after["validation"]
    steps = result.steps_table().set_index("step")
    print(_steps(result))
    print(f"UPGRADE rollout {steps.loc['rollout DaemonSet kube-flannel/kube-flannel-ds', 'time_s']} s")
    _disruption(result, "flannel v0.28.4 -> v0.28.10")


def test_flannel_replaced_by_kube_router_enforces_the_policies_from_then_on(kube, flannel_lab, tmp_path):
    tag = next(i for i in _images(kube, FLANNEL_DS) if "/flannel:" in i).rsplit(":", 1)[1]  # v0.28.10 after the upgrade
    ctx = _ctx(tmp_path, "lab-replace-kube-router.yaml", f"cni.version={tag}",
               f"cni.source.path={V0289 if tag == 'v0.28.10' else V0284}")
    plan = lifecycle_stage.plan_stage(ctx)
    assert plan.ok, plan.refusals
    assert plan.plan.current.family == "flannel" and plan.plan.target.family == "kube-router"
    assert [(r["kind"], r["name"]) for r in plan.plan.remove if r["kind"] == "DaemonSet"] == [("DaemonSet", "kube-flannel-ds")]

    result = lifecycle_stage.apply_stage(ctx, plan, progress=print)
    _show(result)
    assert result.ok and not result.rolled_back, _steps(result)
    assert _images(kube, FLANNEL_DS) is None and _images(kube, ROUTER_DS) is not None
    identity = {r["cni"]: r for r in result.identity}
    assert identity["flannel"]["before"].startswith(f"{tag} ") and identity["flannel"]["after"] == "absent", identity
    assert identity["kube-router"]["before"] == "absent" and identity["kube-router"]["after"].startswith("v2.1.0 ")
    assert set(result.after["validation"]["result"]) == {"passed"}, result.after["validation"]
    before, after = result.before["truth tables"], result.after["truth tables"]
    assert before.attrs["informational"] and set(before["status"]) == {"failed"}  # flannel: nothing denied
    assert not after.attrs["informational"] and set(after["status"]) == {"passed"}, after
    assert len(result.leftovers) == 0, result.leftovers  # listed over SSH on every node
    _disruption(result, "flannel -> kube-router")


def test_kube_router_replaced_by_flannel_refused_while_policies_exist_then_accepted(kube, tmp_path):
    from kubernetes import client

    core, net = kube.core, client.NetworkingV1Api(kube.api)
    core.create_namespace({"metadata": {"name": "lc-policy"}})
    net.create_namespaced_network_policy("lc-policy", {"metadata": {"name": "deny-all"},
                                                       "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    try:
        refused = lifecycle_stage.plan_stage(_ctx(tmp_path / "refused", "lab-replace-flannel.yaml"))
        assert not refused.ok
        [why] = refused.refusals
        assert "does not enforce NetworkPolicy" in why and "lc-policy" in why, why

        ctx = _ctx(tmp_path, "lab-replace-flannel.yaml", "lifecycle.accept.policies_not_enforced=true")
        plan = lifecycle_stage.plan_stage(ctx)
        assert plan.ok, plan.refusals
        result = lifecycle_stage.apply_stage(ctx, plan, progress=print)
        _show(result)
        assert result.ok and not result.rolled_back, _steps(result)
        assert _images(kube, ROUTER_DS) is None
        assert "registry.cnilab.local:5000/flannel-io/flannel:v0.28.4" in _images(kube, FLANNEL_DS)
        identity = {r["cni"]: r for r in result.identity}
        assert identity["kube-router"]["after"] == "absent" and identity["flannel"]["after"].startswith("v0.28.4 "), identity
        assert set(result.after["validation"]["result"]) == {"passed"}, result.after["validation"]
        assert result.after["truth tables"].attrs["informational"]  # flannel: recorded, cannot pass
        assert len(result.leftovers) == 0, result.leftovers
        # carried over as an API object: still there, no longer enforced by the new CNI
        assert net.read_namespaced_network_policy("deny-all", "lc-policy") is not None
        _disruption(result, "kube-router -> flannel")
    finally:
        core.delete_namespace("lc-policy")
