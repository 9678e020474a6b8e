"""The typed params schema (pydantic v2) for every stage of the runbook.

Every model forbids unknown keys. Two markers annotate string fields:
``PATH`` (a filesystem path; relative paths are resolved against the params file that set
them) and ``SECRET`` (the field names a secret; see :mod:`.secrets`).
"""

from __future__ import annotations

import ipaddress
import re
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .. import stages
from . import secrets


class KeyProblem(ValueError):
    """A cross-field problem about one key: ``key`` is its path below the model that raised it
    (``nodes[1].ip``), so the message names ``cluster.nodes[1].ip``, not a whole section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Marker:
    """Metadata attached to a field type with ``Annotated``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


PATH = Marker("path")
SECRET = Marker("secret")
MAY_HOLD_SECRETS = Marker("may-hold-secrets")  # free-form mapping: never echoed in errors

FilePath = Annotated[str, PATH]
# A file whose *content* is secret (an SSH private key, a kubeconfig): given as a path.
SecretFile = Annotated[str, PATH, SECRET, AfterValidator(secrets.check_reference)]
# A secret value: env:VAR, file:PATH or a path.
SecretRef = Annotated[str, PATH, SECRET, AfterValidator(secrets.check_reference)]

def unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip Optional and Annotated from a type: (bare type, metadata found on the way)."""
    meta: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            meta.extend(annotation.__metadata__)
            annotation = annotation.__origin__
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, meta
            annotation = args[0]
        else:
            return annotation, meta


_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?[KMGT]?$"


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_regex)]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _host_address(value: str) -> str:
    """An IP address or a DNS name, nothing else (no spaces; ``10.99.0.1l`` is a typo, not a name)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.split(".")
    if value != value.strip() or not _HOSTNAME.match(value):
        raise ValueError("expected an IP address or a host name (letters, digits, '-' and '.', no spaces)")
    if len(labels) == 4 and all(re.fullmatch(r"\d{1,3}", label) for label in labels[:3]):
        raise ValueError("expected an IP address or a host name; this looks like a mistyped IPv4 address")
    if labels[-1].isdigit():
        raise ValueError("expected an IP address or a host name; a host name cannot end in a numeric label")
    return value


HostAddress = Annotated[str, AfterValidator(_host_address)]


def _registry(value: str | None) -> str | None:
    """A registry host[:port][/path] prefix, as image references spell it (no scheme)."""
    if value is None:
        return value
    if "://" in value:
        raise ValueError("expected a registry as image references name it, host[:port][/path] "
                         "(e.g. registry.example.org:5000/mirror), without a scheme such as https://")
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?(/[a-z0-9._/-]+)?", value):
        raise ValueError("expected host[:port][/path], e.g. registry.example.org:5000/mirror")
    return value.rstrip("/")


def _no_inline_secrets(mapping: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Reject free-form data that carries a secret-looking key with an inline value.

    Walks nested mappings and lists; under a secret-looking key every string must be a
    reference and no number may appear (``password: 123456`` is an inline secret too).
    """
    def walk(value: Any, path: str, secret: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key), secret or bool(secrets.SECRET_KEY.search(str(key))))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]", secret)
        elif secret and not isinstance(value, bool) and value is not None:
            if not isinstance(value, str) or not secrets.is_reference(value):
                raise ValueError(f"'{path}' looks like a secret; expected {secrets.SECRET_REF_EXPECTATION}")

    walk(mapping, where.rstrip("."), False)
    return mapping


FreeMap = Annotated[dict[str, Any], MAY_HOLD_SECRETS, AfterValidator(_no_inline_secrets)]


class Strict(BaseModel):
    """Base model: unknown keys are errors; defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# --- cluster ---------------------------------------------------------------------------------

Role = Literal["kube_control_plane", "etcd", "kube_node"]


class Node(Strict):
    """A host of the cluster, as Kubespray's inventory knows it."""

    name: str = Field(pattern=_NAME, description="inventory hostname")
    roles: list[Role] = Field(min_length=1, description="Kubespray inventory groups")
    ansible_host: HostAddress = Field(min_length=1, description="address Ansible connects to over SSH")
    ip: ipaddress.IPv4Address | None = Field(None, description="address the node's services bind to")
    access_ip: ipaddress.IPv4Address | None = Field(None, description="address other nodes use")


class Ssh(Strict):
    user: str = "root"
    port: int = Field(22, ge=1, le=65535)
    key_file: SecretFile | None = Field(None, description="private key used by Ansible")
    become_password: SecretRef | None = None


class Preflight(Strict):
    """Stage 00: which checks run, and which failing checks the operator accepts."""

    profile: Literal["generic", "antrea", "lab"] | None = Field(
        None, description="preflight check profile; null: follow cni.profile")
    waivers: list[Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")]] = Field(
        [], description="failing checks accepted by name (e.g. module_openvswitch); recorded in the audit record")


class Cluster(Strict):
    name: str = "cluster.local"
    ssh: Ssh = Ssh()
    nodes: list[Node] = []
    preflight: Preflight = Preflight()

    @model_validator(mode="after")
    def _inventory(self) -> Cluster:
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise KeyProblem(f"nodes[{names.index(dupes[0], names.index(dupes[0]) + 1)}].name",
                             f"node names must be unique; repeated: {', '.join(dupes)}")
        if self.nodes and not any("kube_control_plane" in n.roles for n in self.nodes):
            raise KeyProblem("nodes[*].roles", "at least one node needs the role kube_control_plane")
        return self


# --- provisioner ----------------------------------------------------------------------------

class Provisioner(Strict):
    kind: Literal["lab", "kubespray", "existing"] = "lab"
    kubeconfig: SecretFile | None = Field(None, description="kubeconfig of an existing cluster")
    context: str | None = None
    lab_running: Literal["rebuild", "reuse"] = Field(
        "rebuild", description="provisioner lab, stage 00 finds the lab's cluster already running (an earlier "
        "run left it up): rebuild it from bare hosts, or reuse it (its own ports then pass preflight)")


# --- kubespray ------------------------------------------------------------------------------

_TYPED_KUBESPRAY_VARS = {
    "kube_network_plugin", "kube_service_addresses", "kube_pods_subnet",
    "kube_network_node_prefix", "kube_proxy_mode", "kube_proxy_remove", "kube_version",
}


class Kubespray(Strict):
    dir: FilePath = "/opt/kubespray"
    version: str = Field("v2.31.0", pattern=r"^v\d+\.\d+\.\d+$")
    kube_version: str | None = Field(None, pattern=r"^v?\d+\.\d+\.\d+$")
    network_plugin: Literal["none", "cni", "custom_cni"] = "none"
    kube_service_addresses: ipaddress.IPv4Network = ipaddress.IPv4Network("10.233.0.0/18")
    kube_pods_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.233.64.0/18")
    kube_network_node_prefix: int = Field(24, ge=16, le=28)
    kube_proxy_mode: Literal["iptables", "ipvs", "nftables"] = "ipvs"
    kube_proxy_remove: bool = False
    extra_vars: FreeMap = {}

    @field_validator("extra_vars")
    @classmethod
    def _no_shadowing(cls, value: dict[str, Any]) -> dict[str, Any]:
        shadowed = sorted(_TYPED_KUBESPRAY_VARS & set(value))
        if shadowed:
            raise ValueError(f"set these through their kubespray.* keys, not extra_vars: {', '.join(shadowed)}")
        return value

    @model_validator(mode="after")
    def _networks(self) -> Kubespray:
        if self.kube_service_addresses.overlaps(self.kube_pods_subnet):
            raise KeyProblem("kube_service_addresses", f"{self.kube_service_addresses} overlaps kube_pods_subnet "
                             f"{self.kube_pods_subnet}; expected two disjoint networks")
        if self.kube_network_node_prefix <= self.kube_pods_subnet.prefixlen:
            raise KeyProblem("kube_network_node_prefix", f"{self.kube_network_node_prefix} must be longer than the "
                             f"kube_pods_subnet prefix /{self.kube_pods_subnet.prefixlen}")
        return self


# --- cni ------------------------------------------------------------------------------------

class HelmChart(Strict):
    """A chart from a repository (``repository_url`` + ``chart``) or a local chart (``path``)."""

    repository_url: str | None = Field(None, pattern=r"^(https?|oci)://",
                                       description="https:// chart repository or oci:// registry; null with path")
    chart: str | None = Field(None, description="chart name in the repository; null with path")
    path: FilePath | None = Field(None, description="local chart: a chart folder or a packed .tgz")
    version: str | None = None
    release_name: str = Field("cni", pattern=_NAME)
    values: FreeMap = {}
    values_files: list[FilePath] = []
    ca_file: FilePath | None = Field(None, description="CA bundle that signs the repository's TLS certificate")
    plain_http: bool = Field(False, description="oci:// registry over plain HTTP (a mirror without TLS)")
    repository_name: str | None = Field(None, pattern=_NAME, description="route kubespray_custom_cni: "
                                        "custom_cni_chart_repository_name; null: the chart name")

    @model_validator(mode="after")
    def _one_chart(self) -> HelmChart:
        if self.path is not None:
            extra = [k for k in ("repository_url", "chart") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"a local chart (helm.path) does not use: {', '.join('helm.' + k for k in extra)}")
            if self.plain_http or self.ca_file:
                raise ValueError("helm.plain_http and helm.ca_file are for a chart repository, not a local chart")
        elif self.repository_url is None or self.chart is None:
            raise ValueError("cni.source.helm needs either path (a local chart folder or .tgz) "
                             "or repository_url and chart")
        if self.plain_http and not (self.repository_url or "").startswith("oci://"):
            raise ValueError("helm.plain_http applies to oci:// repositories (an http:// repository is plain already)")
        return self


class CniSource(Strict):
    kind: Literal["manifest-url", "file", "helm"] = "manifest-url"
    url: str | None = Field(None, pattern=r"^https?://", description="may contain {version}")
    path: FilePath | None = None
    helm: HelmChart | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CniSource:
        needed = {"manifest-url": "url", "file": "path", "helm": "helm"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"source kind {self.kind!r} needs source.{needed}")
        extra = [k for k in ("url", "path", "helm") if k != needed and getattr(self, k) is not None]
        if extra:
            raise ValueError(f"source kind {self.kind!r} does not use: {', '.join('source.' + k for k in extra)}")
        return self


_MINOR = r"^v?\d+\.\d+(\.\d+)?$"


class CniCompatibility(Strict):
    """A generic CNI's declared compatibility (Antrea's rule is built in: cni_runbook.lifecycle.compat)."""

    kube_min: str | None = Field(None, pattern=_MINOR, description="oldest supported Kubernetes minor, e.g. 1.28")
    kube_max: str | None = Field(None, pattern=_MINOR, description="newest supported Kubernetes minor, e.g. 1.35")
    max_minor_skew: int | None = Field(None, ge=0, le=20, description="most minor versions one upgrade may move")
    accept_unsupported: bool = Field(False, description="install even on a Kubernetes version the rule does not "
                                     "support (recorded in the audit record)")


class Cni(Strict):
    profile: Literal["antrea", "lab", "flannel", "generic"] = "antrea"
    version: str | None = "v2.7.0"
    source: CniSource | None = None
    namespace: str = Field("kube-system", pattern=_NAME)
    config: FreeMap = Field({}, description="overrides merged into the CNI's own configuration")
    image_registry: Annotated[str | None, AfterValidator(_registry)] = Field(
        None, description="registry that replaces the images' registry (host[:port][/path], no scheme)")
    route: Literal["direct", "kubespray_custom_cni"] = "direct"
    server_dry_run: bool = False
    compatibility: CniCompatibility = CniCompatibility()

    @model_validator(mode="after")
    def _source_needed(self) -> Cni:
        if self.profile in ("generic", "flannel") and self.source is None:
            raise ValueError(f"profile {self.profile!r} needs cni.source (the vendor's manifest file or chart)")
        return self


# --- validation -----------------------------------------------------------------------------

class Thresholds(Strict):
    min_throughput_mbps: float = Field(100.0, ge=0)
    max_rtt_ms: float = Field(10.0, gt=0)
    max_loss_pct: float = Field(1.0, ge=0, le=100)
    max_dns_ms: float = Field(500.0, gt=0)
    throughput_tolerance_pct: float = Field(
        30.0, gt=0, le=100, description="pod-to-pod throughput may be at most this % below the host network's")


class ValidationImages(Strict):
    probe: str = "registry.k8s.io/e2e-test-images/agnhost:2.53"
    perf: str = "docker.io/networkstatic/iperf3:latest"


class ValidationTimeouts(Strict):
    pod_ready_s: int = Field(180, ge=1)
    probe_s: int = Field(10, ge=1)


class Validation(Strict):
    tests: Regex = Field(".*", description="run the tests whose id matches")
    skip: Regex | None = Field(None, description="skip the tests whose id matches")
    namespace: str = Field("cni-runbook-validation", pattern=_NAME)
    perf: bool = True
    thresholds: Thresholds = Thresholds()
    images: ValidationImages = ValidationImages()
    timeouts: ValidationTimeouts = ValidationTimeouts()
    attempts: int = Field(2, ge=1, le=5, description="tries per probe; a pass after a retry records its attempts")
    concurrency: int = Field(8, ge=1, le=64, description="source pods probed at the same time")
    keep_workloads: bool = Field(False, description="leave the test namespace in place after the run")
    external_target: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+:\d{1,5}$",
                                        description="host:port for pod-to-external; null: that test is skipped")
    mtu: int | None = Field(None, ge=576, le=9216, description="expected pod MTU; null: read from the pods")
    cni_agent: str | None = Field(None, pattern=r"^[a-z0-9-]+/[a-z0-9.-]+$",
                                  description="namespace/DaemonSet of the CNI agent; null: from cni.profile")
    perf_duration_s: int = Field(3, ge=1, le=60, description="iperf3 run time per measurement")
    latency_samples: int = Field(50, ge=5, le=1000, description="pings per round-trip latency measurement")


# --- policy and qos -------------------------------------------------------------------------

class Policy(Strict):
    files: list[FilePath] = Field([], description="NetworkPolicy manifests to apply and verify")
    scenarios: list[Annotated[str, Field(pattern=_NAME)]] = Field(
        ["all"], description="built-in scenarios to exercise by name ('all': every one; "
        "cni_runbook.policy.scenarios lists them)")
    keep: bool = Field(False, description="leave the policies of `files` applied after verification "
                       "(per object: annotation cni-runbook.io/keep: 'true')")
    layout: FreeMap | None = Field(None, description="own test namespaces/pods/labels "
                                   "(cni_runbook.policy.layout.layout_from_dict); default x,y,z by a,b,c")
    probe_timeout_s: float = Field(1.0, gt=0, le=30, description="per connection attempt")
    enforcement_timeout_s: float = Field(60.0, gt=0, description="how long a policy may take to be enforced")
    accept_no_enforcement: bool = Field(
        False, description="a CNI without NetworkPolicy enforcement (flannel) is recorded as waived, not failed")


class Bandwidth(Strict):
    ingress: str | None = Field("10M", pattern=_QUANTITY, description="kubernetes.io/ingress-bandwidth")
    egress: str | None = Field("10M", pattern=_QUANTITY, description="kubernetes.io/egress-bandwidth")


class AntreaEgress(Strict):
    """Antrea Egress CR bandwidth (needs the EgressTrafficShaping feature gate); rendered only."""

    egress_ip: ipaddress.IPv4Address | None = Field(None, description="SNAT IP of the Egress")
    external_ip_pool: str | None = Field(None, description="ExternalIPPool to take the Egress IP from")
    rate: str | None = Field(None, pattern=_QUANTITY, description="default: bandwidth.egress")
    burst: str | None = Field(None, pattern=_QUANTITY, description="default: the rate")


class Qos(Strict):
    enabled: bool = True
    bandwidth: Bandwidth = Bandwidth()
    tolerance_pct: float = Field(20.0, gt=0, le=100)
    namespace: str = Field("cni-runbook-qos", pattern=_NAME, description="namespace of the iperf3 pairs")
    duration_s: int = Field(5, ge=1, le=120, description="iperf3 run time per measurement")
    antrea_egress: AntreaEgress = AntreaEgress()


# --- lifecycle (stage 05) -------------------------------------------------------------------

class LifecycleAccept(Strict):
    """What the site explicitly accepts; each acceptance is recorded in the audit record."""

    unsupported_kube_version: bool = Field(False, description="the target is not supported on this Kubernetes")
    version_skew: bool = Field(False, description="the upgrade breaks the profile's version skew rule")
    policies_not_enforced: bool = Field(False, description="the replacement does not enforce the NetworkPolicies in force")


class Disruption(Strict):
    sample_pairs: int = Field(6, ge=1, le=64, description="pod pairs probed during the operation, across all nodes")
    interval_s: float = Field(0.5, gt=0, le=10, description="seconds between two probes of a pair")


class Leftovers(Strict):
    """What a generic installed CNI leaves on the nodes (known CNIs have their own: cni_runbook.lifecycle.profiles)."""

    conflists: list[str] = []
    binaries: list[str] = []
    interfaces: list[str] = Field([], description="names; a trailing * is a prefix")
    iptables_chains: list[str] = Field([], description="chain name prefixes")
    ipsets: list[str] = Field([], description="set name prefixes")
    files: list[str] = []
    pod_cidr_routes: bool = True


class Lifecycle(Strict):
    """Stage 05: upgrade the installed CNI (``cni``) in place, or replace it by another."""

    mode: Literal["upgrade", "replace"] = "upgrade"
    target: Cni | None = Field(None, description="the CNI to upgrade to / replace with, shaped like the cni section")
    pod_restart: Literal["node-by-node", "all-at-once"] = Field(
        "node-by-node", description="replacement: how pods that are not hostNetwork are restarted onto the new CNI")
    accept: LifecycleAccept = LifecycleAccept()
    disruption: Disruption = Disruption()
    rollback_on_failure: bool = Field(True, description="restore the recorded previous objects when the rollout "
                                      "or the after-checks fail")
    rollout_timeout_s: int = Field(300, ge=10, description="per DaemonSet/Deployment rollout")
    truth_tables: bool = Field(True, description="before/after: also stage 04's truth tables of the policy sets "
                               "of `policy` (scenarios, files)")
    current_leftovers: Leftovers | None = Field(None, description="a generic installed CNI's node leftovers")
    target_enforces_network_policy: bool | None = Field(None, description="a generic target: does it enforce "
                                                        "NetworkPolicy? null: the profile knows")

    @model_validator(mode="after")
    def _target_version(self) -> Lifecycle:
        # Cni's version default (Antrea's) means nothing for another target profile
        if self.target is not None and self.target.profile != "antrea" and "version" not in self.target.model_fields_set:
            self.target.version = None
        return self


# --- run ------------------------------------------------------------------------------------

def _stage_ref(value: Any) -> str:
    """Accept a stage id, number or name (YAML may hand numbers over as ints); return its id."""
    ref = str(value)
    if ref == "all":
        return ref
    if not stages.is_stage_ref(ref):
        raise ValueError(f"unknown stage {value!r}; expected 'all' or one of {', '.join(stages.STAGE_IDS)}")
    return stages.get(ref).id


StageRef = Annotated[str, BeforeValidator(_stage_ref)]


class Timeouts(Strict):
    cell_s: int = Field(1800, ge=1, description="papermill execution_timeout for each cell")
    stages: dict[StageRef, Annotated[int, Field(ge=1)]] = Field(
        {}, description="per-stage cell timeout overriding cell_s")

    def for_stage(self, stage_id: str) -> int:
        return self.stages.get(stage_id, self.cell_s)


class Run(Strict):
    plan: bool = False
    stages: list[StageRef] = Field(["all"], min_length=1)
    timeouts: Timeouts = Timeouts()
    kernel: str | None = Field(None, description="Jupyter kernel; default cni-runbook, else python3")
    record_key: FilePath | None = Field(
        None, description="HMAC key that signs run records, kept outside the run folders; "
        "null: $XDG_STATE_HOME/cni-runbook/record.key (created on first use)")


# --- the whole ------------------------------------------------------------------------------

class Params(Strict):
    """Everything a run needs, validated before anything is touched."""

    site: str = Field("lab", pattern=_NAME)
    provisioner: Provisioner = Provisioner()
    cluster: Cluster = Cluster()
    kubespray: Kubespray = Kubespray()
    cni: Cni = Cni()
    validation: Validation = Validation()
    policy: Policy = Policy()
    qos: Qos = Qos()
    lifecycle: Lifecycle = Lifecycle()
    run: Run = Run()

    @model_validator(mode="after")
    def _across_sections(self) -> Params:
        if self.provisioner.kind == "kubespray" and not self.cluster.nodes:
            raise KeyProblem("cluster.nodes", "provisioner 'kubespray' needs at least one node here")
        if self.provisioner.kind == "existing" and not self.provisioner.kubeconfig:
            raise KeyProblem("provisioner.kubeconfig", "provisioner 'existing' needs the path of its kubeconfig")
        custom = self.kubespray.network_plugin == "custom_cni"
        if custom != (self.cni.route == "kubespray_custom_cni"):
            raise KeyProblem("cni.route", f"{self.cni.route!r} with kubespray.network_plugin "
                             f"{self.kubespray.network_plugin!r}: route 'kubespray_custom_cni' goes with "
                             "network_plugin 'custom_cni', and only with it")
        ks = self.kubespray
        etcd = sum("etcd" in n.roles for n in self.cluster.nodes)
        kubeadm_etcd = str(ks.extra_vars.get("etcd_deployment_type", "")) == "kubeadm"
        if self.cluster.nodes and etcd % 2 == 0 and not (etcd == 0 and kubeadm_etcd):
            raise KeyProblem("cluster.nodes[*].roles", f"the number of etcd nodes must be odd, got {etcd}"
                             + ("; 0 only with kubespray.extra_vars.etcd_deployment_type: kubeadm "
                                "(etcd on the control plane)" if etcd == 0 else ""))
        for i, node in enumerate(self.cluster.nodes):
            for field_name in ("ip", "access_ip"):
                addr = getattr(node, field_name)
                if addr is not None and (addr in ks.kube_pods_subnet or addr in ks.kube_service_addresses):
                    net = "kubespray.kube_pods_subnet" if addr in ks.kube_pods_subnet else "kubespray.kube_service_addresses"
                    raise KeyProblem(f"cluster.nodes[{i}].{field_name}",
                                     f"{addr} of node {node.name} lies inside {net}; expected an address outside "
                                     "the pod and service networks")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One top-level section as plain JSON-compatible data."""
        return self.model_dump(mode="json")[name]

    def secret_refs(self) -> list[str]:
        """Every secret reference set in these params: fields marked SECRET, and ``env:``/``file:``
        references anywhere in free-form mappings (kubespray.extra_vars, cni.config, Helm values)."""
        found: list[str] = []

        def walk(model: BaseModel) -> None:
            for name, info in type(model).model_fields.items():
                value = getattr(model, name)
                markers = list(info.metadata) + unwrap(info.annotation)[1]
                if SECRET in markers and isinstance(value, str):
                    found.append(value)
                elif MAY_HOLD_SECRETS in markers:  # env:/file: references anywhere in free-form data
                    found.extend(secrets.references_in(value))
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, BaseModel):
                        walk(item)

        walk(self)
        return found
