"""Container image references: parsing, registry mirroring and in-place rewriting in manifests.

Mirror rule (air-gapped sites): the image's registry host and every path component except the
last are replaced by the mirror prefix; the last component, the tag and the digest stay::

    mirror_image("antrea/antrea-agent-ubuntu:v2.7.0", "mirror.local:5000/antrea")
        == "mirror.local:5000/antrea/antrea-agent-ubuntu:v2.7.0"
    mirror_image("registry.k8s.io/sig/pause:3.10", "mirror.local:5000/k8s")
        == "mirror.local:5000/k8s/pause:3.10"

so a site mirrors each image it needs under one prefix (``crane copy``/``skopeo copy`` to
``<prefix>/<name>:<tag>``). Two different images that would land on the same mirrored name are
refused.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, replace


from .errors import CniError, ManifestError
from .manifests import Document, Manifest, pod_images, split_documents
from .yamltext import load_yaml, replace_images

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_REGISTRY = re.compile(r"^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|[A-Za-z0-9-]+:[0-9]+|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``[registry/]repository[:tag][@digest]``."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Last path component of the repository (``antrea-agent-ubuntu``)."""
        return self.repository.rsplit("/", 1)[-1]

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag, self.digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(image: str) -> ImageRef:
    """Parse an image reference; raises CniError naming the image if it is malformed."""
    rest, digest = image, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise CniError(f"image {image!r}: malformed digest {digest!r} (expected algorithm:hex)")
    tag = None
    last_slash = rest.rfind("/")
    if ":" in rest[last_slash + 1 :]:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise CniError(f"image {image!r}: malformed tag {tag!r}")
    parts = rest.split("/")
    registry = None
    if len(parts) > 1 and (parts[0] == "localhost" or "." in parts[0] or ":" in parts[0]):
        registry = parts.pop(0)
    if not parts or not all(_COMPONENT.match(p) for p in parts):
        raise CniError(f"image {image!r}: malformed repository {'/'.join(parts)!r} (lowercase path components expected)")
    return ImageRef(registry, "/".join(parts), tag, digest)


def check_mirror_prefix(prefix: str, *, where: str = "image_registry") -> str:
    """Validate a mirror prefix (``host[:port][/path]``, no scheme, no tag); returns it without a trailing slash."""
    prefix = prefix.strip().rstrip("/")
    if "://" in prefix:
        raise CniError(f"{where}: {prefix!r}: expected host[:port][/path] without a scheme (e.g. mirror.local:5000/antrea)")
    host, _, path = prefix.partition("/")
    if not _REGISTRY.match(host):
        raise CniError(f"{where}: {prefix!r}: {host!r} is not a registry host (expected e.g. mirror.local:5000 or registry.example.com)")
    if path and not all(_COMPONENT.match(p) for p in path.split("/")):
        raise CniError(f"{where}: {prefix!r}: path {path!r} must be lowercase components separated by '/', without a tag")
    return prefix


def mirror_image(image: str, prefix: str) -> str:
    """Apply the mirror rule (module docstring) to ``image``."""
    ref = parse_image(image)
    prefix = check_mirror_prefix(prefix)
    host, _, path = prefix.partition("/")
    repository = f"{path}/{ref.name}" if path else ref.name
    return str(ImageRef(host, repository, ref.tag, ref.digest))


def rewrite_images(manifest: Manifest, rewrite: Callable[[str], str]) -> tuple[Manifest, dict[str, str]]:
    """Rewrite every container image of ``manifest``'s workloads with ``rewrite`` (image -> image).

    Only the ``image:`` lines change; each edited document is re-parsed and must equal the
    original with the new images. Returns the new manifest and the mapping actually applied.
    Raises CniError if two images map to the same new name or an image line cannot be edited.
    """
    documents, mapping = rewrite_document_images(split_documents(manifest), rewrite)
    return Manifest("".join(d.text for d in documents), manifest.source), mapping


def rewrite_document_images(documents: list[Document], rewrite: Callable[[str], str]) -> tuple[list[Document], dict[str, str]]:
    """:func:`rewrite_images` on already split documents; returns new documents (bodies updated)."""
    mapping: dict[str, str] = {}
    reverse: dict[str, str] = {}
    out = []
    for doc in documents:
        images = pod_images(doc.body) if isinstance(doc.body, dict) else []
        local = {}
        for image in images:
            new = mapping.get(image) or rewrite(image)
            if reverse.setdefault(new, image) != image:
                raise CniError(f"{doc.where}: images {reverse[new]!r} and {image!r} would both become {new!r}")
            mapping[image] = new
            local[image] = new
        if not any(old != new for old, new in local.items()):
            out.append(doc)
            continue
        text, _ = replace_images(doc.text, local)
        expected = copy.deepcopy(doc.body)
        _map_pod_images(expected, local)
        body = load_yaml(text)
        if body != expected:
            raise ManifestError(
                f"{doc.where}: could not rewrite the images of {doc.body.get('kind')} "
                f"{doc.body.get('metadata', {}).get('name')} line by line (expected one 'image: <ref>' line per container)"
            )
        out.append(replace(doc, text=text, body=body))
    return out, {k: v for k, v in mapping.items() if k != v}


def _map_pod_images(body: dict, mapping: dict[str, str]) -> None:
    """Replace images in ``body`` in place (the same walk as :func:`pod_images`)."""
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(value, list):
                    for container in value:
                        if isinstance(container, dict) and container.get("image") in mapping:
                            container["image"] = mapping[container["image"]]
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
