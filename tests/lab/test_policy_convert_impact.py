"""Issue 15 on the real lab (kube-router enforces Kubernetes NetworkPolicy):

* the exact Kubernetes output of converting Calico policies (from the sample set) is proven
  equivalent on the live pods, applied, and verified by stage 04's truth tables;
* ``policy impact`` of a deny-all, computed over the live cluster before it is applied, lists
  the cut connections, and the verification after apply observes exactly those cuts;
* stage 04 itself (first: it deploys and removes its own x/y/z layout before the module's
  shared one): its plan predicts the deny-all's cuts, its apply's ``impact`` check finds the
  verification observed the same.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from cni_runbook.cli import main
from cni_runbook.policy import equivalence, impact, scenarios, sets
from cni_runbook.policy.convert import EXACT, convert

pytestmark = pytest.mark.lab

SAMPLE = Path(__file__).parents[1] / "unit" / "data" / "calico" / "sample.yaml"
LAB = Path(__file__).parents[2] / "params" / "lab.yaml"
# Calico policies of the sample set whose conversion is an exact Kubernetes NetworkPolicy and
# whose meaning does not depend on the synthetic pod IPs
LIVE = {"allow-from-y", "same-ns-not-c", "port-range", "not-ports", "named-port", "k8s-allow-z", "not-selector",
        "ns-by-calico-name"}


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def test_stage04_plan_predicts_the_deny_all_cuts_and_the_apply_observes_them(kube, tcp_layout, tmp_path):
    """Stage 04 itself: its plan shows the connections the default-deny-ingress set would cut,
    its apply compares what the verification observed with that prediction."""
    import json

    from cni_runbook.stages.policy_qos import PolicyQosStage
    from cni_runbook.state import open_stage

    overrides = ["policy.scenarios=[default-deny-ingress]", "policy.enforcement_timeout_s=45", "qos.enabled=false",
                 f"policy.layout={json.dumps(tcp_layout)}"]
    stage = PolicyQosStage(open_stage("04_policy_qos", [str(LAB)], overrides, tmp_path / "run", False))
    plan = stage.run_plan()
    assert plan.blocking == [], plan.blocking
    [planned] = stage.planned_sets
    assert planned.impact.summary.startswith("48 connections cut, 0 opened")  # per port: x's 3 pods from the 8 others
    [view] = [v for v in plan.views if v.caption.startswith("default-deny-ingress: predicted impact")]
    assert set(view.obj["change"]) == {"cut"} and view.obj["connections"].sum() == 48
    outcome = stage.run_apply(plan)
    checks = {c.name: c for c in outcome.checks}
    check = checks["impact default-deny-ingress"]
    _say(f"{check.status.value}: {check.message}")
    assert check.status.value == "passed", [(c.name, c.status.value, c.message) for c in outcome.checks]
    assert check.message == "predicted 48 cut, 0 opened before the apply; the verification observed the same"
    assert outcome.status.value == "passed", outcome.summary
    assert (stage.ctx.artifacts / "predicted-impact.csv").is_file() and (stage.ctx.artifacts / "impact-vs-observed.csv").is_file()


def test_exact_k8s_conversion_is_proven_and_verified_live(policy_layout):
    layout, deployment, verifier, _ = policy_layout
    source = [o for o in yaml.safe_load_all(SAMPLE.read_text()) if o and o["metadata"]["name"] in LIVE]
    conversion = convert(source)
    assert all(p.status == EXACT and p.target == "Kubernetes NetworkPolicy" for p in conversion.policies)
    assert not conversion.antrea
    proof = equivalence.check(deployment.cluster, source, conversion)  # the live pods and IPs
    _say(proof.summary)
    assert proof.proven
    policy_set = sets.PolicySet("calico-converted", "exact Kubernetes output of Calico policies",
                                  tuple(conversion.k8s), sets.layout_probes(layout), "converted",
                                  (False,) * len(conversion.k8s))
    result = verifier.verify(policy_set)
    _say(f"calico-converted: {result.summary}")
    assert result.ok, result.mismatches().to_string()
    assert result.incorrect == 0 and result.correct > 0


def test_impact_of_deny_all_matches_what_the_verification_observes(policy_layout, lab, tmp_path, capsys):
    layout, deployment, verifier, baseline = policy_layout
    deny = scenarios.network_policy("deny-all-ingress", "x", {"podSelector": {}, "policyTypes": ["Ingress"]})
    probes = list(sets.layout_probes(layout))
    kube = verifier.kube
    predicted = impact.live_impact(kube, [deny], namespaces=list(layout.namespaces), ports=probes)
    _say(predicted.summary)
    x_pods = [p.key for p in deployment.cluster.pods if p.namespace == "x"]
    every = {(s, d) for s in deployment.cluster.pod_keys for d in x_pods if s != d}
    for port, protocol in probes:
        assert predicted.cells("cut", port, protocol) == every
    assert predicted.opened.empty
    assert all("deny-all-ingress" in r for r in predicted.cut["rule after"])

    path = tmp_path / "deny.yaml"
    path.write_text(yaml.safe_dump(deny))
    namespaces = [a for ns in layout.namespaces for a in ("-n", ns)]
    assert main(["policy", "impact", str(path), "--kubeconfig", str(lab.cfg.admin_kubeconfig), *namespaces,
                 "--ports", ",".join(f"{p}/{proto}" for p, proto in probes)]) == 0
    assert f"{len(every) * len(probes)} connections cut, 0 opened" in capsys.readouterr().out

    result = verifier.verify(sets.PolicySet("deny-all-ingress", "impact check", (deny,), tuple(probes), "impact",
                                              (False,)))
    assert result.ok, result.mismatches().to_string()
    agreement = impact.compare_with_observation("deny-all-ingress", predicted, {m.label: m.observed for m in baseline.matrices},
                                                {m.label: m.observed for m in result.matrices})
    _say(agreement.check()["message"])
    assert agreement.agrees, agreement.frame().to_string()

