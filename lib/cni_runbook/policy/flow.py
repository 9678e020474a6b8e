"""Stage 04's policy part from start to end: deploy the layout, probe the baseline, verify
every policy set, remove the layout (what this run created, nothing else)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kube import Kube
from .layout import Layout
from .results import SetResult
from .sets import PolicySet, layout_for, policy_sets
from .verify import BaselineError, Verifier
from .workloads import Deployment

Progress = Callable[[str], None]


@dataclass
class PolicyRun:
    """Everything :func:`run` did: the deployment, the baseline, one result per policy set."""

    layout: Layout
    deployment: Deployment | None = None
    baseline: SetResult | None = None
    results: list[SetResult] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    sets: list[PolicySet] = field(default_factory=list)  # as verified (with the deployed pods' IPs)

    @property
    def ok(self) -> bool:
        return not self.error and self.baseline is not None and all(r.ok for r in self.results)

    def impact_checks(self) -> list[Any]:
        """Each verified set's impact predicted over the deployed pods before its apply
        (:func:`.impact.impact`: the policies kept so far -> plus the set) against what the
        verification observed (baseline -> the set's matrices); see :class:`.impact.ImpactCheck`."""
        from .impact import ImpactCheck, compare_with_observation, impact

        if self.deployment is None or self.baseline is None:
            return []
        before = {m.label: m.observed for m in self.baseline.matrices}
        base: list[dict[str, Any]] = []
        out = []
        for policy_set, result in zip(self.sets, self.results, strict=False):
            predicted = impact(self.deployment.cluster, base, policy_set.policies, ports=policy_set.probes)
            if base:
                out.append(ImpactCheck(policy_set.name, predicted, compared=False,
                                       note="not compared: policies kept by an earlier set changed the starting "
                                            "point, which was not probed on its own"))
            else:
                out.append(compare_with_observation(policy_set.name, predicted, before,
                                                    {m.label: m.observed for m in result.matrices}))
            base += policy_set.kept()
        return out

    def placement(self) -> list[dict[str, str]]:
        """Where each layout pod ran, with its IP."""
        if self.deployment is None:
            return []
        return [{"pod": p.key, "node": self.deployment.nodes.get(p.key, ""), "ip": ", ".join(map(str, p.ips))}
                for p in self.deployment.cluster.pods]

    def checks(self) -> list[dict[str, Any]]:
        out = []
        if self.error:
            out.append({"name": "policy baseline", "status": "failed", "message": self.error})
        elif self.baseline is not None:
            out.append({"name": "policy baseline", "status": "passed",
                        "message": f"{self.baseline.summary} (no test policy)", "time_s": round(self.baseline.seconds, 2)})
        return out + [r.check() for r in self.results]

    @property
    def summary(self) -> str:
        if self.error:
            return self.error.split(" - ")[0]
        passed = sum(r.ok for r in self.results)
        correct, incorrect = sum(r.correct for r in self.results), sum(r.incorrect for r in self.results)
        latencies = [r.latency_s for r in self.results if r.latency_s is not None]
        text = f"policy: {passed}/{len(self.results)} sets as expected (correct {correct}, incorrect {incorrect})"
        return text + (f", enforced within {max(latencies):.1f}s" if latencies else "")


def run(
    kube: Kube,
    policy_params: Any,
    image: str,
    record_dir: Path,
    *,
    concurrency: int = 9,
    progress: Progress | None = None,
) -> PolicyRun:
    """Deploy the layout, probe the baseline, verify every policy set, remove the layout.

    The operator's files are checked against the layout before anything is deployed; the
    layout is removed even when a step fails (what this run created, nothing else)."""
    from . import workloads

    say = progress or (lambda _m: None)
    started = time.monotonic()
    layout = layout_for(policy_params)
    policy_sets(policy_params, layout.cluster(), layout)  # fail on bad files before touching anything
    result = PolicyRun(layout)
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    try:
        say(f"deploying the layout: {len(layout.namespaces)} namespaces, {len(layout.pods)} pods")
        result.deployment = workloads.deploy(kube, layout, image, record_dir / "workloads.jsonl", progress=say)
        sets = policy_sets(policy_params, result.deployment.cluster, layout)  # with the real pod IPs
        result.sets = list(sets)
        verifier = Verifier(kube, result.deployment, record_dir, probe_timeout_s=policy_params.probe_timeout_s,
                            enforcement_timeout_s=policy_params.enforcement_timeout_s, concurrency=concurrency,
                            progress=say)
        # the baseline covers the matrices the sets compare (built-in sets probe TCP only; a
        # set from a file probes every port and protocol of the layout)
        compared = list(dict.fromkeys(pp for policy_set in sets for pp in policy_set.probes))
        try:
            result.baseline = verifier.baseline(compared or None)
        except BaselineError as exc:
            result.error = str(exc)
            return result
        say(f"baseline: {result.baseline.summary}")
        for number, policy_set in enumerate(sets, 1):
            say(f"policy set {number} of {len(sets)}, {policy_set.name}: {policy_set.description}")
            result.results.append(verifier.verify(policy_set))
        result.kept = list(verifier.kept)
    finally:
        if result.deployment is not None:
            created = set(result.deployment.created_namespaces)
            lost = [k for k in verifier.kept if k.split("/")[0] in created] if "verifier" in locals() else []
            if lost:
                say(f"note: kept policies {', '.join(lost)} live in namespaces this run created and go with them")
            say("removing the layout")
            result.removed = [a.ref for a in workloads.remove(kube, result.deployment, progress=say)]
        result.seconds = time.monotonic() - started
    return result
