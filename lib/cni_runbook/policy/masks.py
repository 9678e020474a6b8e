"""Pod sets as integer bitmasks: bit ``i`` stands for ``cluster.pods[i]``.

Selector results are computed once per distinct selector and reused, which is what makes
evaluating every pod pair against dozens of policies cheap: the per-pair work is a couple of
shifts and ands on Python ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .model import Cluster, IPBlock, LabelSelector, PortSpec


def bits(mask: int) -> Iterator[int]:
    """Indices of the set bits of ``mask``, lowest first."""
    if mask.bit_length() > 256:  # peeling bits off a big int costs O(size) per bit
        yield from np.flatnonzero(to_array(mask, mask.bit_length())).tolist()
        return
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def from_indices(indices: Iterable[int]) -> int:
    """The mask with exactly the bits ``indices`` set."""
    indices = list(indices)
    flags = np.zeros(max(indices, default=-1) + 1, dtype=np.uint8)
    flags[indices] = 1
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


def to_array(mask: int, n: int) -> np.ndarray:
    """A mask as a boolean array of length ``n``."""
    raw = np.frombuffer(mask.to_bytes((n + 7) // 8 or 1, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def from_array(flags: np.ndarray) -> int:
    """A boolean array as a mask."""
    return int.from_bytes(np.packbits(flags.astype(np.uint8), bitorder="little").tobytes(), "little")


def signatures(masks: list[int], n: int) -> tuple[list[int], list[tuple[int, ...]]]:
    """Which of ``masks`` contain each of ``n`` pods: per pod a signature number, and per
    signature number the positions of the masks (pods alike share one signature)."""
    if not masks or not n:
        return [0] * n, [()]
    table = np.stack([to_array(m, n) for m in masks])  # (len(masks), n)
    packed = np.ascontiguousarray(np.packbits(table, axis=0).T)  # one row of bytes per pod
    rows = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    sigs = [tuple(np.flatnonzero(table[:, i]).tolist()) for i in first.tolist()]
    return inverse.ravel().tolist(), sigs


class PodIndex:
    """Cached selector evaluation over one :class:`Cluster`.

    Pods are grouped by their label set, so a selector is evaluated once per distinct label
    set rather than once per pod; ipBlocks are matched on a vector of IPv4 addresses."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        n = len(cluster.pods)
        self.all = (1 << n) - 1
        groups: dict[str, list[int]] = {name: [] for name in cluster.namespaces}
        labels: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for i, pod in enumerate(cluster.pods):
            groups[pod.namespace].append(i)
            labels.setdefault(tuple(sorted(pod.labels.items())), []).append(i)
        self.namespace_mask: dict[str, int] = {name: from_indices(idx) for name, idx in groups.items()}
        self._label_groups = [(dict(key), from_indices(idx)) for key, idx in labels.items()]
        v4 = [next((ip for ip in pod.ips if ip.version == 4), None) for pod in cluster.pods]
        port_ids: dict[tuple, int] = {}
        #: per pod, a number shared by the pods with the same container ports
        self.ports_id = [port_ids.setdefault(pod.ports, len(port_ids)) for pod in cluster.pods]
        ns_ids = {name: k for k, name in enumerate(cluster.namespaces)}
        self.namespace_id = [ns_ids[pod.namespace] for pod in cluster.pods]
        self._ipv4 = np.array([int(ip) if ip is not None else 0 for ip in v4], dtype=np.uint64)
        self._has_v4 = np.array([ip is not None for ip in v4], dtype=bool)
        self._only_v4 = all(len(pod.ips) <= 1 for pod in cluster.pods)
        self._pods_cache: dict[LabelSelector, int] = {}
        self._ns_cache: dict[LabelSelector, int] = {}
        self._ip_cache: dict[IPBlock, int] = {}
        self._port_cache: dict[tuple[tuple[PortSpec, ...], int, str], int] = {}

    def pods_matching(self, selector: LabelSelector) -> int:
        """Pods (in any namespace) whose labels match ``selector``."""
        mask = self._pods_cache.get(selector)
        if mask is None:
            mask = 0
            for labels, group in self._label_groups:
                if selector.matches(labels):
                    mask |= group
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
            if block.cidr.version == 4 and self._only_v4:
                mask = from_array(self._in_v4(block))
            else:
                mask = 0
                for i, pod in enumerate(self.cluster.pods):
                    if any(block.contains(ip) for ip in pod.ips):
                        mask |= 1 << i
            self._ip_cache[block] = mask
        return mask

    def _in_v4(self, block: IPBlock) -> np.ndarray:
        def inside(net) -> np.ndarray:  # noqa: ANN001 - an IPv4Network
            netmask = np.uint64(int(net.netmask))
            return (self._ipv4 & netmask) == np.uint64(int(net.network_address))

        flags = self._has_v4 & inside(block.cidr)
        for exc in block.excepts:
            flags &= ~inside(exc)
        return flags

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
