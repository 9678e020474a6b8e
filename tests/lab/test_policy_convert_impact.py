"""Issue 15 on the real lab (kube-router enforces Kubernetes NetworkPolicy):

* the exact Kubernetes output of converting Calico policies (from the sample set) is proven
  equivalent on the live pods, applied, and verified by stage 04's truth tables;
* ``policy impact`` of a deny-all, computed over the live cluster before it is applied, lists
  the cut connections, and the verification after apply observes exactly those cuts.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from cni_runbook.cli import main
from cni_runbook.params.schema import Params
from cni_runbook.policy import equivalence, impact, scenarios, sets, verify, workloads
from cni_runbook.policy.convert import EXACT, convert
from cni_runbook.provision import lab as lab_target

pytestmark = pytest.mark.lab

SAMPLE = Path(__file__).parents[1] / "unit" / "data" / "calico" / "sample.yaml"
# Calico policies of the sample set whose conversion is an exact Kubernetes NetworkPolicy and
# whose meaning does not depend on the synthetic pod IPs
LIVE = {"allow-from-y", "same-ns-not-c", "port-range", "not-ports", "named-port", "k8s-allow-z"}


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def kube(lab):
    lab.with_cni()
    k = lab.kube()
    yield k
    k.close()


@pytest.fixture(scope="module")
def deployed(kube, tmp_path_factory):
    # TCP only: on this shared machine the UDP baseline probes came back blocked (139 of 288
    # cells, all UDP) with no policy at all - a probing matter outside this test
    layout = {"ports": [80, 81], "protocols": ["TCP"],
              "namespaces": {ns: {"labels": {"ns": ns}, "pods": ["a", "b", "c"]} for ns in ("x", "y", "z")}}
    params = Params(policy={"enforcement_timeout_s": 45, "layout": layout})
    layout = sets.layout_for(params.policy)
    record = tmp_path_factory.mktemp("policy-issue15")
    image = workloads.probe_image(params, lab_target.target(require_up=False))
    deployment = workloads.deploy(kube, layout, image, record / "workloads.jsonl", progress=_say)
    try:
        verifier = verify.Verifier(kube, deployment, record, enforcement_timeout_s=45, progress=_say)
        baseline = verifier.baseline()
        _say(f"baseline: {baseline.summary}")
        yield layout, deployment, verifier, baseline
    finally:
        workloads.remove(kube, deployment, progress=_say)


def test_exact_k8s_conversion_is_proven_and_verified_live(deployed):
    layout, deployment, verifier, _ = deployed
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


def test_impact_of_deny_all_matches_what_the_verification_observes(deployed, lab, tmp_path, capsys):
    layout, deployment, verifier, baseline = deployed
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
    before = {m.label: m.observed for m in baseline.matrices}
    for m in result.matrices:
        was = before[m.label]
        observed_cut = {(s, d) for s in m.observed.index for d in m.observed.columns
                        if s != d and bool(was.at[s, d]) and not bool(m.observed.at[s, d])}
        assert observed_cut == predicted.cells("cut", m.port, m.protocol), m.label
