"""Calico ``projectcalico.org/v3`` NetworkPolicy and GlobalNetworkPolicy: parsing and semantics.

The rules below are taken from Calico's API reference, the doc comments of
``api/pkg/apis/projectcalico/v3/{networkpolicy,globalnetworkpolicy,policy_common,tier}.go``
(projectcalico/calico, read at commit 87c15906) and the policy documentation they summarise:

* **Tiers** are applied in ``spec.order`` (lower first). The ``default`` tier has order
  1,000,000 and default action ``Deny``; a custom tier's ``defaultAction`` is ``Deny`` or
  ``Pass`` (``kube-admin`` 1,000 and ``kube-baseline`` 10,000,000 have ``Pass``).
* **Policies** in a tier: "Policies with higher order are applied after those with lower order
  within the same tier. If the order is omitted, it may be considered to be infinite - i.e.
  the policy will be applied last. Policies with identical order will be applied in
  alphanumerical order based on the Policy Name within the tier."
* **Rules** of a policy are an ordered list; the first rule whose match criteria all hold
  decides with its action: ``Allow`` allows, ``Deny`` denies, ``Pass`` skips the rest of the
  tier and goes on with the next tier, ``Log`` logs and goes on with the next rule.
* **Default deny once selected**: if at least one policy of a tier selects the endpoint (for
  that direction) and no rule of the tier decided, the tier's default action applies (Deny
  for ``default``). A tier selecting nothing is skipped. After the last tier (nothing
  selected the endpoint, or every selecting tier passed) the endpoint's **profiles** apply;
  on Kubernetes that is ``kns.<namespace>``, which allows everything.
* **Kubernetes NetworkPolicies** are enforced as policies of the ``default`` tier with order
  1000 (Calico's ``knp.default.<name>``): Allow rules, then the tier's default deny.
* **types**: "When not explicitly specified, Calico defaults Types according to what Ingress
  and Egress are present in the policy": ``[Ingress]`` if there are no egress rules,
  ``[Egress]`` if there are egress rules but no ingress rules, both if there are both.
  (Unlike Kubernetes, an egress-only Calico policy does not isolate ingress.)
* **Selectors**: ``label == "v"``, ``label != "v"`` (also true when the label is absent),
  ``label in {...}``, ``label not in {...}``, ``has(label)``, ``!``, ``&&``, ``||``, parens,
  ``all()`` or the empty selector (everything), ``contains``, ``starts with``, ``ends with``.
  In a NetworkPolicy the policy selector and a rule's ``selector`` are limited to the policy's
  namespace unless the rule has a ``namespaceSelector``; in a GlobalNetworkPolicy they span all
  namespaces. Namespaces carry their labels plus ``projectcalico.org/name``; pods carry their
  labels plus ``projectcalico.org/namespace`` and ``projectcalico.org/orchestrator: k8s``.
* **EntityRule** (``source`` / ``destination``): ``nets``, ``notNets``, ``selector``,
  ``notSelector``, ``namespaceSelector``, ``ports``, ``notPorts``, ``serviceAccounts`` all have
  to hold (AND). ``notSelector`` negates the match. In a NetworkPolicy (or with a
  ``namespaceSelector``) Calico adds the namespace to the rule's selector whenever a selector,
  ``serviceAccounts``, ``notSelector`` or ``namespaceSelector`` is set (libcalico-go
  ``lib/backend/syncersv1/updateprocessors/rules.go``, ``RuleAPIV2ToBackend``): a
  ``notSelector`` alone then matches the pods of the policy's namespace outside it, nothing
  else; in a GlobalNetworkPolicy it matches every endpoint and address outside it. ``ports`` are numbers,
  ``"min:max"`` ranges or named ports (resolved on the destination endpoint); source ports are
  matched against the client's ephemeral port range, as the Antrea model does.
* **Protocols**: ``TCP``, ``UDP``, ``SCTP``, ``ICMP``, ``ICMPv6``, ``UDPLite`` or a number;
  ``icmp: {type, code}`` narrows ICMP. An ICMP probe is protocol ``ICMP`` with "port"
  ``type * 256 + code`` (:func:`.model.icmp_port`; a ping's echo request is 8/0 = 2048).

Outside this model, refused with :class:`NotModelled` (a ValueError): ``serviceAccountSelector`` and
``serviceAccounts.selector`` (they select on ServiceAccount labels, which the cluster model
does not hold), ``services``, ``http``, host endpoints (``preDNAT``, ``doNotTrack``,
``applyOnForward``), ``global()`` selectors.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .antrea import EPHEMERAL_PORTS
from .model import NAMESPACE_NAME_LABEL, Cluster, IPAddress, IPNetwork, NetworkPolicy, Pod, as_network_policy

DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
KNP_ORDER = 1000.0
ACTIONS = ("Allow", "Deny", "Pass", "Log")
PROTOCOL_NUMBERS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLite"}
PROTOCOL_NAMES = {v.upper(): v for v in PROTOCOL_NUMBERS.values()}
NS_NAME_LABEL = "projectcalico.org/name"
POD_NS_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
_UNSUPPORTED_SPEC = ("preDNAT", "doNotTrack", "applyOnForward", "serviceAccountSelector", "performanceHints")


class NotModelled(ValueError):
    """A valid Calico construct outside this model (the message says which and why): the
    converter reports the policy as ``unsupported`` instead of failing the whole set."""


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class Sel:
    """A parsed Calico selector expression (a small AST)."""

    op: str  # all, has, eq, ne, in, notin, contains, starts, ends, not, and, or
    key: str = ""
    values: tuple[str, ...] = ()
    args: tuple[Sel, ...] = ()
    text: str = field(default="", compare=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "all":
            return True
        if op == "and":
            return all(a.matches(labels) for a in self.args)
        if op == "or":
            return any(a.matches(labels) for a in self.args)
        if op == "not":
            return not self.args[0].matches(labels)
        value = labels.get(self.key)
        if op == "has":
            return value is not None
        if op == "eq":
            return value == self.values[0]
        if op == "ne":
            return value != self.values[0]
        if op == "in":
            return value is not None and value in self.values
        if op == "notin":
            return value is None or value not in self.values
        if value is None:
            return False
        if op == "contains":
            return self.values[0] in value
        if op == "starts":
            return value.startswith(self.values[0])
        return value.endswith(self.values[0])  # ends


ALL = Sel("all", text="all()")
_TOKEN = re.compile(
    r"\s*(?:(?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)|\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<word>[A-Za-z0-9_./-]+))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"selector {text!r}: cannot parse at {text[pos:]!r}")
        pos = m.end()
        if m.group("op"):
            out.append(("op", m.group("op")))
        elif m.group("word") is not None:
            out.append(("word", m.group("word")))
        else:
            out.append(("str", m.group("dq") if m.group("dq") is not None else m.group("sq")))
    return out


def parse_selector(text: str | None) -> Sel:
    """Parse a Calico selector; an empty or missing selector is ``all()``."""
    text = (text or "").strip()
    if not text:
        return ALL
    toks = _tokens(text)
    pos = 0

    def peek(offset: int = 0) -> tuple[str, str] | None:
        return toks[pos + offset] if pos + offset < len(toks) else None

    def take(kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        nonlocal pos
        tok = peek()
        if tok is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            want = value or kind or "more"
            raise ValueError(f"selector {text!r}: expected {want!r} at token {pos + 1}, got {tok and tok[1]!r}")
        pos += 1
        return tok

    def string_set() -> tuple[str, ...]:
        take("op", "{")
        values: list[str] = []
        while peek() != ("op", "}"):
            values.append(take("str")[1])
            if peek() == ("op", ","):
                take()
        take("op", "}")
        return tuple(values)

    def primary() -> Sel:
        tok = peek()
        if tok == ("op", "("):
            take()
            inner = expr_or()
            take("op", ")")
            return inner
        word = take("word")[1]
        if word in ("all", "has", "global") and peek() == ("op", "("):
            take()
            if word == "all":
                take("op", ")")
                return ALL
            if word == "global":
                raise NotModelled(f"selector {text!r}: global() selects GlobalNetworkSets/HostEndpoints, not modelled")
            key = take("word")[1]
            take("op", ")")
            return Sel("has", key)
        nxt = peek()
        if nxt == ("op", "=="):
            take()
            return Sel("eq", word, (take("str")[1],))
        if nxt == ("op", "!="):
            take()
            return Sel("ne", word, (take("str")[1],))
        if nxt == ("word", "in"):
            take()
            return Sel("in", word, string_set())
        if nxt == ("word", "not") and peek(1) == ("word", "in"):
            take(), take()
            return Sel("notin", word, string_set())
        if nxt == ("word", "contains"):
            take()
            return Sel("contains", word, (take("str")[1],))
        if nxt in (("word", "starts"), ("word", "ends")) and peek(1) == ("word", "with"):
            take(), take()
            return Sel("starts" if nxt[1] == "starts" else "ends", word, (take("str")[1],))
        raise ValueError(f"selector {text!r}: expected an operator after label {word!r}")

    def unary() -> Sel:
        if peek() == ("op", "!"):
            take()
            return Sel("not", args=(unary(),))
        return primary()

    def expr_and() -> Sel:
        parts = [unary()]
        while peek() == ("op", "&&"):
            take()
            parts.append(unary())
        return parts[0] if len(parts) == 1 else Sel("and", args=tuple(parts))

    def expr_or() -> Sel:
        parts = [expr_and()]
        while peek() == ("op", "||"):
            take()
            parts.append(expr_and())
        return parts[0] if len(parts) == 1 else Sel("or", args=tuple(parts))

    result = expr_or()
    if pos != len(toks):
        raise ValueError(f"selector {text!r}: unexpected {toks[pos][1]!r}")
    return Sel(result.op, result.key, result.values, result.args, text)


# DNF: a selector as an OR of conjunctions of Kubernetes-style requirements
# (key, operator, values) with operator In / NotIn / Exists / DoesNotExist.
Literal = tuple[str, str, tuple[str, ...]]
MAX_DNF_TERMS = 64


class Inexpressible(ValueError):
    """A construct with no Kubernetes / Antrea equivalent (the message says which)."""


def to_dnf(sel: Sel, negate: bool = False) -> list[list[Literal]]:
    """``sel`` (or its negation) as a list of conjunctions; [] = matches nothing, [[]] =
    matches everything. Raises :class:`Inexpressible` for contains / starts with / ends with
    and for expansions beyond MAX_DNF_TERMS conjunctions."""
    op = sel.op
    if op == "not":
        return to_dnf(sel.args[0], not negate)
    if op == "all":
        return [] if negate else [[]]
    if op in ("and", "or"):
        conj = (op == "and") != negate
        parts = [to_dnf(a, negate) for a in sel.args]
        if not conj:
            out = [t for p in parts for t in p]
        else:
            out = [[]]
            for p in parts:
                out = [a + b for a in out for b in p]
                if len(out) > MAX_DNF_TERMS:
                    raise Inexpressible(f"selector {sel.text or op!r} expands to more than {MAX_DNF_TERMS} label selectors")
        if len(out) > MAX_DNF_TERMS:
            raise Inexpressible(f"selector {sel.text or op!r} expands to more than {MAX_DNF_TERMS} label selectors")
        return out
    literal = {
        ("has", False): ("Exists", ()),
        ("has", True): ("DoesNotExist", ()),
        ("eq", False): ("In", sel.values),
        ("eq", True): ("NotIn", sel.values),
        ("ne", False): ("NotIn", sel.values),
        ("ne", True): ("In", sel.values),
        ("in", False): ("In", sel.values),
        ("in", True): ("NotIn", sel.values),
        ("notin", False): ("NotIn", sel.values),
        ("notin", True): ("In", sel.values),
    }.get((op, negate))
    if literal is None:
        raise Inexpressible(f"selector operator {op!r} (in {sel.text or sel.key!r}) has no label-selector equivalent")
    if literal[0] == "In" and not literal[1]:
        return []  # "in {}" matches nothing
    if literal[0] == "NotIn" and not literal[1]:
        return [[]]
    return [[(sel.key, literal[0], tuple(sorted(literal[1])))]]


def label_selectors(sel: Sel, namespaces: bool = False) -> list[dict[str, Any]]:
    """``sel`` as Kubernetes label selector dicts whose union it is ([] = nothing, [{}] = all).
    ``namespaces``: a namespace selector, where Calico's ``projectcalico.org/name`` becomes
    ``kubernetes.io/metadata.name`` (the API server sets it on every namespace to its name).
    Other keys of Calico's own implicit labels (``projectcalico.org/...``) are refused."""
    out: list[dict[str, Any]] = []
    for conj in to_dnf(sel):
        labels: dict[str, str] = {}
        exprs: list[dict[str, Any]] = []
        for key, operator, values in conj:
            if namespaces and key == NS_NAME_LABEL:
                key = NAMESPACE_NAME_LABEL
            if key.startswith("projectcalico.org/"):
                raise Inexpressible(f"selector on Calico's implicit label {key!r} (no Kubernetes label carries it)")
            if operator == "In" and len(values) == 1 and key not in labels:
                labels[key] = values[0]
            else:
                expr: dict[str, Any] = {"key": key, "operator": operator}
                if values:
                    expr["values"] = list(values)
                exprs.append(expr)
        selector: dict[str, Any] = {}
        if labels:
            selector["matchLabels"] = labels
        if exprs:
            selector["matchExpressions"] = exprs
        if selector not in out:
            out.append(selector)
    return out


# --------------------------------------------------------------------------- ports


@dataclass(frozen=True)
class CalicoPort:
    """A ``ports`` entry: an inclusive numeric range, or a named port."""

    low: int = 0
    high: int = 0
    name: str | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> CalicoPort:
        if isinstance(raw, int):
            low = high = raw
        else:
            text = str(raw).strip()
            if re.fullmatch(r"\d+", text):
                low = high = int(text)
            elif re.fullmatch(r"\d+:\d+", text):
                low, high = (int(x) for x in text.split(":"))
            elif re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", text):
                return cls(name=text)
            else:
                raise ValueError(f"{where}: port {raw!r} is neither a number, a 'min:max' range nor a port name")
        if not 0 <= low <= high <= 65535:
            raise ValueError(f"{where}: port range {low}:{high} is not within 0-65535 (min <= max)")
        return cls(low, high)

    def matches(self, port: int, protocol: str, pod: Pod | None) -> bool:
        if self.name is None:
            return self.low <= port <= self.high
        return pod is not None and pod.named_port(self.name, protocol) == port

    def describe(self) -> str:
        return self.name or (str(self.low) if self.low == self.high else f"{self.low}:{self.high}")


def _normalize_protocol(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, int) or str(raw).isdigit():
        number = int(raw)
        if not 1 <= number <= 255:
            raise ValueError(f"{where}: protocol number {number} is not within 1-255")
        return PROTOCOL_NUMBERS.get(number, str(number))
    name = PROTOCOL_NAMES.get(str(raw).upper())
    if name is None:
        raise ValueError(f"{where}: unknown protocol {raw!r}; expected one of {', '.join(PROTOCOL_NAMES.values())}")
    return name


# --------------------------------------------------------------------------- rules


def _nets(raw: Any, where: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(str(n), strict=False) for n in raw or ())
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class EntityRule:
    """``source`` or ``destination`` of a rule; every field set must hold."""

    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector: Sel | None = None
    not_selector: Sel | None = None
    namespace_selector: Sel | None = None
    ports: tuple[CalicoPort, ...] = ()
    not_ports: tuple[CalicoPort, ...] = ()
    service_accounts: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str) -> EntityRule:
        data = data or {}
        for key in ("services",):
            if data.get(key):
                raise NotModelled(f"{where}: {key!r} (Kubernetes Services as peers) is not modelled")
        unknown = set(data) - {"nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports",
                               "notPorts", "serviceAccounts", "services"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        sa = data.get("serviceAccounts") or {}
        if sa.get("selector"):
            raise NotModelled(f"{where}: serviceAccounts.selector selects on ServiceAccount labels, which the cluster "
                              "model does not hold")

        def sel(key: str) -> Sel | None:
            text = data.get(key)
            return None if text is None or not str(text).strip() else parse_selector(str(text))

        return cls(
            nets=_nets(data.get("nets"), where),
            not_nets=_nets(data.get("notNets"), where),
            selector=sel("selector"),
            not_selector=sel("notSelector"),
            namespace_selector=sel("namespaceSelector"),
            ports=tuple(CalicoPort.parse(p, where) for p in data.get("ports") or ()),
            not_ports=tuple(CalicoPort.parse(p, where) for p in data.get("notPorts") or ()),
            service_accounts=tuple(str(n) for n in sa.get("names") or ()),
        )

    @property
    def is_empty(self) -> bool:
        return self == EntityRule()

    @property
    def selects_endpoints(self) -> bool:
        """Does this entity restrict by endpoint identity (not only by IP / port)?"""
        return any(x is not None for x in (self.selector, self.not_selector, self.namespace_selector)) or bool(
            self.service_accounts
        )

    def matches_endpoint(self, remote: Pod | IPAddress, policy: CalicoPolicy, cluster: Cluster) -> bool:
        ips = remote.ips if isinstance(remote, Pod) else (remote,)
        if self.nets and not any(ip in n for ip in ips for n in self.nets):
            return False
        if self.not_nets and any(ip in n for ip in ips for n in self.not_nets):
            return False
        if self.selects_endpoints:
            in_scope = isinstance(remote, Pod) and (
                self.namespace_selector is not None or policy.namespace is None or remote.namespace == policy.namespace
            )
            # Calico namespaces the rule's selector when a selector, serviceAccounts, notSelector or
            # namespaceSelector is given and the policy is namespaced (or a namespaceSelector is
            # set): libcalico-go RuleAPIV2ToBackend. A notSelector alone in a GlobalNetworkPolicy
            # stays unscoped: it matches every endpoint (and address) outside it.
            scoped = (self.selector is not None or self.namespace_selector is not None or bool(self.service_accounts)
                      or policy.namespace is not None)
            if scoped:
                if not in_scope or not isinstance(remote, Pod):
                    return False
                if self.namespace_selector is not None and not self.namespace_selector.matches(
                    namespace_labels(cluster, remote.namespace)
                ):
                    return False
                if self.selector is not None and not self.selector.matches(pod_labels(remote)):
                    return False
                if self.service_accounts and remote.service_account not in self.service_accounts:
                    return False
            if self.not_selector is not None and isinstance(remote, Pod):
                if self.not_selector.matches(pod_labels(remote)):
                    return False
        return True

    def matches_port(self, port: int, protocol: str, pod: Pod | None) -> bool:
        if self.ports and not any(p.matches(port, protocol, pod) for p in self.ports):
            return False
        return not any(p.matches(port, protocol, pod) for p in self.not_ports)

    def source_ports_decided(self, ephemeral: tuple[int, int], where: str) -> bool:
        """Do this entity's ports match every ephemeral source port (True) or none (False)?
        Partly overlapping ranges (or named source ports) raise ValueError."""
        low, high = ephemeral

        def cover(ports: Sequence[CalicoPort]) -> str:
            states = set()
            for p in ports:
                if p.name is not None:
                    raise ValueError(f"{where}: named source port {p.name!r} cannot be evaluated")
                if p.low <= low and high <= p.high:
                    states.add("all")
                elif p.high < low or p.low > high:
                    states.add("none")
                else:
                    raise ValueError(
                        f"{where}: source port range {p.describe()} partly overlaps the ephemeral source port "
                        f"range {low}-{high}; the probe's source port cannot be predicted"
                    )
            return "all" if "all" in states else "none"

        if self.ports and cover(self.ports) == "none":
            return False
        return not (self.not_ports and cover(self.not_ports) == "all")


@dataclass(frozen=True)
class CalicoRule:
    action: str
    index: int
    protocol: str | None = None
    not_protocol: str | None = None
    icmp: tuple[int | None, int | None] | None = None
    not_icmp: tuple[int | None, int | None] | None = None
    ip_version: int | None = None
    source: EntityRule = EntityRule()
    destination: EntityRule = EntityRule()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], index: int, where: str) -> CalicoRule:
        where = f"{where} rule {index + 1}"
        action = str(data.get("action") or "")
        if action not in ACTIONS:
            raise ValueError(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
        if data.get("http"):
            raise NotModelled(f"{where}: http match criteria (application layer) are not modelled")
        protocol = _normalize_protocol(data.get("protocol"), where)
        source = EntityRule.from_dict(data.get("source"), f"{where} source")
        destination = EntityRule.from_dict(data.get("destination"), f"{where} destination")
        if (source.ports or source.not_ports or destination.ports or destination.not_ports) and protocol not in (
            "TCP", "UDP", "SCTP", "UDPLite"
        ):
            raise ValueError(f"{where}: ports need protocol TCP, UDP, SCTP or UDPLite")

        def icmp(key: str) -> tuple[int | None, int | None] | None:
            raw = data.get(key)
            if raw is None:
                return None
            if protocol not in ("ICMP", "ICMPv6"):
                raise ValueError(f"{where}: {key} needs protocol ICMP or ICMPv6")
            if raw.get("code") is not None and raw.get("type") is None:
                raise ValueError(f"{where}: {key}.code needs {key}.type")
            return (raw.get("type"), raw.get("code"))

        version = data.get("ipVersion")
        return cls(
            action=action,
            index=index,
            protocol=protocol,
            not_protocol=_normalize_protocol(data.get("notProtocol"), where),
            icmp=icmp("icmp"),
            not_icmp=icmp("notICMP"),
            ip_version=None if version is None else int(version),
            source=source,
            destination=destination,
        )

    @staticmethod
    def _icmp_matches(fields: tuple[int | None, int | None], port: int) -> bool:
        """Do ICMP ``{type, code}`` fields match the ICMP probe ``port`` (type * 256 + code)?"""
        kind, code = fields
        return (kind is None or kind == port // 256) and (code is None or code == port % 256)

    def matches(
        self,
        src: Pod | IPAddress,
        dst: Pod | IPAddress,
        port: int,
        protocol: str,
        policy: CalicoPolicy,
        cluster: Cluster,
        ephemeral: tuple[int, int],
    ) -> bool:
        if self.protocol is not None and self.protocol != protocol:
            return False
        if self.not_protocol is not None and self.not_protocol == protocol:
            return False
        if self.icmp is not None and not self._icmp_matches(self.icmp, port):
            return False
        if self.not_icmp is not None and self._icmp_matches(self.not_icmp, port):
            return False
        if self.ip_version is not None:
            ips = dst.ips if isinstance(dst, Pod) else (dst,)
            if not any(ip.version == self.ip_version for ip in ips):
                return False
        if not self.source.matches_endpoint(src, policy, cluster):
            return False
        if not self.destination.matches_endpoint(dst, policy, cluster):
            return False
        if not self.source.source_ports_decided(ephemeral, f"{policy.key} rule {self.index + 1} source"):
            return False
        return self.destination.matches_port(port, protocol, dst if isinstance(dst, Pod) else None)

    def describe(self) -> str:
        parts = [self.action]
        if self.protocol:
            parts.append(self.protocol)
        for side, entity in (("from", self.source), ("to", self.destination)):
            bits = []
            if entity.selector is not None:
                bits.append(f"selector {entity.selector.text!r}")
            if entity.namespace_selector is not None:
                bits.append(f"namespaceSelector {entity.namespace_selector.text!r}")
            if entity.not_selector is not None:
                bits.append(f"notSelector {entity.not_selector.text!r}")
            if entity.nets:
                bits.append("nets " + ",".join(map(str, entity.nets)))
            if entity.not_nets:
                bits.append("notNets " + ",".join(map(str, entity.not_nets)))
            if entity.ports:
                bits.append("ports " + ",".join(p.describe() for p in entity.ports))
            if entity.not_ports:
                bits.append("notPorts " + ",".join(p.describe() for p in entity.not_ports))
            if entity.service_accounts:
                bits.append("serviceAccounts " + ",".join(entity.service_accounts))
            if bits:
                parts.append(f"{side} " + " ".join(bits))
        return " ".join(parts)


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class CalicoPolicy:
    kind: str  # NetworkPolicy | GlobalNetworkPolicy
    name: str
    namespace: str | None
    tier: str
    order: float | None
    selector: Sel
    namespace_selector: Sel | None
    types: frozenset[str]
    ingress: tuple[CalicoRule, ...] = ()
    egress: tuple[CalicoRule, ...] = ()

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], namespace: str | None = None) -> CalicoPolicy:
        kind = str(obj.get("kind") or "")
        api = str(obj.get("apiVersion") or "projectcalico.org/v3")
        if kind not in ("NetworkPolicy", "GlobalNetworkPolicy") or not api.startswith("projectcalico.org/"):
            raise ValueError(f"{api} {kind}: not a projectcalico.org/v3 NetworkPolicy or GlobalNetworkPolicy")
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            raise ValueError(f"Calico {kind}: metadata.name is not set")
        spec = obj.get("spec") or {}
        where = f"Calico {kind} {name}"
        for key in _UNSUPPORTED_SPEC:
            if spec.get(key):
                raise NotModelled(f"{where}: spec.{key} is not modelled" + (
                    " (it selects on ServiceAccount labels, which the cluster model does not hold)"
                    if key == "serviceAccountSelector" else " (host endpoints / performance hints)"))
        ns: str | None = None
        if kind == "NetworkPolicy":
            ns = meta.get("namespace") or namespace
            if not ns:
                raise ValueError(f"{where}: metadata.namespace is not set; set it or state the namespace")
            if spec.get("namespaceSelector"):
                raise ValueError(f"{where}: spec.namespaceSelector exists only on GlobalNetworkPolicy")
        ingress = tuple(CalicoRule.from_dict(r or {}, i, f"{where} ingress") for i, r in enumerate(spec.get("ingress") or ()))
        egress = tuple(CalicoRule.from_dict(r or {}, i, f"{where} egress") for i, r in enumerate(spec.get("egress") or ()))
        types = spec.get("types")
        if not types:
            types = (["Ingress"] if ingress or not egress else []) + (["Egress"] if egress else [])
        for t in types:
            if t not in ("Ingress", "Egress"):
                raise ValueError(f"{where}: unknown type {t!r} (Ingress or Egress)")
        order = spec.get("order")
        ns_sel = spec.get("namespaceSelector")
        return cls(
            kind=kind,
            name=name,
            namespace=str(ns) if ns else None,
            tier=str(spec.get("tier") or DEFAULT_TIER),
            order=None if order is None else float(order),
            selector=parse_selector(spec.get("selector")),
            namespace_selector=parse_selector(ns_sel) if ns_sel else None,
            types=frozenset(types),
            ingress=ingress,
            egress=egress,
        )

    @property
    def key(self) -> str:
        short = "cnp" if self.namespace is not None else "gnp"
        return f"calico {short} {self.namespace}/{self.name}" if self.namespace else f"calico {short} {self.name}"

    @property
    def sort_key(self) -> tuple[float, str]:
        return (math.inf if self.order is None else self.order, self.name)

    def rules(self, direction: str) -> tuple[CalicoRule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    def applies(self, direction: str) -> bool:
        return ("Ingress" if direction == "ingress" else "Egress") in self.types

    def selects(self, pod: Pod, cluster: Cluster) -> bool:
        if self.namespace is not None and pod.namespace != self.namespace:
            return False
        if self.namespace_selector is not None and not self.namespace_selector.matches(
            namespace_labels(cluster, pod.namespace)
        ):
            return False
        return self.selector.matches(pod_labels(pod))


@dataclass(frozen=True)
class CalicoTier:
    name: str
    order: float
    default_action: str = "Deny"


def tiers_from_objects(objects: Iterable[Mapping[str, Any]]) -> dict[str, CalicoTier]:
    """Calico Tier objects (name -> tier), with the ``default`` tier added when absent."""
    tiers = {DEFAULT_TIER: CalicoTier(DEFAULT_TIER, DEFAULT_TIER_ORDER, "Deny")}
    for obj in objects:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        name = str(meta.get("name") or "")
        if obj.get("kind") != "Tier" or not name:
            raise ValueError(f"{obj.get('kind', '?')} {name or '?'}: not a projectcalico.org/v3 Tier with a name")
        action = str(spec.get("defaultAction") or "Deny")
        if action not in ("Deny", "Pass"):
            raise ValueError(f"Tier {name}: defaultAction {action!r} is not Deny or Pass")
        order = spec.get("order")
        if name == DEFAULT_TIER and (action != "Deny" or (order is not None and float(order) != DEFAULT_TIER_ORDER)):
            raise ValueError("Tier default: must have order 1000000 and defaultAction Deny")
        tiers[name] = CalicoTier(name, math.inf if order is None else float(order), action)
    return tiers


def namespace_labels(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {**cluster.namespaces[namespace].labels, NS_NAME_LABEL: namespace}


def pod_labels(pod: Pod) -> dict[str, str]:
    return {**pod.labels, POD_NS_LABEL: pod.namespace, ORCHESTRATOR_LABEL: "k8s"}


def split_objects(objects: Iterable[Mapping[str, Any]]) -> tuple[list[dict], list[dict], list[dict]]:
    """Calico policies, Kubernetes NetworkPolicies and Calico Tiers from a mixed object list."""
    calico, k8s, tiers = [], [], []
    for obj in objects:
        api, kind = str(obj.get("apiVersion") or ""), obj.get("kind")
        if api.startswith("projectcalico.org/") and kind == "Tier":
            tiers.append(dict(obj))
        elif api.startswith("projectcalico.org/"):
            calico.append(dict(obj))
        elif kind == "NetworkPolicy" and api.startswith("networking.k8s.io/"):
            k8s.append(dict(obj))
        else:
            name = (obj.get("metadata") or {}).get("name", "?")
            raise ValueError(f"{api or '?'} {kind or '?'} {name}: expected projectcalico.org/v3 policies or Tiers, "
                             "or networking.k8s.io/v1 NetworkPolicies")
    return calico, k8s, tiers


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class CalicoDecision:
    allowed: bool
    reason: str


class CalicoEvaluator:
    """Calico's evaluation of pod-to-pod probes: per direction, tiers in order, policies in
    order, first matching rule; see the module docstring."""

    def __init__(
        self,
        cluster: Cluster,
        policies: Iterable[CalicoPolicy | Mapping[str, Any]] = (),
        k8s_policies: Iterable[NetworkPolicy | Mapping[str, Any]] = (),
        tiers: Mapping[str, CalicoTier] | Iterable[Mapping[str, Any]] | None = None,
        ephemeral_ports: tuple[int, int] = EPHEMERAL_PORTS,
    ) -> None:
        self.cluster = cluster
        self.policies = [p if isinstance(p, CalicoPolicy) else CalicoPolicy.from_dict(p) for p in policies]
        self.k8s = [as_network_policy(p) for p in k8s_policies]
        if tiers is None:
            self.tiers = tiers_from_objects(())
        elif isinstance(tiers, Mapping):
            self.tiers = {DEFAULT_TIER: CalicoTier(DEFAULT_TIER, DEFAULT_TIER_ORDER), **tiers}
        else:
            self.tiers = tiers_from_objects(tiers)
        for p in self.policies:
            if p.tier not in self.tiers:
                raise ValueError(f"{p.key}: tier {p.tier!r} does not exist (give its Tier object)")
        self.ephemeral = ephemeral_ports
        self._by_tier: list[tuple[CalicoTier, list[tuple[tuple[float, str], Any]]]] = []
        for tier in sorted(self.tiers.values(), key=lambda t: (t.order, t.name)):
            members: list[tuple[tuple[float, str], Any]] = [(p.sort_key, p) for p in self.policies if p.tier == tier.name]
            if tier.name == DEFAULT_TIER:
                members += [((KNP_ORDER, f"knp.default.{k.name}"), k) for k in self.k8s]
            members.sort(key=lambda m: m[0])
            self._by_tier.append((tier, members))

    def _selects(self, policy: Any, pod: Pod, direction: str) -> bool:
        if isinstance(policy, NetworkPolicy):
            kind = "Ingress" if direction == "ingress" else "Egress"
            return kind in policy.policy_types and policy.selects(pod)
        return policy.applies(direction) and policy.selects(pod, self.cluster)

    def _k8s_allows(self, policy: NetworkPolicy, direction: str, target: Pod, remote: Pod | IPAddress,
                    port: int, protocol: str) -> str | None:
        if protocol not in ("TCP", "UDP", "SCTP"):
            # Calico translates a rule without ports to a rule without protocol: it matches ICMP too.
            rules = [r for r in (policy.ingress if direction == "ingress" else policy.egress) if not r.ports]
        else:
            rules = list(policy.ingress if direction == "ingress" else policy.egress)
        destination = target if direction == "ingress" else (remote if isinstance(remote, Pod) else None)
        for number, rule in enumerate(rules, 1):
            if isinstance(remote, Pod):
                peer = not rule.peers or any(p.matches_pod(remote, policy.namespace, self.cluster) for p in rule.peers)
            else:
                peer = not rule.peers or any(p.matches_ip(remote) for p in rule.peers)
            if peer and (protocol not in ("TCP", "UDP", "SCTP") or rule.port_matches(port, protocol, destination)):
                return f"{direction} rule {number}"
        return None

    def direction(self, direction: str, target: Pod, remote: Pod | IPAddress, port: int, protocol: str) -> CalicoDecision:
        where = f"{direction} {'to' if direction == 'ingress' else 'from'} {target.key}"
        src, dst = (remote, target) if direction == "ingress" else (target, remote)
        for tier, members in self._by_tier:
            selecting = [p for _, p in members if self._selects(p, target, direction)]
            if not selecting:
                continue
            passed = False
            for policy in selecting:
                if isinstance(policy, NetworkPolicy):
                    hit = self._k8s_allows(policy, direction, target, remote, port, protocol)
                    if hit:
                        return CalicoDecision(True, f"{where}: Allow by Kubernetes NetworkPolicy {policy.key} {hit} "
                                                    f"(tier {tier.name}, order {KNP_ORDER:g})")
                    continue
                for rule in policy.rules(direction):
                    if not rule.matches(src, dst, port, protocol, policy, self.cluster, self.ephemeral):
                        continue
                    if rule.action == "Log":
                        continue
                    label = f"{policy.key} (tier {tier.name}, order {policy.order if policy.order is not None else 'none'}) " \
                            f"{direction} rule {rule.index + 1} {rule.describe()}"
                    if rule.action == "Pass":
                        passed = True
                        break
                    return CalicoDecision(rule.action == "Allow", f"{where}: {rule.action} by {label}")
                if passed:
                    break
            if passed:
                continue
            if tier.default_action == "Deny":
                names = ", ".join(p.key for p in selecting)
                return CalicoDecision(False, f"{where}: denied at the end of tier {tier.name} (selected by {names}; "
                                             "no rule matched)")
        return CalicoDecision(True, f"{where}: no tier decided; profile kns.{target.namespace} allows")

    def decide(self, src: str, dst: str, port: int, protocol: str = "TCP") -> tuple[bool, list[str]]:
        """(allowed, reasons) for ``src -> dst`` (pod keys)."""
        protocol = _normalize_protocol(protocol, "probe") or "TCP"
        s, d = self.cluster.pod(src), self.cluster.pod(dst)
        eg = self.direction("egress", s, d, port, protocol)
        ing = self.direction("ingress", d, s, port, protocol)
        return eg.allowed and ing.allowed, [eg.reason, ing.reason]

    def matrix(self, port: int, protocol: str = "TCP"):
        """Boolean truth table (rows sources, columns destinations)."""
        import pandas as pd

        protocol = _normalize_protocol(protocol, "probe") or "TCP"
        pods = self.cluster.pods
        egress = {(s.key, d.key): self.direction("egress", s, d, port, protocol).allowed for s in pods for d in pods}
        rows = [
            [egress[(s.key, d.key)] and self.direction("ingress", d, s, port, protocol).allowed for d in pods]
            for s in pods
        ]
        keys = self.cluster.pod_keys
        return pd.DataFrame(rows, index=pd.Index(keys, name="from"), columns=pd.Index(keys, name="to"),
                            dtype="boolean")
