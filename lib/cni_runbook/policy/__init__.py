"""NetworkPolicy expectation engine and truth-table tooling (stage 04).

Typical use::

    from cni_runbook.policy import Cluster, PolicyEngine, matrix

    cluster = Cluster.from_objects(namespace_dicts, pod_dicts)
    engine = PolicyEngine(cluster, network_policy_dicts)
    expected = engine.matrix(80, "TCP")            # DataFrame, rows = sources
    result = matrix.compare(expected, observed)    # result.summary: "correct 72, incorrect 0"
    engine.explain("x/b", "x/a", 80, "TCP")        # which policy/rule decided

Other policy languages and tools: :mod:`.calico` (Calico projectcalico.org/v3 semantics),
:mod:`.convert` (Calico/K8s -> K8s NetworkPolicy / Antrea, per-policy status),
:mod:`.equivalence` (both sets' matrices over one cluster model, every differing cell),
:mod:`.impact` (connections a policy change cuts or opens), :mod:`.cli` (``cni-runbook policy``).
"""

from . import matrix
from .antrea import AntreaPolicy
from .engine import PolicyEngine, Probe, Verdict, explain, naive_verdict, reachability
from .layout import Layout, default_layout, layout_from_dict
from .model import Cluster, LabelSelector, NetworkPolicy, Pod
from .scenarios import Scenario, builtin_scenarios

__all__ = [
    "AntreaPolicy",
    "Cluster",
    "LabelSelector",
    "Layout",
    "NetworkPolicy",
    "Pod",
    "PolicyEngine",
    "Probe",
    "Scenario",
    "Verdict",
    "builtin_scenarios",
    "default_layout",
    "explain",
    "layout_from_dict",
    "matrix",
    "naive_verdict",
    "reachability",
]
