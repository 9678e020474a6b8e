"""Pod sets as integer bitmasks: bit ``i`` stands for ``cluster.pods[i]``.

Selector results are computed once per distinct selector and reused, which is what makes
evaluating every pod pair against dozens of policies cheap: the per-pair work is a couple of
shifts and ands on Python ints.
"""

from __future__ import annotations

from collections.abc import Iterator

from .model import Cluster, IPBlock, LabelSelector, PortSpec


def bits(mask: int) -> Iterator[int]:
    """Indices of the set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def has(mask: int, index: int) -> bool:
    return bool((mask >> index) & 1)


class PodIndex:
    """Cached selector evaluation over one :class:`Cluster`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.all = (1 << len(cluster.pods)) - 1
        self.namespace_mask: dict[str, int] = {name: 0 for name in cluster.namespaces}
        for i, pod in enumerate(cluster.pods):
            self.namespace_mask[pod.namespace] |= 1 << i
        self._pods_cache: dict[LabelSelector, int] = {}
        self._ns_cache: dict[LabelSelector, int] = {}
        self._ip_cache: dict[IPBlock, int] = {}
        self._port_cache: dict[tuple[tuple[PortSpec, ...], int, str], int] = {}

    def pods_matching(self, selector: LabelSelector) -> int:
        """Pods (in any namespace) whose labels match ``selector``."""
        mask = self._pods_cache.get(selector)
        if mask is None:
            mask = 0
            for i, pod in enumerate(self.cluster.pods):
                if selector.matches(pod.labels):
                    mask |= 1 << i
            self._pods_cache[selector] = mask
        return mask

    def pods_in_namespaces_matching(self, selector: LabelSelector) -> int:
        """All pods of the namespaces whose labels match ``selector``."""
        mask = self._ns_cache.get(selector)
        if mask is None:
            mask = 0
            for name, ns in self.cluster.namespaces.items():
                if selector.matches(ns.labels):
                    mask |= self.namespace_mask[name]
            self._ns_cache[selector] = mask
        return mask

    def pods_in_block(self, block: IPBlock) -> int:
        """Pods having an IP inside ``block`` (and outside its excepts)."""
        mask = self._ip_cache.get(block)
        if mask is None:
            mask = 0
            for i, pod in enumerate(self.cluster.pods):
                if any(block.contains(ip) for ip in pod.ips):
                    mask |= 1 << i
            self._ip_cache[block] = mask
        return mask

    def peer_mask(
        self,
        pod_selector: LabelSelector | None,
        namespace_selector: LabelSelector | None,
        default_namespace: str | None,
    ) -> int:
        """Pods matched by a selector pair.

        Without a namespace selector the pods are restricted to ``default_namespace``
        (``None`` = every namespace, the cluster-scoped Antrea behaviour).
        """
        if namespace_selector is not None:
            mask = self.pods_in_namespaces_matching(namespace_selector)
        elif default_namespace is not None:
            mask = self.namespace_mask.get(default_namespace, 0)
        else:
            mask = self.all
        if pod_selector is not None:
            mask &= self.pods_matching(pod_selector)
        return mask

    def port_destinations(self, ports: tuple[PortSpec, ...], port: int, protocol: str) -> int:
        """Destination pods for which a rule's ``ports`` list (empty = all ports) matches
        ``port``/``protocol``. Only named ports make the answer differ between pods."""
        key = (ports, port, protocol)
        mask = self._port_cache.get(key)
        if mask is None:
            if not ports:
                mask = self.all
            elif not any(p.is_named for p in ports):
                mask = self.all if any(p.matches(port, protocol, None) for p in ports) else 0
            else:
                mask = 0
                for i, pod in enumerate(self.cluster.pods):
                    if any(p.matches(port, protocol, pod) for p in ports):
                        mask |= 1 << i
            self._port_cache[key] = mask
        return mask
