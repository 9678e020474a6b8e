"""Fixtures for end-to-end tests against the real local lab (root only)."""

from __future__ import annotations

import os

import pytest

from cni_runbook.lab import cluster
from cni_runbook.lab.config import LabConfig
from cni_runbook.lab.sysutil import missing_prerequisites


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: end-to-end test against the real local lab (root)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="module")
def lab_cluster():
    """A freshly started lab cluster (no CNI), torn down after the module."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, mounts, cgroups)")
    missing = missing_prerequisites(cluster.components_commands())
    if missing:
        pytest.skip("lab prerequisites missing (.ci/run installs them): " + "; ".join(missing))
    cfg = LabConfig()
    if cluster.phase(cfg) != "down":
        print("\n[lab] a lab is already running: taking it down for a fresh start")
        cluster.down(cfg)
    cluster.up(cfg, progress=lambda m: print(m, flush=True))
    yield cfg
    if cluster.phase(cfg) != "down":
        cluster.down(cfg)
