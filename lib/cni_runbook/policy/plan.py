"""Stage 04 in plan mode: every policy set with its expected truth tables, from the layout's
offline model. Touches nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from .engine import PolicyEngine
from .layout import Layout
from .model import Cluster, normalize_protocol
from .sets import PolicySet, layout_for, policy_sets


@dataclass
class PlannedSet:
    policy_set: PolicySet
    expected: dict[str, pd.DataFrame]  # "TCP/80" -> matrix
    impact: Any = None  # .impact.Impact: what applying it would cut / open (the plan's model)

    def row(self) -> dict[str, Any]:
        blocked = {label: sum(not m.at[s, d] for s in m.index for d in m.columns if s != d)
                   for label, m in self.expected.items()}
        return {
            "set": self.policy_set.name,
            "source": self.policy_set.source,
            "policies": ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                                  for p in self.policy_set.policies),
            "matrices": ", ".join(self.expected),
            "blocked pairs": ", ".join(f"{k}: {v}" for k, v in blocked.items()),
            "keep": ", ".join(p["metadata"]["name"] for p in self.policy_set.kept()),
            "description": self.policy_set.description,
        }


def plan(policy_params: Any) -> tuple[Layout, Cluster, list[PlannedSet]]:
    """Plan mode: the layout, its offline model (synthetic pod IPs from the layout's pod CIDR)
    and every policy set with its expected matrices and its predicted impact (the connections
    applying it would cut or open, :func:`.impact.impact`). Touches nothing."""
    from .impact import impact

    layout = layout_for(policy_params)
    cluster = layout.cluster()
    planned = []
    base: list[dict[str, Any]] = []
    for policy_set in policy_sets(policy_params, cluster, layout):
        engine = PolicyEngine(cluster, base + list(policy_set.policies))
        expected = {f"{normalize_protocol(proto)}/{port}": engine.matrix(port, proto) for port, proto in policy_set.probes}
        planned.append(PlannedSet(policy_set, expected, impact(cluster, base, policy_set.policies,
                                                               ports=policy_set.probes)))
        base += policy_set.kept()
    return layout, cluster, planned
