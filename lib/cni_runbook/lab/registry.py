"""The lab's local image registry: configuration for Debian's docker-registry and a push client.

The lab runs ``/usr/bin/docker-registry serve <config>`` on the lab bridge's host address
(10.99.0.1:5000 for the default lab, plain HTTP) with its storage in the build cache; the nodes' containerd reaches it as
``registry.cnilab.local:5000``. This module writes that config, says which argv
starts the server (starting and stopping it is the lab supervisor's job), waits
until it answers, and pushes OCI image layouts over the Registry HTTP API v2 with
the standard library only.

A push is idempotent and cheap when nothing changed: one HEAD on the manifest when the
tag already points at the same digest, otherwise one HEAD per blob and uploads only for
the blobs the registry lacks.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .images import MEDIA_TYPE_MANIFEST, ImageRef, build_cache_dir

__all__ = [
    "DOCKER_REGISTRY",
    "LAB_REGISTRY_ADDR",
    "PushResult",
    "RegistryError",
    "fetch_blob",
    "fetch_manifest",
    "push",
    "push_all",
    "registry_command",
    "registry_config",
    "registry_storage_dir",
    "wait_ready",
    "write_registry_config",
]

#: Debian's docker-registry (package docker-registry).
DOCKER_REGISTRY = Path("/usr/bin/docker-registry")
#: Where the default lab serves the registry (host side of the cnilab0 bridge).
LAB_REGISTRY_ADDR = "10.99.0.1:5000"

# Requests only ever go to the lab's own addresses: never through an HTTP proxy
# that the environment may configure for the internet.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RegistryError(RuntimeError):
    """The registry refused or failed a request, or never became ready."""


@dataclass(frozen=True)
class PushResult:
    repo: str
    tag: str
    manifest_digest: str
    uploaded: tuple[str, ...]  # digests of blobs sent
    skipped: tuple[str, ...]  # digests the registry already had
    up_to_date: bool  # the tag already pointed at this manifest: nothing was sent


# --- server configuration ------------------------------------------------------------


def registry_storage_dir() -> Path:
    """Persistent storage for the lab registry (survives ``lab down``, like a site mirror)."""
    return build_cache_dir() / "registry"


def registry_config(storage_dir: Path, addr: str = LAB_REGISTRY_ADDR) -> dict:
    """docker-registry 2.8 configuration: filesystem storage, plain HTTP on ``addr``, deletes on."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": addr, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }


def write_registry_config(config_path: Path, storage_dir: Path, addr: str = LAB_REGISTRY_ADDR) -> Path:
    """Write the config file (and create the storage directory); returns ``config_path``."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(
        "# docker-registry config written by cni-runbook for the lab registry\n"
        + yaml.safe_dump(registry_config(storage_dir, addr), sort_keys=False)
    )
    return config_path


def registry_command(config_path: Path) -> list[str]:
    """argv that runs the registry in the foreground (the caller supervises the process)."""
    if not DOCKER_REGISTRY.exists():
        raise RegistryError(f"{DOCKER_REGISTRY} not found: install the Debian package docker-registry")
    return [str(DOCKER_REGISTRY), "serve", str(config_path)]


# --- HTTP helpers ---------------------------------------------------------------------------


def _url(addr: str, path: str) -> str:
    return f"http://{addr}{path}"


def _request(
    method: str,
    url: str,
    *,
    data=None,
    headers: Mapping[str, str] | None = None,
    ok: tuple[int, ...] = (200,),
    timeout: float = 60.0,
):
    """Send one request; return (status, headers, body). Statuses outside ``ok`` raise,
    except 404 on HEAD/GET, which is returned so callers can tell "absent"."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _opener.open(req, timeout=timeout) as resp:
            body = resp.read() if method != "HEAD" else b""
            status, resp_headers = resp.status, resp.headers
    except urllib.error.HTTPError as err:
        status, resp_headers = err.code, err.headers
        body = err.read() if method != "HEAD" else b""
        if status == 404 and method in ("HEAD", "GET"):
            return status, resp_headers, body
    except (urllib.error.URLError, OSError) as err:
        raise RegistryError(f"{method} {url}: {getattr(err, 'reason', err)}") from err
    if status not in ok:
        detail = body.decode(errors="replace")[:500]
        raise RegistryError(f"{method} {url} -> HTTP {status} {detail}".rstrip())
    return status, resp_headers, body


def wait_ready(addr: str, timeout: float = 15.0, interval: float = 0.1) -> None:
    """Wait until ``GET /v2/`` answers 200 (the API version check); raise RegistryError on timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            status, _, _ = _request("GET", _url(addr, "/v2/"), timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except RegistryError as err:
            last = str(err)
        if time.monotonic() >= deadline:
            raise RegistryError(f"registry at {addr} not ready after {timeout:.0f} s: {last}")
        time.sleep(interval)


# --- push -------------------------------------------------------------------------------------


def _layout_manifest(layout: Path) -> tuple[bytes, str, str]:
    """(manifest bytes, digest, media type) of the single image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    manifests = index.get("manifests", [])
    if len(manifests) != 1:
        raise RegistryError(f"{layout}: expected one image in index.json, found {len(manifests)}")
    desc = manifests[0]
    digest = desc["digest"]
    data = _blob_path(layout, digest).read_bytes()
    return data, digest, desc.get("mediaType", MEDIA_TYPE_MANIFEST)


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest


def _blob_exists(addr: str, repo: str, digest: str) -> bool:
    status, _, _ = _request("HEAD", _url(addr, f"/v2/{repo}/blobs/{digest}"))
    return status == 200


def _upload_blob(addr: str, repo: str, digest: str, path: Path) -> None:
    """Monolithic upload: POST opens the upload session, one PUT sends the whole blob."""
    _, headers, _ = _request("POST", _url(addr, f"/v2/{repo}/blobs/uploads/"), data=b"", ok=(202,))
    location = headers.get("Location")
    if not location:
        raise RegistryError(f"POST /v2/{repo}/blobs/uploads/ returned no Location header")
    location = urllib.parse.urljoin(_url(addr, "/"), location)
    separator = "&" if urllib.parse.urlsplit(location).query else "?"
    put_url = f"{location}{separator}digest={urllib.parse.quote(digest)}"
    size = path.stat().st_size
    with path.open("rb") as body:
        _request(
            "PUT",
            put_url,
            data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            ok=(201,),
            timeout=300.0,
        )


def _remote_manifest_digest(addr: str, repo: str, tag: str, media_type: str) -> str | None:
    status, headers, _ = _request(
        "HEAD", _url(addr, f"/v2/{repo}/manifests/{tag}"), headers={"Accept": media_type}
    )
    return headers.get("Docker-Content-Digest") if status == 200 else None


def push(image_layout: Path, registry_addr: str, repo: str, tag: str) -> PushResult:
    """Push the image in an OCI layout directory to ``registry_addr`` as ``repo:tag``.

    Blobs the registry already has are not sent again; when the tag already names the
    same manifest nothing is sent at all.
    """
    manifest_bytes, manifest_digest, media_type = _layout_manifest(image_layout)
    if _remote_manifest_digest(registry_addr, repo, tag, media_type) == manifest_digest:
        return PushResult(repo, tag, manifest_digest, (), (), up_to_date=True)

    manifest = json.loads(manifest_bytes)
    uploaded: list[str] = []
    skipped: list[str] = []
    for desc in [manifest["config"], *manifest["layers"]]:
        digest = desc["digest"]
        if _blob_exists(registry_addr, repo, digest):
            skipped.append(digest)
            continue
        _upload_blob(registry_addr, repo, digest, _blob_path(image_layout, digest))
        uploaded.append(digest)

    _, headers, _ = _request(
        "PUT",
        _url(registry_addr, f"/v2/{repo}/manifests/{tag}"),
        data=manifest_bytes,
        headers={"Content-Type": media_type},
        ok=(201,),
    )
    returned = headers.get("Docker-Content-Digest")
    if returned and returned != manifest_digest:
        raise RegistryError(f"registry stored {repo}:{tag} as {returned}, expected {manifest_digest}")
    return PushResult(repo, tag, manifest_digest, tuple(uploaded), tuple(skipped), up_to_date=False)


def push_all(
    images: Mapping[str, ImageRef], registry_addr: str = LAB_REGISTRY_ADDR, progress=print
) -> dict[str, PushResult]:
    """Push every built image (``images.build_all()``'s result) under its lab repo and tag."""
    results: dict[str, PushResult] = {}
    current: list[str] = []
    for name, image in images.items():
        result = push(image.layout, registry_addr, image.repo, image.tag)
        results[name] = result
        if result.up_to_date:
            current.append(f"{image.repo}:{image.tag}")
        else:
            progress(
                f"[registry] pushed {image.repo}:{image.tag} ({len(result.uploaded)} blobs sent, "
                f"{len(result.skipped)} already there)"
            )
    if current:  # one line for the images the registry already has
        progress(f"[registry] {len(current)} already up to date: {', '.join(current)}")
    return results


# --- reading back ------------------------------------------------------------------------------


def fetch_manifest(
    registry_addr: str, repo: str, reference: str, media_type: str = MEDIA_TYPE_MANIFEST
) -> tuple[bytes, str, str]:
    """GET a manifest; returns (body, Docker-Content-Digest, Content-Type)."""
    status, headers, body = _request(
        "GET", _url(registry_addr, f"/v2/{repo}/manifests/{reference}"), headers={"Accept": media_type}
    )
    if status == 404:
        raise RegistryError(f"{repo}:{reference} not found in {registry_addr}")
    return body, headers.get("Docker-Content-Digest", ""), headers.get("Content-Type", "")


def fetch_blob(registry_addr: str, repo: str, digest: str) -> bytes:
    status, _, body = _request("GET", _url(registry_addr, f"/v2/{repo}/blobs/{digest}"))
    if status == 404:
        raise RegistryError(f"blob {digest} not found in {registry_addr}/{repo}")
    return body
