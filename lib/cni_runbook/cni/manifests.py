"""Multi-document Kubernetes manifests: parsing, checks and apply order.

A manifest is split into documents at column-0 ``---`` lines, keeping each document's original
text, so that ``"".join(d.text for d in split_documents(m))`` gives back ``m.text`` byte for byte.
Renderers edit that text in place; the apply engine consumes :func:`ordered_objects`.

Apply order (``PHASES``), stable within a phase (kind order below, then manifest order):

1. ``namespaces``        Namespace
2. ``crds``              CustomResourceDefinition
3. ``rbac``              ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding
4. ``config``            ConfigMap, Secret (and PriorityClass, RuntimeClass, quotas...)
5. ``unknown``           kinds of a built-in API group this module does not know: flagged
6. ``services``          Service, Endpoints, EndpointSlice
7. ``webhooks``          MutatingWebhookConfiguration, ValidatingWebhookConfiguration, policies
8. ``workloads``         DaemonSet, Deployment, StatefulSet, ReplicaSet, Job, CronJob, Pod, ...
9. ``custom-resources``  objects of a CRD (from the manifest or a known API group); they come
                         after the workloads because their admission webhooks are usually served
                         by those workloads: an apply engine should wait for the rollouts first
10. ``apiservices``      APIService, last: an APIService whose backend is not ready yet breaks
                         API discovery for every client
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError
from .yamltext import load_yaml

PHASES: tuple[str, ...] = (
    "namespaces",
    "crds",
    "rbac",
    "config",
    "unknown",
    "services",
    "webhooks",
    "workloads",
    "custom-resources",
    "apiservices",
)

#: (group, kind) -> (phase, namespaced). The position in this table is the order within a phase.
BUILTIN_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("", "Namespace"): ("namespaces", False),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ("crds", False),
    ("", "ServiceAccount"): ("rbac", True),
    ("rbac.authorization.k8s.io", "ClusterRole"): ("rbac", False),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ("rbac", False),
    ("rbac.authorization.k8s.io", "Role"): ("rbac", True),
    ("rbac.authorization.k8s.io", "RoleBinding"): ("rbac", True),
    ("", "ConfigMap"): ("config", True),
    ("", "Secret"): ("config", True),
    ("scheduling.k8s.io", "PriorityClass"): ("config", False),
    ("node.k8s.io", "RuntimeClass"): ("config", False),
    ("", "ResourceQuota"): ("config", True),
    ("", "LimitRange"): ("config", True),
    ("", "PersistentVolume"): ("config", False),
    ("", "PersistentVolumeClaim"): ("config", True),
    ("storage.k8s.io", "StorageClass"): ("config", False),
    ("networking.k8s.io", "NetworkPolicy"): ("config", True),
    ("networking.k8s.io", "IngressClass"): ("config", False),
    ("", "Service"): ("services", True),
    ("", "Endpoints"): ("services", True),
    ("discovery.k8s.io", "EndpointSlice"): ("services", True),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): ("webhooks", False),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): ("webhooks", False),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"): ("webhooks", False),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"): ("webhooks", False),
    ("apps", "DaemonSet"): ("workloads", True),
    ("apps", "Deployment"): ("workloads", True),
    ("apps", "StatefulSet"): ("workloads", True),
    ("apps", "ReplicaSet"): ("workloads", True),
    ("batch", "Job"): ("workloads", True),
    ("batch", "CronJob"): ("workloads", True),
    ("", "Pod"): ("workloads", True),
    ("policy", "PodDisruptionBudget"): ("workloads", True),
    ("autoscaling", "HorizontalPodAutoscaler"): ("workloads", True),
    ("networking.k8s.io", "Ingress"): ("workloads", True),
    ("apiregistration.k8s.io", "APIService"): ("apiservices", False),
}

#: API groups served by kube-apiserver itself: a kind of these groups needs no CRD.
BUILTIN_GROUPS: frozenset[str] = frozenset(
    {g for g, _ in BUILTIN_KINDS}
    | {
        "authentication.k8s.io",
        "authorization.k8s.io",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "resource.k8s.io",
        "storagemigration.k8s.io",
    }
)

#: Namespaces every kubeadm (hence Kubespray) cluster has before a CNI is installed.
DEFAULT_EXISTING_NAMESPACES: tuple[str, ...] = ("default", "kube-system", "kube-public", "kube-node-lease")

_KIND_RANK = {key: i for i, key in enumerate(BUILTIN_KINDS)}
_SEPARATOR = re.compile(r"^---(?:[ \t].*)?$")
_WORKLOAD_POD_PATHS = {
    "Pod": ("spec",),
    "DaemonSet": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


@dataclass(frozen=True)
class Manifest:
    """The text of a (multi-document) manifest and where it came from (a path or URL)."""

    text: str
    source: str = "<manifest>"

    @classmethod
    def from_file(cls, path: str | Path) -> Manifest:
        """Read a manifest file (UTF-8); ``source`` is the path."""
        path = Path(path)
        try:
            return cls(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: manifest is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


@dataclass(frozen=True)
class Document:
    """One document of a manifest.

    ``text`` includes its leading ``---`` line (if any) and comments, ``line`` is the 1-based line of
    the file where ``text`` starts, ``index`` the 1-based document number, ``body`` the parsed
    value (``None`` for an empty document).
    """

    source: str
    index: int
    line: int
    text: str
    body: Any

    @property
    def where(self) -> str:
        """``file: document N (line L)`` for messages."""
        return f"{self.source}: document {self.index} (line {self.line})"


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identity of a Kubernetes object: apiVersion, kind, namespace (None if cluster-scoped), name."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @property
    def group(self) -> str:
        """API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where} ({self.api_version})"


@dataclass(frozen=True)
class ManifestObject:
    """A Kubernetes object of a manifest, ready for an apply engine.

    ``body`` is the parsed document (a dict, unmodified: a namespaced object that names no
    namespace keeps none, ``ref.namespace`` tells where it goes), ``text`` the document's original
    text, ``phase`` its apply phase (see ``PHASES``), ``order`` its 1-based position in the apply
    order (0 until ordered), ``images`` the container images it runs, ``flags`` warnings (unknown
    kind, namespace ignored...).
    """

    ref: ObjectRef
    body: dict
    text: str
    source: str
    document: int
    line: int
    phase: str = "unknown"
    namespaced: bool | None = None
    order: int = 0
    images: tuple[str, ...] = ()
    flags: tuple[str, ...] = field(default=())

    @property
    def where(self) -> str:
        return f"{self.source}: document {self.document} (line {self.line})"


@dataclass(frozen=True)
class RenderedManifest:
    """The result of a profile's renderer: the upstream manifest, the rendered one, what changed.

    ``changes`` are one-line descriptions (``antrea-agent.conf: tunnelType = 'vxlan'``,
    ``image a -> b``); :mod:`cni_runbook.cni.diff` shows the line diff.
    """

    profile: str
    upstream: Manifest
    rendered: Manifest
    changes: tuple[str, ...] = ()

    def objects(self, **checks: Any) -> list[ManifestObject]:
        """The rendered objects in apply order (keyword arguments as in :func:`ordered_objects`)."""
        return ordered_objects(self.rendered, **checks)


def split_documents(manifest: Manifest) -> list[Document]:
    """Split ``manifest`` into documents and parse each one (YAML errors become ManifestError).

    Raises :class:`ManifestError` listing every document that is not valid YAML, with the file,
    the document number and the line/column of the error in the file.
    """
    lines = manifest.text.splitlines(keepends=True)
    chunks: list[tuple[int, list[str]]] = []
    start, current = 1, []
    for number, line in enumerate(lines, start=1):
        if _SEPARATOR.match(line.rstrip("\r\n")) and current:
            chunks.append((start, current))
            start, current = number, []
        current.append(line)
    if current or not chunks:
        chunks.append((start, current))

    documents, problems = [], []
    for index, (line, chunk) in enumerate(chunks, start=1):
        text = "".join(chunk)
        try:
            body = load_yaml(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            at = f"line {line + mark.line}, column {mark.column + 1}" if mark else f"line {line}"
            problems.append(
                f"{manifest.source}: document {index} (line {line}): invalid YAML at {at}: "
                f"{exc.problem or exc.context}"
            )
            continue
        except yaml.YAMLError as exc:
            problems.append(f"{manifest.source}: document {index} (line {line}): invalid YAML: {exc}")
            continue
        documents.append(Document(manifest.source, index, line, text, body))
    if problems:
        raise ManifestError(problems)
    return documents


def parse_manifest(manifest: Manifest, *, default_namespace: str = "default") -> list[ManifestObject]:
    """Parse ``manifest`` into objects in file order (no ordering, no cross-object checks).

    Empty documents are skipped. A document must be a mapping with a string ``apiVersion``,
    ``kind`` and ``metadata.name``; ``kind: List`` is refused. A namespaced built-in object that
    names no namespace goes to ``default_namespace`` (``kubectl apply`` uses the context's
    namespace; Kubespray's custom_cni applies with ``-n kube-system``).
    """
    objects, problems = [], []
    for doc in split_documents(manifest):
        if doc.body is None:
            continue
        body = doc.body
        if not isinstance(body, dict):
            problems.append(f"{doc.where}: expected a mapping (a Kubernetes object), got {type(body).__name__}")
            continue
        missing = [k for k in ("apiVersion", "kind") if not isinstance(body.get(k), str) or not body.get(k)]
        metadata = body.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if not isinstance(name, str) or not name:
            missing.append("metadata.name")
        if missing:
            problems.append(f"{doc.where}: missing or non-string {', '.join(missing)} (every object needs apiVersion, kind and metadata.name)")
            continue
        kind = body["kind"]
        if kind == "List" or kind.endswith("List") and isinstance(body.get("items"), list):
            problems.append(f"{doc.where}: kind {kind} is not supported: put each item in its own document")
            continue
        namespace = metadata.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            problems.append(f"{doc.where}: {kind} {name}: metadata.namespace must be a non-empty string, got {namespace!r}")
            continue
        group = body["apiVersion"].rpartition("/")[0]
        phase, namespaced = BUILTIN_KINDS.get((group, kind), ("unknown", None))
        if namespaced and namespace is None:
            namespace = default_namespace
        objects.append(
            ManifestObject(
                ref=ObjectRef(body["apiVersion"], kind, namespace, name),
                body=body,
                text=doc.text,
                source=doc.source,
                document=doc.index,
                line=doc.line,
                phase=phase,
                namespaced=namespaced,
                images=tuple(pod_images(body)),
            )
        )
    if problems:
        raise ManifestError(problems)
    return objects


def pod_images(body: dict) -> list[str]:
    """Images of the containers, initContainers and ephemeralContainers of a workload object."""
    path = _WORKLOAD_POD_PATHS.get(body.get("kind", ""))
    spec: Any = body
    for key in path or ():
        spec = spec.get(key) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return []
    images = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                images.append(container["image"])
    return images


def ordered_objects(
    manifests: Manifest | Sequence[Manifest] | Iterable[ManifestObject],
    *,
    existing_namespaces: Iterable[str] = DEFAULT_EXISTING_NAMESPACES,
    known_api_groups: Iterable[str] = (),
    default_namespace: str = "default",
) -> list[ManifestObject]:
    """Parse, check and order the objects of one or more manifests for applying.

    Checks (all problems are reported together in one :class:`ManifestError`):

    - every document parses and names apiVersion, kind and metadata.name;
    - no object appears twice (same apiVersion group, kind, namespace and name);
    - a custom resource's CRD is in the manifests (with that version served) or its API group is
      in ``known_api_groups`` (groups whose CRDs are already on the cluster);
    - a namespaced object's namespace is created by the manifests or is in
      ``existing_namespaces`` (default: the four namespaces of a fresh kubeadm cluster).

    Returns the objects sorted by phase (``PHASES``), kind order within a phase, then manifest
    order, with ``order`` set (1-based) and ``flags`` filled (e.g. unknown kinds).
    """
    if isinstance(manifests, Manifest):
        manifests = [manifests]
    objects: list[ManifestObject] = []
    problems: list[str] = []
    for item in manifests:
        if isinstance(item, ManifestObject):
            objects.append(item)
            continue
        try:
            objects.extend(parse_manifest(item, default_namespace=default_namespace))
        except ManifestError as exc:
            problems.extend(exc.problems)

    crds = _crds_by_kind(objects)
    known_groups = set(known_api_groups)
    created_namespaces = {o.ref.name for o in objects if o.ref.kind == "Namespace" and o.ref.group == ""}
    namespaces_ok = created_namespaces | set(existing_namespaces)

    checked: list[ManifestObject] = []
    seen: dict[tuple, ManifestObject] = {}
    for obj in objects:
        ref, flags = obj.ref, list(obj.flags)
        phase, namespaced = obj.phase, obj.namespaced
        if (ref.group, ref.kind) not in BUILTIN_KINDS:
            if ref.group in BUILTIN_GROUPS:
                phase = "unknown"
                flags.append(f"kind {ref.kind} of API group {ref.group or 'core'!r} is not one this runbook knows: applied after config")
            elif (ref.group, ref.kind) in crds:
                crd = crds[(ref.group, ref.kind)]
                phase = "custom-resources"
                namespaced = crd["scope"] == "Namespaced"
                if ref.version not in crd["versions"]:
                    problems.append(
                        f"{obj.where}: {ref}: CustomResourceDefinition {crd['name']} serves versions "
                        f"{', '.join(sorted(crd['versions'])) or 'none'}, not {ref.version}"
                    )
            elif ref.group in known_groups:
                phase = "custom-resources"
            else:
                expected = f"{ref.kind.lower()}s.{ref.group}"
                problems.append(
                    f"{obj.where}: {ref}: no CustomResourceDefinition for kind {ref.kind} in group {ref.group}: "
                    f"expected a CRD like {expected} in the manifest, or {ref.group!r} in known_api_groups"
                )
        if namespaced and ref.namespace is None:
            ref = ObjectRef(ref.api_version, ref.kind, default_namespace, ref.name)
        if namespaced is False and ref.namespace is not None:
            flags.append(f"cluster-scoped {ref.kind}: metadata.namespace {ref.namespace!r} is ignored by the API server")
        if namespaced is not False and ref.namespace is not None and ref.namespace not in namespaces_ok:
            problems.append(
                f"{obj.where}: {ref}: namespace {ref.namespace!r} is neither created by the manifest nor in the "
                f"existing namespaces ({', '.join(sorted(namespaces_ok))})"
            )
        identity = (ref.group, ref.kind, ref.namespace if namespaced is not False else None, ref.name)
        if identity in seen:
            problems.append(f"{obj.where}: {ref} is defined twice (first at {seen[identity].where})")
        seen[identity] = obj
        checked.append(
            ManifestObject(
                ref=ref,
                body=obj.body,
                text=obj.text,
                source=obj.source,
                document=obj.document,
                line=obj.line,
                phase=phase,
                namespaced=namespaced,
                images=obj.images,
                flags=tuple(flags),
            )
        )
    if problems:
        raise ManifestError(problems)

    position = {id(o): i for i, o in enumerate(checked)}
    checked.sort(
        key=lambda o: (
            PHASES.index(o.phase),
            _KIND_RANK.get((o.ref.group, o.ref.kind), len(_KIND_RANK)),
            position[id(o)],
        )
    )
    return [_with_order(o, i) for i, o in enumerate(checked, start=1)]


def _with_order(obj: ManifestObject, order: int) -> ManifestObject:
    return ManifestObject(
        ref=obj.ref,
        body=obj.body,
        text=obj.text,
        source=obj.source,
        document=obj.document,
        line=obj.line,
        phase=obj.phase,
        namespaced=obj.namespaced,
        order=order,
        images=obj.images,
        flags=obj.flags,
    )


def _crds_by_kind(objects: list[ManifestObject]) -> dict[tuple[str, str], dict]:
    """(group, kind) -> {name, scope, versions served} for every CRD in ``objects``."""
    crds = {}
    for obj in objects:
        if (obj.ref.group, obj.ref.kind) != ("apiextensions.k8s.io", "CustomResourceDefinition"):
            continue
        spec = obj.body.get("spec") or {}
        group, kind = spec.get("group"), (spec.get("names") or {}).get("kind")
        if isinstance(group, str) and isinstance(kind, str):
            versions = {v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served", True)}
            crds[(group, kind)] = {"name": obj.ref.name, "scope": spec.get("scope", "Namespaced"), "versions": versions}
    return crds


def objects_table(objects: Iterable[ManifestObject]):
    """A pandas DataFrame of objects: order, phase, kind, namespace, name, apiVersion, images, flags."""
    import pandas as pd

    rows = [
        {
            "order": o.order,
            "phase": o.phase,
            "kind": o.ref.kind,
            "namespace": o.ref.namespace or "",
            "name": o.ref.name,
            "apiVersion": o.ref.api_version,
            "images": ", ".join(dict.fromkeys(o.images)),
            "flags": "; ".join(o.flags),
        }
        for o in objects
    ]
    columns = ["order", "phase", "kind", "namespace", "name", "apiVersion", "images", "flags"]
    return pd.DataFrame(rows, columns=columns)
