"""Which marked objects count as leftovers of an interrupted run (kube/leftovers.find), on a
thin stand-in for the API's list calls (a test double: the lab tests run the real thing)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import kubernetes.client

from cni_runbook.kube import leftovers
from cni_runbook.kube.leftovers import ROLE_ANNOTATION


def _obj(name: str, namespace: str | None = None, role: str = "", deleting: bool = False):
    meta = NS(name=name, namespace=namespace, annotations={ROLE_ANNOTATION: role} if role else None,
              deletion_timestamp="2026-12-02T07:00:00Z" if deleting else None)
    return NS(metadata=meta)


class _Kube:
    """Double: the three list calls find() makes."""

    def __init__(self, namespaces, pods):
        self.api = None
        self.core = NS(list_namespace=lambda: NS(items=namespaces),
                       list_pod_for_all_namespaces=lambda: NS(items=pods))


def test_a_terminating_namespace_is_a_finished_clean_up_not_a_leftover(monkeypatch):
    monkeypatch.setattr(kubernetes.client, "NetworkingV1Api",
                        lambda _api: NS(list_network_policy_for_all_namespaces=lambda: NS(items=[
                            _obj("p1", "y", role="policy-layout"), _obj("p2", "default", role="policy-layout")])))
    kube = _Kube(
        namespaces=[_obj("x", role="policy-layout"),                 # killed run: still there
                    _obj("y", role="policy-layout", deleting=True),  # a run's clean-up, 5 s to go
                    _obj("default")],
        pods=[_obj("a", "x", role="policy-layout"), _obj("a", "y", role="policy-layout"),
              _obj("stray", "default", role="policy-layout"),
              _obj("going", "default", role="policy-layout", deleting=True),
              _obj("other", "default", role="qos")])
    found = leftovers.find(kube, ["policy-layout"])
    assert [f.ref for f in found] == ["Namespace x", "Pod default/stray", "NetworkPolicy default/p2"]
