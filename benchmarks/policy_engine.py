"""Benchmark: expected reachability of all pod pairs, 100 pods x 50 NetworkPolicies, one port.

Compares, in one run on the same generated workload:

* ``PolicyEngine`` - compiles selector matches per policy / rule into bitmasks, then fills
  the 100 x 100 matrix (target: well under a second including compilation);
* the naive per-pair baseline ``naive_verdict`` - walks every policy for every pair, as the
  documentation reads, re-evaluating selectors each time.

It checks that both give the same matrix and prints the timings and the speed-up ratio, for
Kubernetes policies alone and again with Antrea ClusterNetworkPolicies added.

    .venv/bin/python benchmarks/policy_engine.py [--pods 100] [--policies 50] [--antrea 10] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any

from cni_runbook.policy import AntreaPolicy, Cluster, NetworkPolicy, PolicyEngine, Probe, naive_verdict

APPS = ("web", "api", "db", "cache", "queue", "batch")
TIERS = ("front", "back", "data")
TEAMS = ("red", "blue", "green")


def workload(pods: int, policies: int, seed: int) -> tuple[Cluster, list[dict[str, Any]]]:
    """A deterministic cluster of ``pods`` pods in 10 namespaces and ``policies`` policies
    mixing every feature: selectors with matchExpressions, namespace selectors, ipBlocks
    with except, numeric / named / ranged ports, ingress and egress."""
    rng = random.Random(seed)
    namespaces = [f"ns{i}" for i in range(10)]
    ns_objs = [
        {"metadata": {"name": n, "labels": {"team": rng.choice(TEAMS), "env": rng.choice(("prod", "dev"))}}}
        for n in namespaces
    ]
    pod_objs = []
    for i in range(pods):
        pod_objs.append(
            {
                "metadata": {
                    "name": f"p{i}",
                    "namespace": namespaces[i % len(namespaces)],
                    "labels": {
                        "app": rng.choice(APPS),
                        "tier": rng.choice(TIERS),
                        **({"canary": "true"} if rng.random() < 0.2 else {}),
                    },
                },
                "spec": {
                    "containers": [
                        {"ports": [{"name": "http", "containerPort": 80}, {"name": "metrics", "containerPort": 9090}]}
                    ]
                },
                "status": {"podIP": f"10.{i // 250}.{i % 250}.{10 + i % 7}"},
            }
        )

    def pod_selector() -> dict[str, Any]:
        roll = rng.random()
        if roll < 0.2:
            return {}
        if roll < 0.6:
            return {"matchLabels": {"app": rng.choice(APPS)}}
        return {
            "matchExpressions": [
                {"key": "tier", "operator": rng.choice(("In", "NotIn")), "values": rng.sample(TIERS, 2)},
                {"key": "canary", "operator": rng.choice(("Exists", "DoesNotExist"))},
            ]
        }

    def peer() -> dict[str, Any]:
        roll = rng.random()
        if roll < 0.35:
            return {"podSelector": pod_selector()}
        if roll < 0.6:
            return {"namespaceSelector": {"matchLabels": {"team": rng.choice(TEAMS)}}}
        if roll < 0.85:
            return {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": pod_selector()}
        return {"ipBlock": {"cidr": "10.0.0.0/16", "except": [f"10.0.{rng.randrange(250)}.0/24"]}}

    def ports() -> list[dict[str, Any]]:
        roll = rng.random()
        if roll < 0.3:
            return []
        if roll < 0.6:
            return [{"port": rng.choice((80, 443, 9090))}]
        if roll < 0.8:
            return [{"port": rng.choice(("http", "metrics"))}]
        return [{"port": 70, "endPort": rng.choice((79, 85, 100))}]

    def rules() -> list[dict[str, Any]]:
        return [
            {"peers": [peer() for _ in range(rng.randint(0, 3))], "ports": ports()} for _ in range(rng.randint(0, 3))
        ]

    policy_objs = []
    for k in range(policies):
        types = rng.choice((["Ingress"], ["Egress"], ["Ingress", "Egress"]))
        spec: dict[str, Any] = {"podSelector": pod_selector(), "policyTypes": types}
        if "Ingress" in types:
            spec["ingress"] = [{"from": r["peers"], "ports": r["ports"]} for r in rules()]
        if "Egress" in types:
            spec["egress"] = [{"to": r["peers"], "ports": r["ports"]} for r in rules()]
        policy_objs.append({"metadata": {"name": f"pol{k}", "namespace": rng.choice(namespaces)}, "spec": spec})
    return Cluster.from_objects(ns_objs, pod_objs), policy_objs


def antrea_workload(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` ClusterNetworkPolicies spread over securityops, application and baseline,
    with Allow / Drop / Reject / Pass rules."""
    rng = random.Random(seed)
    policies = []
    for k in range(count):
        tier = rng.choice(("securityops", "application", "baseline"))
        actions = ("Allow", "Drop", "Reject") + (() if tier == "baseline" else ("Pass",))
        policies.append(
            {
                "kind": "ClusterNetworkPolicy",
                "metadata": {"name": f"acnp{k}"},
                "spec": {
                    "tier": tier,
                    "priority": k + 1,
                    "appliedTo": [{"podSelector": {"matchLabels": {"app": rng.choice(APPS)}}}],
                    "ingress": [
                        {
                            "action": rng.choice(actions),
                            "from": [{"namespaceSelector": {"matchLabels": {"team": rng.choice(TEAMS)}}}],
                        }
                    ],
                    "egress": [
                        {
                            "action": rng.choice(actions),
                            "to": [{"podSelector": {"matchLabels": {"tier": rng.choice(TIERS)}}}],
                            "ports": [{"port": 80}],
                        }
                    ],
                },
            }
        )
    return policies


def timed_matrix(
    cluster: Cluster, policies: list[Any], antrea: list[Any], port: int, protocol: str, repeat: int
) -> tuple[float, Any]:
    times, matrix = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        matrix = PolicyEngine(cluster, policies, antrea).matrix(port, protocol)
        times.append(time.perf_counter() - start)
    return statistics.median(times), matrix


def timed_naive(
    cluster: Cluster, policies: list[Any], antrea: list[Any], port: int, protocol: str
) -> tuple[float, dict[tuple[str, str], bool]]:
    keys = cluster.pod_keys
    start = time.perf_counter()
    result = {
        (s, d): naive_verdict(cluster, policies, Probe(s, d, port, protocol), antrea)[0].allowed
        for s in keys
        for d in keys
    }
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--antrea", type=int, default=10, help="Antrea ClusterNetworkPolicies in the second run")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the fast engine (median reported)")
    args = parser.parse_args(argv)

    cluster, objects = workload(args.pods, args.policies, args.seed)
    parsed = [NetworkPolicy.from_dict(o) for o in objects]
    antrea = [AntreaPolicy.from_dict(o) for o in antrea_workload(args.antrea, args.seed)]
    port, protocol = 80, "TCP"
    cells = len(cluster.pods) ** 2
    print(f"workload: {len(cluster.pods)} pods, {len(parsed)} NetworkPolicies, {cells} pairs on {protocol}/{port}")

    status = 0
    for label, extra in (("Kubernetes policies", []), (f"+ {len(antrea)} Antrea ClusterNetworkPolicies", antrea)):
        fast, matrix = timed_matrix(cluster, parsed, extra, port, protocol, args.repeat)
        slow, naive = timed_naive(cluster, parsed, extra, port, protocol)
        mismatches = sum(bool(matrix.at[s, d]) != allowed for (s, d), allowed in naive.items())
        allowed = int(matrix.to_numpy(dtype=bool).sum())
        print(f"\n{label}: {allowed} of {cells} pairs allowed")
        print(f"  engine (compile + matrix), median of {args.repeat}: {fast * 1000:8.1f} ms")
        print(f"  naive per-pair baseline:                {slow * 1000:8.1f} ms")
        print(f"  speed-up: {slow / fast:.1f}x; results agree on {cells - mismatches}/{cells} pairs")
        if mismatches:
            print("  ERROR: engine and naive baseline disagree", file=sys.stderr)
            status = 1
        if fast >= 1.0:
            print("  WARNING: engine slower than the 1 s target", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
