"""Change impact (policy/impact.py) and the ``cni-runbook policy`` commands, offline.

The live path (``live_impact`` over the API) runs in tests/lab/test_policy_convert_impact.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cni_runbook.cli import main
from cni_runbook.policy import default_layout
from cni_runbook.policy.impact import apply_change, impact, plan_frame

CLUSTER = default_layout().cluster()
SAMPLE = Path(__file__).parent / "data" / "calico" / "sample.yaml"


def np_(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


DENY_X = np_("deny-all", "x", podSelector={}, policyTypes=["Ingress"])
ALLOW_Y = np_("allow-y", "x", podSelector={}, ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])


def test_deny_all_cuts_every_connection_into_the_namespace() -> None:
    result = impact(CLUSTER, [], [DENY_X], ports=[(80, "TCP")])
    assert len(result.opened) == 0
    assert len(result.cut) == 24  # 9 sources x 3 pods of x, loopback left out
    assert result.cells("cut", 80) == {(s, d) for s in CLUSTER.pod_keys for d in ("x/a", "x/b", "x/c") if s != d}
    assert all("deny-all" in r for r in result.cut["rule after"])
    grouped = result.grouped()
    assert set(grouped["from namespace"]) == {"x", "y", "z"} and set(grouped["to namespace"]) == {"x"}
    assert grouped["connections"].sum() == 24
    assert "24 connections cut, 0 opened" in result.summary


def test_changing_a_policy_opens_what_the_new_version_allows() -> None:
    # current: deny-all in x; proposed: the same name now allows from y -> y opens
    changed = np_("deny-all", "x", podSelector={}, ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])
    result = impact(CLUSTER, [DENY_X], [changed], ports=[(80, "TCP")])
    assert len(result.cut) == 0
    assert result.cells("opened", 80) == {(s, d) for s in ("y/a", "y/b", "y/c") for d in ("x/a", "x/b", "x/c")}
    assert all("allowed by x/deny-all" in r for r in result.opened["rule after"])


def test_removing_a_policy_and_default_ports() -> None:
    result = impact(CLUSTER, [DENY_X, ALLOW_Y], removed=["NetworkPolicy/x/allow-y"])
    # every port the pods declare (80, 81 on TCP/UDP/SCTP) plus TCP/8080 (no policy mentions one)
    assert (8080, "TCP") in result.ports and (81, "UDP") in result.ports
    assert result.cells("cut", 81, "UDP") == {(s, d) for s in ("y/a", "y/b", "y/c") for d in ("x/a", "x/b", "x/c")}
    assert apply_change([DENY_X, ALLOW_Y], removed=[ALLOW_Y]) == [DENY_X]


def test_plan_frame_is_small_and_display_ready() -> None:
    frame = plan_frame(impact(CLUSTER, [], [DENY_X], ports=[(80, "TCP")]))
    assert list(frame.columns) == ["change", "from", "to", "connections", "ports", "rule"]
    assert set(frame["to"]) == {"x/a", "x/b", "x/c"}  # the app is the pod label here
    assert plan_frame(impact(CLUSTER, [], [], ports=[(80, "TCP")]))["change"].tolist() == ["none"]


def test_calico_objects_are_refused_with_a_hint() -> None:
    calico = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "c", "namespace": "x"}}
    with pytest.raises(ValueError, match="policy convert"):
        impact(CLUSTER, [], [calico])


def test_cli_convert_check_prints_statuses_and_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "converted.yaml"
    assert main(["policy", "convert", str(SAMPLE), "--out", str(out), "--check"]) == 1  # lossy: cells differ
    text = capsys.readouterr().out
    assert re.search(r"calico cnp x/contains\s+unsupported", text)
    assert re.search(r"calico cnp x/not-selector\s+exact\s+Kubernetes NetworkPolicy", text)
    assert re.search(r"calico cnp x/allow-from-y\s+exact\s+Kubernetes NetworkPolicy", text)
    assert "cells differ" in text
    objects = [o for o in yaml.safe_load_all(out.read_text()) if o]
    assert objects[0]["kind"] == "Tier"
    exact_only = tmp_path / "exact.yaml"
    docs = [o for o in yaml.safe_load_all(SAMPLE.read_text()) if o]
    exact_only.write_text(yaml.safe_dump_all(
        [o for o in docs if o["kind"] == "Tier" or o["metadata"].get("annotations", {}).get("expect") == "exact"]))
    assert main(["policy", "convert", str(exact_only), "--check"]) == 0
    assert "proven for this cluster model" in capsys.readouterr().out


def test_cli_bad_input_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n")
    assert main(["policy", "convert", str(bad)]) == 2
    assert "metadata.namespace" in capsys.readouterr().err
    assert main(["policy", "impact"]) == 2
    assert "give proposed policy files" in capsys.readouterr().err
    policy = tmp_path / "deny.yaml"
    policy.write_text(yaml.safe_dump(DENY_X))
    assert main(["policy", "impact", str(policy), "--kubeconfig", str(tmp_path / "none")]) == 2
    assert "kubeconfig" in capsys.readouterr().err


# --------------------------------------------------------------------------- stage 04: predicted vs observed


def _table(value: bool, flip: tuple[str, str] | None = None, unknown: tuple[str, str] | None = None):
    import pandas as pd

    keys = CLUSTER.pod_keys
    frame = pd.DataFrame([[value] * len(keys) for _ in keys], index=keys, columns=keys, dtype="boolean")
    if flip:
        frame.at[flip] = not value
    if unknown:
        frame.at[unknown] = pd.NA
    return frame


def test_prediction_agrees_with_an_observation_that_cuts_the_same_cells() -> None:
    from cni_runbook.policy import PolicyEngine
    from cni_runbook.policy.impact import compare_with_observation, observed_change

    predicted = impact(CLUSTER, [], [DENY_X], ports=[(80, "TCP")])
    observed = PolicyEngine(CLUSTER, [DENY_X]).matrix(80, "TCP")  # what a correct CNI shows
    before = {"TCP/80": _table(True)}
    check = compare_with_observation("deny-all", predicted, before, {"TCP/80": observed})
    assert check.agrees and check.check() == {
        "name": "impact deny-all", "status": "passed",
        "message": "predicted 24 cut, 0 opened before the apply; the verification observed the same"}
    # one cell the CNI did not cut, one it could not tell: they differ, and the check says so
    wrong = observed.copy()
    wrong.at["y/a", "x/a"] = True
    failed = compare_with_observation("deny-all", predicted, before, {"TCP/80": wrong})
    assert failed.status == "failed" and "observed 23 cut" in failed.check()["message"]
    cut, opened, unknown = observed_change(_table(True), _table(True, flip=("y/a", "x/a"), unknown=("y/b", "x/b")))
    assert (cut, opened, unknown) == ({("y/a", "x/a")}, set(), 1)
    assert not compare_with_observation("p", predicted, before, {}).agrees  # a matrix not observed


def test_stage04_plan_predicts_each_sets_impact() -> None:
    from cni_runbook.params.schema import Params
    from cni_runbook.policy import plan as policy_plan

    _, cluster, planned = policy_plan.plan(
        Params(policy={"scenarios": ["default-deny-ingress", "namespace-isolation"]}).policy)
    for item in planned:
        for label, expected in item.expected.items():
            protocol, port = label.split("/")
            blocked = {(s, d) for s in expected.index for d in expected.columns if s != d and not expected.at[s, d]}
            assert item.impact.cells("cut", int(port), protocol) == blocked  # everything reachable before
        assert item.impact.opened.empty and not plan_frame(item.impact).empty
