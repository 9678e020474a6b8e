"""Fixtures for end-to-end tests against the real local lab (root only).

One lab serves the whole test session (set ``CNI_RUNBOOK_LAB_INDEX`` to use another
instance than 0). Test modules ask for the state they need:

- ``lab.fresh()``: a newly started cluster without a CNI (what Kubespray leaves with
  ``kube_network_plugin: none``); restarts the lab if it is up;
- ``lab.with_cni()``: the lab with its CNI installed and the network working; reuses a
  running lab when it already has it.

The session ends with ``lab down``.
"""

from __future__ import annotations

import os

import pytest

from cni_runbook.kube import Kube
from cni_runbook.lab import cluster
from cni_runbook.lab.config import LabConfig
from cni_runbook.lab.sysutil import missing_prerequisites


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: end-to-end test against the real local lab (root)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


def _say(message: str) -> None:
    print(message, flush=True)


class LabSession:
    def __init__(self) -> None:
        self.cfg = LabConfig()
        self.has_cni = False

    def fresh(self, cni: str = "kube-router") -> LabConfig:
        """A newly started cluster without a CNI, prepared for ``cni`` (kube-router or flannel)."""
        if cluster.phase(self.cfg) != "down":
            cluster.down(self.cfg, progress=_say)
        cluster.up(self.cfg, progress=_say, cni=cni)
        self.has_cni = False
        return self.cfg

    def with_cni(self) -> LabConfig:
        if cluster.phase(self.cfg) != "cluster":
            self.fresh()
        if not self.has_cni:
            cluster.install_cni(self.cfg, progress=_say)
            self.has_cni = True
        return self.cfg

    def kube(self) -> Kube:
        return Kube.from_kubeconfig(self.cfg.admin_kubeconfig)


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, mounts, cgroups)")
    missing = missing_prerequisites(cluster.components_commands())
    if missing:
        pytest.skip("lab prerequisites missing (.ci/run installs them): " + "; ".join(missing))
    session = LabSession()
    yield session
    if cluster.phase(session.cfg) != "down":
        cluster.down(session.cfg, progress=_say)


@pytest.fixture(scope="module")
def lab_cluster(lab):
    """A freshly started lab cluster without a CNI, for this module."""
    return lab.fresh()


@pytest.fixture(scope="module")
def kube(lab):
    """A client of the lab with its CNI installed and the network working, for this module (a module
    that needs another state of the lab defines its own ``kube``)."""
    lab.with_cni()
    k = lab.kube()
    yield k
    k.close()


#: stage 04's truth-table layout (x, y, z by a, b, c; ports 80, 81) over TCP only: on this
#: shared machine UDP baseline probes have come back blocked with no policy at all (139 of 288
#: cells), a probing matter outside the policy tests
TCP_LAYOUT = {"ports": [80, 81], "protocols": ["TCP"],
              "namespaces": {ns: {"labels": {"ns": ns}, "pods": ["a", "b", "c"]} for ns in ("x", "y", "z")}}


@pytest.fixture
def tcp_layout():
    """TCP_LAYOUT for a test module (``from conftest import`` would find whichever conftest
    module pytest imported first: tests/unit/conftest.py in a full run)."""
    return TCP_LAYOUT


@pytest.fixture(scope="module")
def policy_layout(kube, tmp_path_factory):
    """Stage 04's layout deployed on the lab and its baseline probed: (layout, deployment,
    verifier, baseline); removed after the module."""
    from cni_runbook.params.schema import Params
    from cni_runbook.policy import sets, verify, workloads
    from cni_runbook.provision import lab as lab_target

    params = Params(policy={"enforcement_timeout_s": 45, "layout": TCP_LAYOUT})
    layout = sets.layout_for(params.policy)
    record = tmp_path_factory.mktemp("policy-layout")
    image = workloads.probe_image(params, lab_target.target(require_up=False))
    deployment = workloads.deploy(kube, layout, image, record / "workloads.jsonl", progress=_say)
    try:
        verifier = verify.Verifier(kube, deployment, record, enforcement_timeout_s=45, progress=_say)
        baseline = verifier.baseline()
        _say(f"baseline: {baseline.summary}")
        yield layout, deployment, verifier, baseline
    finally:
        workloads.remove(kube, deployment, progress=_say)
