"""Obtain a CNI source into the run's artifacts, with its sha256 recorded.

Sources: a manifest URL (Antrea's default: the release asset ``antrea.yml`` of the chosen
version), a local manifest file, a chart from a Helm repository (``index.yaml`` + the chart
archive, whose digest from the index is checked; a private CA with ``ca_file``), a chart in an
OCI registry (``helm pull``, over plain HTTP with ``plain_http`` or with a ``ca_file``), or a
local chart: a directory (packed into a reproducible ``.tgz``) or a packed ``.tgz``. An
air-gapped site points at a local file, a local chart, or its mirror; :func:`helm_chart` picks
the route from the params' ``cni.source.helm``.

Every source is stored under ``<artifacts_dir>/`` as ``<name>`` with two sidecars:
``<name>.sha256`` (``sha256sum -c`` format) and ``<name>.source.json`` (the
:class:`SourceRecord`: where it came from, when, its size and sha256). Downloads go to a
temporary file first, so an interrupted fetch never leaves a partial file under the final name.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import ssl
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SourceError
from .manifests import Manifest

ANTREA_RELEASE_URL = "https://github.com/antrea-io/antrea/releases/download/{version}/antrea.yml"
DEFAULT_TIMEOUT_S = 60.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SourceRecord:
    """A stored source: ``kind`` (url | file | helm-repo | helm-local), ``origin`` (URL or path),
    ``path`` (the stored copy), ``sha256``, ``size`` (bytes), ``obtained_at`` (UTC ISO 8601),
    ``details`` (chart name/version, values file...)."""

    kind: str
    origin: str
    path: Path
    sha256: str
    size: int
    obtained_at: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    def manifest(self) -> Manifest:
        """The stored file as a :class:`Manifest` (``source`` is the origin, for messages)."""
        return Manifest(self.path.read_text(encoding="utf-8"), self.origin)


def antrea_manifest_url(version: str) -> str:
    """URL of Antrea's release manifest for ``version`` (``v2.7.0`` or ``2.7.0``)."""
    from .antrea import normalize_version

    return ANTREA_RELEASE_URL.format(version=normalize_version(version))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _store(data_path: Path, artifacts_dir: Path, name: str, *, kind: str, origin: str,
           expected_sha256: str | None, details: dict[str, Any] | None = None) -> SourceRecord:
    """Move/copy ``data_path`` to ``artifacts_dir/name`` and write its sidecars."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    digest = sha256_file(data_path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise SourceError(f"{origin}: sha256 is {digest}, expected {expected_sha256.lower()} (file changed or wrong pin)")
    target = artifacts_dir / name
    if data_path.parent == artifacts_dir and data_path.name.startswith(".tmp-"):
        os.replace(data_path, target)
    elif data_path.resolve() != target.resolve():
        shutil.copyfile(data_path, target)
    record = SourceRecord(kind, origin, target, digest, target.stat().st_size, _now(), dict(details or {}))
    (artifacts_dir / f"{name}.sha256").write_text(f"{digest}  {name}\n", encoding="utf-8")
    (artifacts_dir / f"{name}.source.json").write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


def _safe_name(name: str, origin: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    if not name:
        raise SourceError(f"{origin}: cannot derive a file name; pass filename=")
    return name


def _tls_context(ca_file: str | Path | None) -> ssl.SSLContext | None:
    if ca_file is None:
        return None
    if not Path(ca_file).is_file():
        raise SourceError(f"{ca_file}: CA file not found (cni.source.helm.ca_file)")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise SourceError(f"{ca_file}: not a PEM CA bundle: {exc}") from exc


def _download(url: str, target: Path, *, timeout: float, max_bytes: int, ca_file: str | Path | None = None) -> None:
    """Download ``url`` to ``target`` (http/https/file only), refusing more than ``max_bytes``;
    ``ca_file`` verifies an https server against that CA bundle."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise SourceError(f"{url}: unsupported URL scheme {scheme!r} (expected http, https or file)")
    request = urllib.request.Request(url, headers={"User-Agent": "cni-runbook"})
    context = _tls_context(ca_file)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response, \
                open(target, "wb") as out:  # noqa: S310 - scheme checked
            size = 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise SourceError(f"{url}: larger than {max_bytes} bytes; refusing (raise max_bytes if expected)")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise SourceError(f"{url}: no answer within {timeout:g} s") from exc
        raise SourceError(f"{url}: cannot download: {reason}") from exc
    except (socket.timeout, TimeoutError) as exc:
        raise SourceError(f"{url}: no answer within {timeout:g} s") from exc


def fetch_url(
    url: str,
    artifacts_dir: str | Path,
    *,
    filename: str | None = None,
    version: str | None = None,
    expected_sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> SourceRecord:
    """Download ``url`` into ``artifacts_dir`` (``{version}`` in the URL is replaced by ``version``).

    ``timeout`` bounds each network operation (connect, each read). ``expected_sha256`` pins
    the content: a mismatch raises SourceError and nothing is stored under the final name.
    """
    if "{version}" in url:
        if not version:
            raise SourceError(f"{url}: the URL contains {{version}} but no version was given")
        url = url.replace("{version}", version)
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    name = _safe_name(filename or Path(urllib.parse.urlsplit(url).path).name, url)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", dir=artifacts_dir)
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        _download(url, tmp_path, timeout=timeout, max_bytes=max_bytes)
        return _store(tmp_path, artifacts_dir, name, kind="url", origin=url, expected_sha256=expected_sha256)
    finally:
        tmp_path.unlink(missing_ok=True)


def local_file(path: str | Path, artifacts_dir: str | Path, *, filename: str | None = None,
               expected_sha256: str | None = None) -> SourceRecord:
    """Copy a local manifest into ``artifacts_dir`` (the run keeps exactly what it applied)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file (expected a local manifest file)")
    return _store(path, Path(artifacts_dir), _safe_name(filename or path.name, str(path)), kind="file",
                  origin=str(path.resolve()), expected_sha256=expected_sha256)


def antrea_manifest(version: str, artifacts_dir: str | Path, *, url: str | None = None, path: str | Path | None = None,
                    expected_sha256: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> SourceRecord:
    """Antrea's manifest: a local file if ``path``, else ``url`` (may contain {version}), else the release asset."""
    from .antrea import normalize_version

    version = normalize_version(version)
    if path is not None:
        return local_file(path, artifacts_dir, filename="antrea.yml", expected_sha256=expected_sha256)
    return fetch_url(url or antrea_manifest_url(version), artifacts_dir, filename="antrea.yml", version=version,
                     expected_sha256=expected_sha256, timeout=timeout)


# --------------------------------------------------------------------------- Helm charts


def _write_values(artifacts_dir: Path, stem: str, values: Mapping[str, Any] | None) -> str | None:
    if not values:
        return None
    name = f"{stem}-values.yaml"
    (artifacts_dir / name).write_text(yaml.safe_dump(dict(values), sort_keys=False), encoding="utf-8")
    return name


def helm_repo_chart(
    repository_url: str,
    chart: str,
    artifacts_dir: str | Path,
    *,
    version: str | None = None,
    values: Mapping[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    ca_file: str | Path | None = None,
    plain_http: bool = False,
) -> SourceRecord:
    """Download ``chart`` (``version``, default the newest) from a Helm repository.

    Reads ``<repository_url>/index.yaml``, downloads the chart archive it lists and checks the
    archive against the index's ``digest``. ``values`` are stored beside it as
    ``<chart>-<version>-values.yaml``. ``oci://`` registries need the helm client
    (:func:`helm_pull_oci`, which takes ``plain_http``); ``ca_file`` verifies either kind.
    """
    if repository_url.startswith("oci://"):
        return helm_pull_oci(repository_url, chart, artifacts_dir, version=version, values=values, timeout=timeout,
                             ca_file=ca_file, plain_http=plain_http)
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    base = repository_url.rstrip("/") + "/"
    index_url = urllib.parse.urljoin(base, "index.yaml")
    with tempfile.TemporaryDirectory(dir=artifacts_dir) as tmp:
        index_path = Path(tmp) / "index.yaml"
        _download(index_url, index_path, timeout=timeout, max_bytes=MAX_DOWNLOAD_BYTES, ca_file=ca_file)
        try:
            index = yaml.safe_load(index_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SourceError(f"{index_url}: not a Helm repository index (invalid YAML: {exc})") from exc
    entries = (index.get("entries") or {}) if isinstance(index, dict) else {}
    if chart not in entries:
        raise SourceError(f"{index_url}: no chart {chart!r}; charts: {', '.join(sorted(entries)) or 'none'}")
    releases = entries[chart]
    if version:
        wanted = {version, version.lstrip("v"), "v" + version.lstrip("v")}
        matching = [r for r in releases if str(r.get("version")) in wanted]
        if not matching:
            known = ", ".join(str(r.get("version")) for r in releases[:10])
            raise SourceError(f"{index_url}: chart {chart!r} has no version {version!r}; newest: {known}")
        release = matching[0]
    else:
        release = releases[0]
    urls = release.get("urls") or []
    if not urls:
        raise SourceError(f"{index_url}: chart {chart} {release.get('version')} lists no download URL")
    chart_url = urllib.parse.urljoin(base, urls[0])
    chart_version = str(release.get("version"))
    name = _safe_name(f"{chart}-{chart_version}.tgz", chart_url)
    handle, tmp_file = tempfile.mkstemp(prefix=".tmp-", dir=artifacts_dir)
    os.close(handle)
    try:
        _download(chart_url, Path(tmp_file), timeout=timeout, max_bytes=MAX_DOWNLOAD_BYTES, ca_file=ca_file)
        details = {"repository_url": repository_url, "chart": chart, "version": chart_version, "chart_url": chart_url,
                   "values_file": _write_values(artifacts_dir, name[: -len(".tgz")], values)}
        return _store(Path(tmp_file), artifacts_dir, name, kind="helm-repo", origin=chart_url,
                      expected_sha256=release.get("digest"), details=details)
    finally:
        Path(tmp_file).unlink(missing_ok=True)


def helm_pull_oci(repository_url: str, chart: str, artifacts_dir: str | Path, *, version: str | None = None,
                  values: Mapping[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT_S, helm: str | None = None,
                  ca_file: str | Path | None = None, plain_http: bool = False) -> SourceRecord:
    """Pull a chart from an OCI registry with ``helm pull`` (the helm client must be on PATH).

    ``plain_http``: the registry speaks plain HTTP (an air-gapped mirror without TLS; without it
    helm fails with "http: server gave HTTP response to HTTPS client"). ``ca_file``: the CA
    bundle that signs the registry's certificate.
    """
    import subprocess

    from .helm import helm_binary

    binary = helm_binary(helm)
    if ca_file is not None and not Path(ca_file).is_file():
        raise SourceError(f"{ca_file}: CA file not found (cni.source.helm.ca_file)")
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    ref = f"{repository_url.rstrip('/')}/{chart}"
    with tempfile.TemporaryDirectory(dir=artifacts_dir) as tmp:
        command = [binary, "pull", ref, "--destination", tmp] + (["--version", version] if version else [])
        command += (["--plain-http"] if plain_http else []) + (["--ca-file", str(ca_file)] if ca_file else [])
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                                  env=_helm_env(tmp))
        except subprocess.TimeoutExpired as exc:
            raise SourceError(f"{ref}: helm pull took more than {timeout:g} s") from exc
        if done.returncode != 0:
            message = done.stderr.strip() or done.stdout.strip()
            hint = ("; the registry speaks plain HTTP: set cni.source.helm.plain_http: true"
                    if "server gave HTTP response to HTTPS client" in message else "")
            raise SourceError(f"{ref}: helm pull failed: {message}{hint}")
        archives = list(Path(tmp).glob("*.tgz"))
        if len(archives) != 1:
            raise SourceError(f"{ref}: helm pull produced {len(archives)} archives, expected 1")
        archive = archives[0]
        name, chart_version = _archive_chart(archive)
        details = {"repository_url": repository_url, "chart": name, "version": chart_version,
                   "plain_http": plain_http, "ca_file": str(ca_file) if ca_file else None,
                   "values_file": _write_values(artifacts_dir, archive.stem, values)}
        return _store(archive, artifacts_dir, archive.name, kind="helm-repo", origin=ref, expected_sha256=None, details=details)


def _helm_env(tmp: str | Path) -> dict[str, str]:
    """helm's environment with its registry config and caches in a private folder (no login state leaks in)."""
    tmp = Path(tmp)
    return {**os.environ, "HELM_REGISTRY_CONFIG": str(tmp / ".helm-registry.json"),
            "HELM_CACHE_HOME": str(tmp / ".helm-cache"), "HELM_CONFIG_HOME": str(tmp / ".helm-config"),
            "HELM_DATA_HOME": str(tmp / ".helm-data")}


def _archive_chart(archive: Path) -> tuple[str, str]:
    """(name, version) from ``<chart>/Chart.yaml`` inside a packed chart; SourceError otherwise."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and m.name.count("/") == 1
                           and m.name.endswith("/Chart.yaml")), None)
            if member is None:
                raise SourceError(f"{archive}: not a packed Helm chart (no <chart>/Chart.yaml inside)")
            meta = yaml.safe_load(tar.extractfile(member).read().decode("utf-8")) or {}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"{archive}: not a gzip tar archive ({exc})") from exc
    except yaml.YAMLError as exc:
        raise SourceError(f"{archive}: Chart.yaml is not valid YAML: {exc}") from exc
    missing = [k for k in ("name", "version") if not meta.get(k)]
    if missing:
        raise SourceError(f"{archive}: Chart.yaml lacks {', '.join(missing)}")
    return str(meta["name"]), str(meta["version"])


def helm_chart_archive(archive: str | Path, artifacts_dir: str | Path, *,
                       values: Mapping[str, Any] | None = None) -> SourceRecord:
    """A packed local chart (``.tgz``, as ``helm package`` or ``helm pull`` leave it), stored as is."""
    archive = Path(archive)
    if not archive.is_file():
        raise SourceError(f"{archive}: no such chart archive")
    name, chart_version = _archive_chart(archive)
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    stored = f"{name}-{chart_version}.tgz"
    details = {"chart": name, "version": chart_version, "chart_archive": str(archive.resolve()),
               "values_file": _write_values(artifacts_dir, stored[: -len(".tgz")], values)}
    return _store(archive, artifacts_dir, stored, kind="helm-local", origin=str(archive.resolve()),
                  expected_sha256=None, details=details)


def helm_chart(helm: Any, artifacts_dir: str | Path, *, timeout: float = DEFAULT_TIMEOUT_S,
               helm_client: str | None = None) -> SourceRecord:
    """The chart of the params' ``cni.source.helm``: a local folder or ``.tgz`` (``path``), an
    https:// repository or an oci:// registry (``repository_url`` + ``chart``)."""
    if helm.path is not None:
        path = Path(helm.path)
        if path.is_dir():
            return helm_local_chart(path, artifacts_dir, values=helm.values)
        if path.is_file():
            return helm_chart_archive(path, artifacts_dir, values=helm.values)
        raise SourceError(f"{path}: no such chart folder or .tgz (cni.source.helm.path)")
    return helm_repo_chart(helm.repository_url, helm.chart, artifacts_dir, version=helm.version, values=helm.values,
                           timeout=timeout, ca_file=helm.ca_file, plain_http=helm.plain_http)


def helm_local_chart(chart_dir: str | Path, artifacts_dir: str | Path, *, values: Mapping[str, Any] | None = None) -> SourceRecord:
    """Pack a local chart directory into ``<name>-<version>.tgz`` (reproducible: same files, same sha256)."""
    chart_dir = Path(chart_dir)
    chart_yaml = chart_dir / "Chart.yaml"
    if not chart_yaml.is_file():
        raise SourceError(f"{chart_dir}: not a Helm chart (no Chart.yaml)")
    try:
        meta = yaml.safe_load(chart_yaml.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SourceError(f"{chart_yaml}: invalid YAML: {exc}") from exc
    missing = [k for k in ("name", "version") if not meta.get(k)]
    if missing:
        raise SourceError(f"{chart_yaml}: missing {', '.join(missing)} (a chart needs name and version)")
    name, chart_version = str(meta["name"]), str(meta["version"])
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in sorted(p for p in chart_dir.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"{name}/{path.relative_to(chart_dir).as_posix()}")
            data = path.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    archive = f"{name}-{chart_version}.tgz"
    with tempfile.TemporaryDirectory(dir=artifacts_dir) as tmp:
        packed = Path(tmp) / archive
        packed.write_bytes(buffer.getvalue())
        details = {"chart": name, "version": chart_version, "chart_dir": str(chart_dir.resolve()),
                   "values_file": _write_values(artifacts_dir, archive[: -len(".tgz")], values)}
        return _store(packed, artifacts_dir, archive, kind="helm-local", origin=str(chart_dir.resolve()),
                      expected_sha256=None, details=details)
