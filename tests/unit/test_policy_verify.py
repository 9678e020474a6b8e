"""Stage 04 verification logic against a simulated CNI (no cluster): the engine says what a
correct CNI does; the fakes below apply policies with a delay, or get one rule kind wrong."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cni_runbook.kube.apply import Applied
from cni_runbook.params.schema import Params
from cni_runbook.policy import PolicyEngine, default_layout
from cni_runbook.policy import matrix as M
from cni_runbook.policy import sets, tables
from cni_runbook.policy import plan as policy_plan
from cni_runbook.policy import verify as V
from cni_runbook.policy.workloads import Deployment, pod_object, schedulable_nodes, workload_objects

LAYOUT = default_layout(protocols=("TCP", "UDP"))
CLUSTER = LAYOUT.cluster()
NODES = {p.key: f"node{i % 3}" for i, p in enumerate(CLUSTER.pods)}


class FakeCni:
    """Applies policies ``delay`` seconds after the API call; ``ignore`` drops a kind of rule."""

    def __init__(self, delay: float = 0.0, ignore_named_ports: bool = False, keep_after_delete: bool = False):
        self.delay, self.ignore_named_ports, self.keep_after_delete = delay, ignore_named_ports, keep_after_delete
        self.active: dict[str, tuple[float, dict]] = {}  # key -> (effective time, policy)
        self.records: dict[Path, list[str]] = {}
        self.probes = 0

    # Applier
    def apply(self, objects: list[dict], record: Path | None = None, rollback_on_error: bool = True) -> list[Applied]:
        out = []
        for obj in objects:
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            self.active[key] = (time.monotonic() + self.delay, obj)
            self.records.setdefault(record, []).append(key)
            out.append(Applied(obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"], "created"))
        return out

    def rollback(self, kube: Any, record: Path, progress: Any = None) -> list[Applied]:
        if not self.keep_after_delete:
            for key in self.records.pop(record, []):
                self.active.pop(key, None)
        return []

    def _policies(self) -> list[dict]:
        now = time.monotonic()
        found = [p for t, p in self.active.values() if t <= now]
        if self.ignore_named_ports:  # a CNI that treats a named-port rule as "all ports"
            found = yaml.safe_load(yaml.safe_dump(found).replace("port: serve-81-tcp", "port: null"))
            for p in found:
                for rule in p["spec"].get("ingress") or ():
                    for port in rule.get("ports") or ():
                        if port.get("port") is None:
                            port.pop("port")
        return found

    def run_probes(self, kube: Any, probes: list, *, timeout_s: float, attempts: int, concurrency: int,
                   container: str | None = None, progress: Any = None, until: list | None = None,
                   until_s: float = 0.0) -> list:
        """The engine's verdicts under the policies in effect; with ``until``, a cell is asked
        again (50 ms apart) until it shows its wanted value or ``until_s`` has passed."""
        by_ip = {str(p.ips[0]): p.key for p in CLUSTER.pods}
        started = time.monotonic()
        seen: list[bool | None] = [None] * len(probes)
        tries, waited = [0] * len(probes), [0.0] * len(probes)
        while True:
            engine = PolicyEngine(CLUSTER, self._policies())
            for i, p in enumerate(probes):
                if tries[i] and (until is None or seen[i] is until[i]):
                    continue
                seen[i] = engine.verdict(p.src, by_ip[p.target], p.port, p.protocol).allowed
                tries[i] += 1
                waited[i] = (time.monotonic() - started) * 1000
                self.probes += 1
            if until is None or all(a is b for a, b in zip(seen, until)) or time.monotonic() - started >= until_s:
                break
            time.sleep(0.05)
        return [type("R", (), {"ok": ok, "attempts": n, "waited_ms": w if until is not None else None})()
                for ok, n, w in zip(seen, tries, waited)]


def verifier(cni: FakeCni, tmp_path: Path, **kw: Any) -> V.Verifier:
    deployment = Deployment(LAYOUT, tmp_path / "w.jsonl", [], CLUSTER, NODES)
    kw.setdefault("enforcement_timeout_s", 3.0)
    return V.Verifier(None, deployment, tmp_path, probe_fn=cni.run_probes, applier=cni,  # type: ignore[arg-type]
                      rollback_fn=cni.rollback, **kw)


@pytest.mark.parametrize("scenario", [s.name for s in sets.select_scenarios(["all"], CLUSTER, LAYOUT)])
def test_every_builtin_scenario_passes_on_a_correct_cni(scenario: str, tmp_path: Path) -> None:
    cni = FakeCni()
    v = verifier(cni, tmp_path)
    assert v.baseline().ok
    (policy_set,) = sets.select_scenarios([scenario], CLUSTER, LAYOUT)
    result = v.verify(policy_set)
    assert result.status == "passed", result.row()
    assert [m.comparison.summary for m in result.matrices] == ["correct 72, incorrect 0"] * 2
    assert result.restored_s is not None and not cni.active  # removed, baseline back


def test_enforcement_latency_is_measured(tmp_path: Path) -> None:
    cni = FakeCni(delay=0.6)
    v = verifier(cni, tmp_path)
    (deny,) = sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)
    result = v.verify(deny)
    assert result.ok
    assert 0.6 <= result.latency_s < 1.5
    assert result.converged_s >= result.latency_s


def test_the_round_that_shows_enforcement_is_the_first_full_pass(tmp_path: Path) -> None:
    """A blocked probe costs its whole timeout: the verification does not probe every cell once
    more after the round that showed the policy enforced (that round probed them all)."""
    cni = FakeCni()  # enforced at once: one enforcement round
    v = verifier(cni, tmp_path)
    (deny,) = sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)
    result = v.verify(deny)
    assert result.ok and result.latency_s is not None
    changed = 48  # x's 3 pods from the 8 others, per port: the restore round probes these
    assert cni.probes == result.probes_run == 144 + changed  # 81 cells minus 9 self pairs, 2 ports


def test_a_cell_wrong_in_the_enforcement_round_is_probed_again(tmp_path: Path) -> None:
    cni = FakeCni(delay=0.3)
    v = verifier(cni, tmp_path)
    (deny,) = sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)
    result = v.verify(deny)
    assert result.ok and result.latency_s >= 0.3
    assert result.probes_run > 144 + 48  # rounds before the policy took effect probed the whole matrices


def test_policy_never_enforced_fails_with_a_message(tmp_path: Path) -> None:
    cni = FakeCni(delay=30)
    v = verifier(cni, tmp_path, enforcement_timeout_s=0.5, restore_timeout_s=0.5)
    (deny,) = sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)
    result = v.verify(deny)
    assert result.status == "failed"
    assert result.latency_s is None and "not enforced within" in result.messages[0]
    assert result.incorrect == 48  # 24 pairs into x per port


def test_wrong_cni_mismatches_are_explained(tmp_path: Path) -> None:
    cni = FakeCni(ignore_named_ports=True)
    v = verifier(cni, tmp_path, enforcement_timeout_s=0.5)
    (named,) = sets.select_scenarios(["named-port"], CLUSTER, LAYOUT)
    result = v.verify(named)
    assert result.status == "failed"
    by_port = {m.label: m.comparison for m in result.matrices}
    assert by_port["TCP/81"].summary == "correct 72, incorrect 0"
    assert by_port["TCP/80"].incorrect == 24
    mismatches = result.mismatches()
    assert set(mismatches["matrix"]) == {"TCP/80"}
    row = mismatches.iloc[0]
    assert row["expected"] == "X" and row["observed"] == "."
    assert "x/allow-named-port" in row["explanation"]


def test_policies_left_behind_are_reported(tmp_path: Path) -> None:
    cni = FakeCni(keep_after_delete=True)
    v = verifier(cni, tmp_path, restore_timeout_s=0.5)
    (deny,) = sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)
    result = v.verify(deny)
    assert result.status == "failed" and "baseline did not return" in result.messages[-1]


def test_baseline_failure_stops_with_the_failing_pairs(tmp_path: Path) -> None:
    cni = FakeCni()
    cni.apply([sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)[0].policies[0]], tmp_path / "r")
    v = verifier(cni, tmp_path, enforcement_timeout_s=0.3)
    with pytest.raises(V.BaselineError, match=r"baseline: correct 192, incorrect 96 .*TCP/80 x/a -> x/b observed X"):
        v.baseline()


def test_keep_policies_stay_and_shape_later_expectations(tmp_path: Path) -> None:
    keep = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-z", "namespace": "z", "annotations": {sets.KEEP_ANNOTATION: "true"}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    other = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "deny-y", "namespace": "y"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    path = tmp_path / "ops.yaml"
    path.write_text(yaml.safe_dump_all([keep, other]))
    policy_set = sets.load_policy_file(path, LAYOUT)
    assert policy_set.keep == (True, False)
    cni = FakeCni()
    v = verifier(cni, tmp_path)
    result = v.verify(policy_set)
    assert result.ok and result.kept == ["z/deny-z"]
    assert list(cni.active) == ["z/deny-z"]
    (deny_x,) = sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)
    after = v.verify(deny_x)  # expectation includes the kept z policy
    assert after.ok
    assert not bool(after.matrices[0].expected.at["x/a", "z/b"])


def test_policy_file_problems_name_file_and_object(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"}, "spec": {}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "prod"},
         "spec": {"podSelector": {}}},
    ]))
    with pytest.raises(sets.PolicyFileError) as err:
        sets.load_policy_file(path, LAYOUT)
    text = str(err.value)
    assert "object 1 (ConfigMap c): only networking.k8s.io/v1 NetworkPolicy" in text
    assert "object 2 (NetworkPolicy n): set metadata.namespace" in text
    assert "namespace 'prod' is not in the test layout" in text


def test_scenario_names_in_order_without_repeats_and_unknown() -> None:
    names = [s.name for s in sets.select_scenarios(["namespace-isolation", "default-deny-ingress", "namespace-isolation"],
                                                CLUSTER, LAYOUT)]
    assert names == ["namespace-isolation", "default-deny-ingress"]
    assert len(sets.select_scenarios(["all"], CLUSTER, LAYOUT)) == 6
    with pytest.raises(ValueError, match="unknown built-in scenario 'nope'; known: all, default-deny-ingress"):
        sets.select_scenarios(["nope"], CLUSTER, LAYOUT)


def test_plan_renders_every_set_with_expected_matrices() -> None:
    params = Params(policy={"scenarios": ["all"]})
    layout, cluster, planned = policy_plan.plan(params.policy)
    assert [p.policy_set.name for p in planned][0] == "default-deny-ingress"
    deny = planned[0]
    assert set(deny.expected) == {"TCP/80", "TCP/81"}
    assert deny.row()["blocked pairs"] == "TCP/80: 24, TCP/81: 24"
    assert "kind: NetworkPolicy" in deny.policy_set.yaml()


def test_operator_layout_from_params() -> None:
    params = Params(policy={"layout": {"ports": [8080], "protocols": ["TCP"], "namespaces": {
        "shop": {"labels": {"team": "web"}, "pods": ["front", "back"]}, "ops": {"pods": ["probe"]}}},
        "scenarios": ["default-deny"]})
    layout = sets.layout_for(params.policy)
    assert [p.key for p in layout.pods] == ["shop/front", "shop/back", "ops/probe"]
    assert sets.layout_probes(layout) == ((8080, "TCP"),)


def test_sentinels_cover_node_pairs_first() -> None:
    cells = [("x/a", "x/b"), ("x/a", "x/c"), ("y/a", "x/b"), ("x/b", "x/c")]
    nodes = {"x/a": "n1", "x/b": "n2", "x/c": "n2", "y/a": "n3"}
    assert V.pick_sentinels(cells, nodes, limit=3) == [("x/a", "x/b"), ("y/a", "x/b"), ("x/b", "x/c")]


def test_workloads_serve_every_layout_port_and_spread_over_nodes() -> None:
    objects = workload_objects(LAYOUT, "img", ["n1", "n2", "n3"])
    pods = [o for o in objects if o["kind"] == "Pod"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["x", "y", "z"]
    assert all(o["metadata"]["labels"] == {"ns": o["metadata"]["name"]} for o in objects if o["kind"] == "Namespace")
    x_nodes = [p["spec"]["nodeSelector"]["kubernetes.io/hostname"] for p in pods if p["metadata"]["namespace"] == "x"]
    assert sorted(x_nodes) == ["n1", "n2", "n3"]
    containers = pods[0]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["netexec", "netexec-81"]
    assert containers[0]["args"] == ["netexec", "--http-port=80", "--udp-port=80", "--sctp-port=-1"]
    assert [p["name"] for p in containers[1]["ports"]] == ["serve-81-tcp", "serve-81-udp"]
    tcp_only = pod_object(default_layout(protocols=("TCP",)).pods[0], "img")
    assert tcp_only["spec"]["containers"][0]["args"][2] == "--udp-port=-1" and "nodeSelector" not in tcp_only["spec"]


def test_schedulable_nodes_skip_tainted_and_not_ready() -> None:
    ready = {"type": "Ready", "status": "True"}
    nodes = [
        {"metadata": {"name": "b"}, "spec": {}, "status": {"conditions": [ready]}},
        {"metadata": {"name": "a"}, "spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]},
         "status": {"conditions": [ready]}},
        {"metadata": {"name": "cp"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
         "status": {"conditions": [ready]}},
        {"metadata": {"name": "down"}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
    ]
    assert schedulable_nodes(nodes) == ["a", "b"]


def test_styled_matrix_and_numbers() -> None:
    expected = PolicyEngine(CLUSTER, sets.select_scenarios(["default-deny-ingress"], CLUSTER, LAYOUT)[0].policies).matrix(80)
    shown = tables.styled_matrix(expected, "expected")
    assert "expected" in shown.html and "#f8d7da" in shown.html
    assert repr(shown) == ""  # batch logs: expected/observed tables only in the notebook
    clean = tables.styled_matrix(M.compare(expected, expected).diff, "diff", diff=True)
    assert repr(clean) == "diff: every pair as expected"
    wrong = expected.copy()
    wrong.at["y/a", "x/a"] = True
    bad = tables.styled_matrix(M.compare(expected, wrong).diff, "diff", diff=True)
    assert repr(bad).splitlines()[0] == "diff" and any(line.startswith("y/a") and "X" in line for line in repr(bad).splitlines())
    numbers = tables.as_numbers(expected)
    assert numbers.at["y/a", "x/a"] == 0.0 and numbers.at["x/a", "y/a"] == 1.0
    diff = M.compare(expected, expected).diff
    assert tables.diff_numbers(diff).at["x/a", "y/a"] == 1.0


def test_a_cell_lost_once_is_probed_again_even_after_a_slow_first_pass(tmp_path: Path) -> None:
    """On a busy machine the first pass over a big matrix can outlast the settle deadline; a cell
    whose one probe was lost must still be probed again before it counts as a mismatch."""
    cni = FakeCni()
    passes: list[int] = []

    def slow_then_lossy(kube: Any, probes: list, **kw: Any) -> list:
        results = cni.run_probes(kube, probes, **kw)
        if not passes:
            time.sleep(0.4)  # longer than the whole settle time below
            results[0] = type("R", (), {"ok": False, "reason": "timeout: no answer within 1s"})()
        passes.append(len(probes))
        return results

    v = verifier(cni, tmp_path, enforcement_timeout_s=0.2)
    v.probe_fn = slow_then_lossy
    result = v.baseline()
    assert result.ok and result.summary == "correct 288, incorrect 0"
    assert passes == [144, 144, 1]  # TCP, UDP, then exactly the lost cell again


def test_a_baseline_mismatch_names_the_probe_failure(tmp_path: Path) -> None:
    cni = FakeCni()

    def lossy(kube: Any, probes: list, **kw: Any) -> list:
        results = cni.run_probes(kube, probes, **kw)
        return [type("R", (), {"ok": False, "reason": "connection refused"})() if (p.src, p.target) == ("x/a", v.ips["y/a"])
                and p.port == 80 else r for p, r in zip(probes, results)]

    v = verifier(cni, tmp_path, enforcement_timeout_s=0.2)
    v.probe_fn = lossy
    with pytest.raises(V.BaselineError, match=r"x/a -> y/a observed X \(connection refused\)"):
        v.baseline()
