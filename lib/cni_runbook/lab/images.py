"""Container images for the lab, built here without a container engine.

An air-gapped site fills its registry mirror from somewhere; the lab fills its own
from binaries built on this machine: Go programs built from the Go module proxy
(CoreDNS, kube-router, flannel and its CNI plugin, a small pause) or by the lab's
Kubernetes build (agnhost), and Debian binaries copied with the shared libraries ``ldd``
reports for them.

Image sets (:data:`IMAGE_SETS`): what a lab with a given CNI needs. ``kube-router`` (the
default lab CNI) is :data:`IMAGE_NAMES`; ``flannel`` adds :data:`FLANNEL_IMAGE_NAMES` (flanneld
v0.28.4 and v0.28.10, the flannel CNI plugin). ``lab build`` builds every set.

Each image is one gzip layer written deterministically (entries sorted, mtime 0,
owner 0:0, fixed gzip header), so the same inputs always give the same digests. An
image is stored as an OCI image layout directory under
``$XDG_CACHE_HOME/cni-runbook/build/images/<name>-<tag>/`` and rebuilt only when
its cache key (the recipe plus the sha256 of every input file) changes.

Typical use::

    refs = build_all()              # {"pause": ImageRef(...), "coredns": ...}
    refs["coredns"].ref             # "registry.cnilab.local:5000/coredns/coredns:v1.12.4"
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import K8S_VERSION, REGISTRY_NAME, cache_dir
from .sysutil import heartbeat

__all__ = [
    "CNI_PLUGINS",
    "COREDNS_VERSION",
    "ALL_IMAGE_NAMES",
    "CNI_PLUGINS_VERSION",
    "FLANNEL_CNI_PLUGIN_TAGS",
    "FLANNEL_IMAGE_NAMES",
    "FLANNEL_VERSIONS",
    "IMAGE_NAMES",
    "IMAGE_SETS",
    "KUBERNETES_VERSION",
    "KUBE_ROUTER_VERSION",
    "LAB_REGISTRY",
    "MANIFESTS_DIR",
    "PAUSE_TAG",
    "ImageBuildError",
    "ImageRef",
    "MissingInput",
    "Recipe",
    "agnhost_version",
    "build_all",
    "build_cache_dir",
    "build_image",
    "build_layout",
    "export_oci_archive",
    "extra_tags",
    "go_binaries",
    "go_binary",
    "images_for",
    "reference_cni_plugins",
    "image_ref",
    "image_tag",
    "images_dir",
    "iperf3_version",
    "k8s_bin_dir",
    "manifest_path",
    "pause_binary",
    "recipe",
    "shared_libraries",
]

# --- versions and names: the one place the lab's images are pinned ----------------

#: Name under which every lab node's containerd reaches the local registry
#: (a hosts.toml in /etc/containerd/certs.d maps it to the lab bridge's registry).
LAB_REGISTRY = REGISTRY_NAME
#: What Kubespray v2.31 deploys; pinned once, in config.py.
KUBERNETES_VERSION = K8S_VERSION
#: CoreDNS that Kubespray v2.31 deploys with Kubernetes 1.35 (coredns_supported_versions).
COREDNS_VERSION = "v1.12.4"
#: The only kube-router v2 release the Go module proxy serves here.
KUBE_ROUTER_VERSION = "v2.1.0"
#: Kubespray v2.31's pod_infra_version for Kubernetes 1.35, so the lab's sandbox image
#: reference matches what Kubespray writes into containerd's config.
PAUSE_TAG = "3.10.1"

#: Images the lab builds, in build order (fast, local ones first).
IMAGE_NAMES = ("pause", "iperf3", "agnhost", "coredns", "kube-router")

#: flannel releases the Go module proxy serves (v0.28.9, whose manifest shape v0.28.10 keeps, is not served).
FLANNEL_VERSIONS = ("v0.28.4", "v0.28.10")
#: The flannel CNI meta plugin (type "flannel"): flannel-io/cni-plugin is not on the module proxy;
#: its ancestor plugins/meta/flannel in containernetworking/plugins is, last in v0.9.1.
FLANNEL_META_PLUGIN_VERSION = "v0.9.1"
#: The tags the vendor manifests name for ghcr.io/flannel-io/flannel-cni-plugin (v0.28.4's and
#: v0.28.9's kube-flannel.yml): the lab's plugin image is pushed under each, so the manifests'
#: references resolve after the registry rewrite alone.
FLANNEL_CNI_PLUGIN_TAGS = ("v1.9.1-flannel1", "v1.9.1-flannel3")
#: Reference CNI plugins (bridge, host-local, ...) that flannel delegates to; Kubespray's
#: ``kube_network_plugin: cni`` puts them in /opt/cni/bin, the lab does the same for flannel.
CNI_PLUGINS_VERSION = "v1.10.0"
FLANNEL_IMAGE_NAMES = ("flannel-cni-plugin", *(f"flannel-{v}" for v in FLANNEL_VERSIONS))
ALL_IMAGE_NAMES = IMAGE_NAMES + FLANNEL_IMAGE_NAMES
#: lab CNI -> the images a lab running it needs
IMAGE_SETS = {"kube-router": IMAGE_NAMES, "flannel": IMAGE_NAMES + FLANNEL_IMAGE_NAMES}

_COREDNS_MODULE = "github.com/coredns/coredns"
_COREDNS_COMMIT = "f32329577fd5e3fe19908f8a9ba5c76aafb45bf6"  # tag v1.12.4
_KUBE_ROUTER_MODULE = "github.com/cloudnativelabs/kube-router/v2"
_KUBE_ROUTER_DATE = "2024-03-03T05:25:26Z"  # release time of v2.1.0 on the module proxy
_FLANNEL_MODULE = "github.com/flannel-io/flannel"
#: flanneld links the TencentCloud VPC backend; the module proxy refuses the SDK versions flannel's
#: go.mod asks for (vpc v1.3.188, common v1.3.79: 403) but serves these, which that backend's code
#: (the same in v0.28.4 and v0.28.10) compiles against. The lab uses the vxlan backend.
_FLANNEL_REPLACE = {
    "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common": "v1.3.190",
    "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc": "v1.3.75",
}
_CNI_PLUGINS_MODULE = "github.com/containernetworking/plugins"
#: reference plugin -> its package in containernetworking/plugins
_REFERENCE_PLUGIN_PACKAGES = {
    "bandwidth": "plugins/meta/bandwidth",
    "bridge": "plugins/main/bridge",
    "host-local": "plugins/ipam/host-local",
    "loopback": "plugins/main/loopback",
    "portmap": "plugins/meta/portmap",
}

#: Bumped when the layout writer changes in a way that changes digests.
_BUILDER_VERSION = "1"
_EPOCH = "1970-01-01T00:00:00Z"

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

_BUILD_RECORD = "cni-runbook-build.json"
_PAUSE_SOURCE = Path(__file__).resolve().parent / "pause"
#: The lab's add-on manifests (they reference the images built here).
MANIFESTS_DIR = Path(__file__).resolve().parent / "manifests"

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """A build step failed; the message says which and where its log is."""


class MissingInput(ImageBuildError):
    """An input file is absent; ``hint`` names the Debian package or build step that provides it."""

    def __init__(self, path: Path | str, hint: str):
        super().__init__(f"{path} is missing: {hint}")
        self.path = Path(path)
        self.hint = hint


# --- cache locations -----------------------------------------------------------------


def build_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cni-runbook/build`` (``~/.cache`` when the variable is unset)."""
    return cache_dir() / "build"


def images_dir() -> Path:
    return build_cache_dir() / "images"


def k8s_bin_dir(version: str = KUBERNETES_VERSION) -> Path:
    """Where the lab's Kubernetes build puts kubelet, kube-proxy, agnhost, ..."""
    return build_cache_dir() / f"k8s-{version}" / "bin"


def manifest_path(name: str) -> Path:
    """Path of a lab add-on manifest: ``kube-router`` (the lab CNI) or ``coredns``."""
    path = MANIFESTS_DIR / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in MANIFESTS_DIR.glob("*.yaml")))
        raise KeyError(f"no lab manifest {name!r}; known: {known}")
    return path


# --- image references ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """A built image: where its layout is and what it is called in the lab registry."""

    name: str
    repo: str
    tag: str
    layout: Path
    manifest_digest: str
    config_digest: str
    size: int  # compressed bytes of config + layers
    rebuilt: bool = False

    @property
    def ref(self) -> str:
        return f"{LAB_REGISTRY}/{self.repo}:{self.tag}"

    def ref_in(self, registry: str) -> str:
        return f"{registry}/{self.repo}:{self.tag}"


# --- recipes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What goes into one image.

    ``files`` maps host files to image paths; dynamically linked ELF files bring their
    shared libraries (and the loader) along. ``generated`` adds files from bytes,
    ``symlinks`` maps image paths to link targets and ``directories`` adds empty
    directories (mode as given). Paths under /bin, /sbin, /lib, /lib64 are stored
    under /usr, as on a merged-/usr Debian, with the four top-level links in place.
    """

    name: str
    repo: str
    tag: str
    files: tuple[tuple[Path, str], ...] = ()
    generated: tuple[tuple[str, bytes], ...] = ()
    symlinks: tuple[tuple[str, str], ...] = ()
    directories: tuple[tuple[str, int], ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = "0:0"
    workdir: str = "/"
    exposed_ports: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    def describe(self) -> dict:
        """Everything about the recipe except input contents, as JSON-able data."""
        return {
            "name": self.name,
            "repo": self.repo,
            "tag": self.tag,
            "files": [[str(src), dest] for src, dest in self.files],
            "generated": [[dest, _sha256_bytes(data)] for dest, data in self.generated],
            "symlinks": [list(pair) for pair in self.symlinks],
            "directories": [[path, mode] for path, mode in self.directories],
            "config": _image_config_body(self),
        }


_BASE_FILES = (
    ("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
    ("/etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
    ("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n"),
)
_BASE_DIRECTORIES = (("/tmp", 0o1777), ("/root", 0o700), ("/run", 0o755), ("/etc", 0o755))
_BASE_SYMLINKS = (("/var/run", "../run"),)

#: A shell and the few utilities an init container or a `kubectl exec` needs.
_TOOLBOX = ("dash", "cat", "cp", "ls", "mkdir", "mv", "rm", "sleep")
_TOOLBOX_SOURCES = {tool: Path("/usr/bin") / tool for tool in _TOOLBOX}

#: Debian packages that provide the host files the recipes copy.
_DEBIAN_PACKAGES = {
    "/usr/bin/iperf3": "iperf3",
    "/usr/sbin/ipset": "ipset",
    "/usr/sbin/ip": "iproute2",
    "/usr/sbin/xtables-legacy-multi": "iptables",
    "/usr/lib/x86_64-linux-gnu/xtables": "iptables",
    "/usr/lib/cni": "containernetworking-plugins",
    "/usr/bin/dash": "dash",
    "/usr/bin/kmod": "kmod",
}

#: CNI plugins the lab CNI chains (bridge, host-local, portmap, bandwidth) plus loopback,
#: which the container runtime calls for every pod.
CNI_PLUGINS = ("bandwidth", "bridge", "host-local", "loopback", "portmap")
_CNI_PLUGIN_DIR = Path("/usr/lib/cni")
_XTABLES_MODULES = Path("/usr/lib/x86_64-linux-gnu/xtables")
_IPTABLES_NAMES = (
    "iptables",
    "iptables-save",
    "iptables-restore",
    "iptables-legacy",
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "ip6tables-legacy",
    "ip6tables-legacy-save",
    "ip6tables-legacy-restore",
)


def _toolbox_files() -> tuple[tuple[Path, str], ...]:
    files = [(_TOOLBOX_SOURCES["dash"], "/bin/sh")]
    files += [(_TOOLBOX_SOURCES[tool], f"/bin/{tool}") for tool in _TOOLBOX if tool != "dash"]
    return tuple(files)


def agnhost_version(version: str = KUBERNETES_VERSION) -> str:
    """agnhost's own version (test/images/agnhost/VERSION of k8s.io/kubernetes)."""
    gomodcache = os.environ.get("GOMODCACHE") or str(Path.home() / "go" / "pkg" / "mod")
    version_file = Path(gomodcache) / f"k8s.io/kubernetes@{version}" / "test/images/agnhost/VERSION"
    try:
        return version_file.read_text().strip()
    except FileNotFoundError:
        hint = f"build the lab's Kubernetes {version} first (it downloads the module)"
        raise MissingInput(version_file, hint) from None


def iperf3_version() -> str:
    """Upstream version of Debian's iperf3 (``3.12`` for ``3.12-1+deb12u2``)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "iperf3"], capture_output=True, text=True, check=True
        ).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        raise MissingInput("/usr/bin/iperf3", "install the Debian package iperf3") from None
    upstream = out.split(":")[-1].split("-")[0]
    return re.sub(r"[^\w.-]", "-", upstream)


_REPOS = {
    # Kubespray's offline paths (kube_image_repo = the mirror) for images that do upstream's job:
    "pause": "pause",
    "coredns": "coredns/coredns",
    "agnhost": "e2e-test-images/agnhost",
    # Images assembled for the lab (not byte-equal to any upstream image):
    "iperf3": "cnilab/iperf3",
    "kube-router": "cnilab/kube-router",
    # flannel's own image names (ghcr.io/flannel-io/...), as a site mirror keeps them; assembled
    # here from the Go module proxy and Debian packages, not byte-equal to upstream's images:
    "flannel-cni-plugin": "flannel-io/flannel-cni-plugin",
    **{f"flannel-{v}": "flannel-io/flannel" for v in FLANNEL_VERSIONS},
}


def images_for(cni: str) -> tuple[str, ...]:
    """The images a lab running ``cni`` (``kube-router`` or ``flannel``) needs, in build order."""
    try:
        return IMAGE_SETS[cni]
    except KeyError:
        raise KeyError(f"unknown lab CNI {cni!r}; known: {', '.join(IMAGE_SETS)}") from None


def extra_tags(name: str) -> tuple[str, ...]:
    """Further tags an image is pushed under (the flannel CNI plugin: every tag a vendor manifest names)."""
    return FLANNEL_CNI_PLUGIN_TAGS[1:] if name == "flannel-cni-plugin" else ()


def image_tag(name: str) -> str:
    """The tag an image gets, without building it."""
    if name == "pause":
        return PAUSE_TAG
    if name == "coredns":
        return COREDNS_VERSION
    if name == "kube-router":
        return KUBE_ROUTER_VERSION
    if name == "agnhost":
        return agnhost_version()
    if name == "iperf3":
        return iperf3_version()
    if name == "flannel-cni-plugin":
        return FLANNEL_CNI_PLUGIN_TAGS[0]
    if name.startswith("flannel-") and name.removeprefix("flannel-") in FLANNEL_VERSIONS:
        return name.removeprefix("flannel-")
    raise KeyError(f"unknown lab image {name!r}; known: {', '.join(ALL_IMAGE_NAMES)}")


def image_ref(name: str, registry: str = LAB_REGISTRY) -> str:
    """Full reference of a lab image, e.g. ``registry.cnilab.local:5000/pause:3.10.1``."""
    tag = image_tag(name)
    return f"{registry}/{_REPOS[name]}:{tag}"


#: busybox applets linked into the agnhost image (probe scripts: timing, timeouts, ping, HTTP, DNS).
_AGNHOST_APPLETS = ("timeout", "date", "nc", "wget", "awk", "tr", "tail", "head", "adjtimex", "ping",
                    "nslookup", "ip", "printf", "seq", "wc", "grep", "sed", "env", "traceroute")


def recipe(name: str, progress: Progress = print) -> Recipe:
    """The recipe for one lab image; builds the Go binaries it needs (cached)."""
    if name == "pause":
        return Recipe(
            name="pause",
            repo=_REPOS["pause"],
            tag=PAUSE_TAG,
            files=((pause_binary(progress), "/pause"),),
            entrypoint=("/pause",),
            user="65535:65535",
            env=(),
        )
    if name == "agnhost":
        binary = k8s_bin_dir() / "agnhost"
        if not binary.exists():
            raise MissingInput(binary, f"build the lab's Kubernetes {KUBERNETES_VERSION} binaries first (lab build)")
        return Recipe(
            name="agnhost",
            repo=_REPOS["agnhost"],
            tag=agnhost_version(),
            # busybox (Debian busybox-static) gives the probe scripts of the validation suite their
            # tools, as upstream agnhost's alpine base does; /bin/sh stays the toolbox's dash.
            files=((binary, "/agnhost"), *_toolbox_files(), (Path("/bin/busybox"), "/bin/busybox")),
            symlinks=tuple((f"/bin/{applet}", "busybox") for applet in _AGNHOST_APPLETS),
            entrypoint=("/agnhost",),
            cmd=("pause",),
        )
    if name == "coredns":
        binary = go_binary(
            "coredns",
            _COREDNS_MODULE,
            COREDNS_VERSION,
            progress=progress,
            ldflags=f"-s -w -X {_COREDNS_MODULE}/coremain.GitCommit={_COREDNS_COMMIT}",
            expected_minutes=4,  # 3 min seen on 2 cores
        )
        return Recipe(
            name="coredns",
            repo=_REPOS["coredns"],
            tag=COREDNS_VERSION,
            files=((binary, "/coredns"),),
            entrypoint=("/coredns",),
            exposed_ports=("53/tcp", "53/udp", "9153/tcp"),
        )
    if name == "iperf3":
        return Recipe(
            name="iperf3",
            repo=_REPOS["iperf3"],
            tag=iperf3_version(),
            files=((Path("/usr/bin/iperf3"), "/usr/bin/iperf3"), *_toolbox_files()),
            entrypoint=("/usr/bin/iperf3",),
            cmd=("-s",),
            exposed_ports=("5201/tcp", "5201/udp"),
        )
    if name == "kube-router":
        binary = go_binary(
            "kube-router",
            _KUBE_ROUTER_MODULE + "/cmd/kube-router",
            KUBE_ROUTER_VERSION,
            module=_KUBE_ROUTER_MODULE,
            progress=progress,
            ldflags=(
                f"-s -w -X {_KUBE_ROUTER_MODULE}/pkg/version.Version={KUBE_ROUTER_VERSION}"
                f" -X {_KUBE_ROUTER_MODULE}/pkg/version.BuildDate={_KUBE_ROUTER_DATE}"
            ),
            expected_minutes=3,  # 2.5 min seen on 2 cores
        )
        iptables_files, iptables_links = _xtables_legacy()
        return Recipe(
            name="kube-router",
            repo=_REPOS["kube-router"],
            tag=KUBE_ROUTER_VERSION,
            files=(
                (binary, "/usr/local/bin/kube-router"),
                *iptables_files,
                (Path("/usr/sbin/ipset"), "/usr/sbin/ipset"),
                (Path("/usr/sbin/ip"), "/usr/sbin/ip"),
                (Path("/usr/bin/kmod"), "/usr/bin/kmod"),  # modprobe br_netfilter on hosts with modules
                *((_CNI_PLUGIN_DIR / plugin, f"/opt/cni-plugins/{plugin}") for plugin in CNI_PLUGINS),
                *_toolbox_files(),
            ),
            symlinks=(*iptables_links, ("/usr/sbin/modprobe", "../bin/kmod")),
            directories=(("/var/lib/kube-router", 0o755),),
            entrypoint=("/usr/local/bin/kube-router",),
            labels=(
                ("io.cnilab.iptables-backend", "legacy"),
                ("io.cnilab.cni-plugins", "/opt/cni-plugins"),
            ),
        )
    if name == "flannel-cni-plugin":
        return _flannel_cni_plugin_recipe(progress)
    if name.startswith("flannel-") and name.removeprefix("flannel-") in FLANNEL_VERSIONS:
        return _flannel_recipe(name.removeprefix("flannel-"), progress)
    raise KeyError(f"unknown lab image {name!r}; known: {', '.join(ALL_IMAGE_NAMES)}")


def _xtables_legacy() -> tuple[tuple[tuple[Path, str], ...], tuple[tuple[str, str], ...]]:
    """Debian's legacy iptables (files, symlinks), as the lab's nodes and kube-proxy use it."""
    modules = sorted(_XTABLES_MODULES.glob("*.so")) if _XTABLES_MODULES.is_dir() else []
    if not modules:
        raise MissingInput(_XTABLES_MODULES, "install the Debian package iptables")
    files = ((Path("/usr/sbin/xtables-legacy-multi"), "/usr/sbin/xtables-legacy-multi"),
             *((module, str(module)) for module in modules))
    links = tuple((f"/usr/sbin/{cmd}", "xtables-legacy-multi") for cmd in _IPTABLES_NAMES)
    return files, links


def _flannel_recipe(version: str, progress: Progress) -> Recipe:
    """flanneld (+ install-conf where the version has it), legacy iptables, a toolbox.

    Upstream's image: /opt/bin/flanneld (cgo: the udp backend), /opt/bin/install-conf (v0.28.9
    and later: the init container copies the conflist with it instead of ``cp -f``), iptables
    behind iptables-wrapper, iproute2, an alpine shell. Here: the same paths, Debian's legacy
    iptables (the lab's kube-proxy mode) and the toolbox's sh/cp.
    """
    packages = {"flanneld": _FLANNEL_MODULE}
    if _has_install_conf(version):
        packages["install-conf"] = f"{_FLANNEL_MODULE}/cmd/install_conf"
    built = go_binaries(
        "flannel", packages, version, module=_FLANNEL_MODULE, progress=progress, cgo=True,
        ldflags=f"-s -w -X {_FLANNEL_MODULE}/pkg/version.Version={version}",
        expected_minutes=8, replace=_FLANNEL_REPLACE,
    )
    files: list[tuple[Path, str]] = [(built[binary], f"/opt/bin/{binary}") for binary in packages]
    iptables_files, iptables_links = _xtables_legacy()
    return Recipe(
        name=f"flannel-{version}",
        repo=_REPOS[f"flannel-{version}"],
        tag=version,
        files=(*files, *iptables_files, (Path("/usr/sbin/ip"), "/usr/sbin/ip"), *_toolbox_files()),
        symlinks=iptables_links,
        directories=(("/etc/kube-flannel", 0o755), ("/run/flannel", 0o755)),
        entrypoint=("/opt/bin/flanneld",),
        labels=(
            ("io.cnilab.built-from", f"{_FLANNEL_MODULE}@{version} (Go module proxy; TencentCloud SDK pinned to "
                                     + ", ".join(f"{m.rsplit('/', 1)[-1]} {v}" for m, v in sorted(_FLANNEL_REPLACE.items()))
                                     + ")"),
            ("io.cnilab.iptables-backend", "legacy"),
        ),
    )


def _has_install_conf(version: str) -> bool:
    """cmd/install_conf exists from flannel v0.28.9 (the newer manifest shape) on."""
    return tuple(int(p) for p in version.lstrip("v").split(".")) >= (0, 28, 9)


def _flannel_cni_plugin_recipe(progress: Progress) -> Recipe:
    """The flannel CNI meta plugin at /flannel, as upstream's flannel-cni-plugin image has it."""
    plugin = go_binary(
        "flannel-cni", f"{_CNI_PLUGINS_MODULE}/plugins/meta/flannel", FLANNEL_META_PLUGIN_VERSION,
        module=_CNI_PLUGINS_MODULE, progress=progress, expected_minutes=1,
    )
    return Recipe(
        name="flannel-cni-plugin",
        repo=_REPOS["flannel-cni-plugin"],
        tag=FLANNEL_CNI_PLUGIN_TAGS[0],
        files=((plugin, "/flannel"), *_toolbox_files()),
        entrypoint=("/bin/sh",),
        labels=(("io.cnilab.built-from",
                 f"{_CNI_PLUGINS_MODULE}/plugins/meta/flannel@{FLANNEL_META_PLUGIN_VERSION} (Go module proxy)"),),
    )


def reference_cni_plugins(progress: Progress = print) -> dict[str, Path]:
    """The reference CNI plugins flannel delegates to (containernetworking/plugins
    :data:`CNI_PLUGINS_VERSION`), built once; plugin name -> binary."""
    packages = {name: f"{_CNI_PLUGINS_MODULE}/{pkg}" for name, pkg in _REFERENCE_PLUGIN_PACKAGES.items()}
    return go_binaries("cni-plugins", packages, CNI_PLUGINS_VERSION, module=_CNI_PLUGINS_MODULE,
                       progress=progress, expected_minutes=3)


# --- Go binaries -------------------------------------------------------------------------


def _go_env(cgo: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    # static binaries: nothing to resolve with ldd; a cgo binary (flanneld) brings its libc along
    env["CGO_ENABLED"] = "1" if cgo else "0"
    env.setdefault("GOFLAGS", "-buildvcs=false")
    return env


def _run_go(argv: list[str], cwd: Path, log: Path, what: str, extra_env: Mapping[str, str] | None = None,
            cgo: bool = False, progress: Progress = print, doing: str | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        try:
            with heartbeat(lambda m: progress(f"[images] {m}"), doing or what):
                proc = subprocess.run(
                    argv, cwd=cwd, env={**_go_env(cgo), **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT
                )
        except FileNotFoundError:
            raise ImageBuildError(f"{what}: the go command is not on PATH (install Go 1.22 or newer)") from None
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}); full log: {log}\n{tail}")


def go_binary(
    name: str,
    package: str,
    version: str,
    *,
    module: str | None = None,
    ldflags: str = "-s -w",
    progress: Progress = print,
    expected_minutes: int = 5,
    cgo: bool = False,
    replace: Mapping[str, str] | None = None,
) -> Path:
    """Build ``package@version`` with ``go install`` once; return the cached binary.

    The binary lands in ``<build cache>/<name>-<version>/bin/<name>``. ``module`` is only
    used in messages (defaults to ``package``). Binaries are static unless ``cgo`` (then the
    image recipe copies the shared libraries ``ldd`` names).
    """
    return go_binaries(name, {name: package}, version, module=module or package, ldflags=ldflags,
                       progress=progress, expected_minutes=expected_minutes, cgo=cgo, replace=replace)[name]


def go_binaries(
    name: str,
    packages: Mapping[str, str],
    version: str,
    *,
    module: str,
    ldflags: str = "-s -w",
    progress: Progress = print,
    expected_minutes: int = 5,
    cgo: bool = False,
    replace: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Build several main packages of one module at ``version`` in one ``go install``, once.

    ``packages`` maps binary name -> package; the binaries land in
    ``<build cache>/<name>-<version>/bin/``; returns binary name -> path. ``replace`` (module
    path -> version) pins dependencies the module proxy does not serve at the required version:
    the build then runs in a throwaway module requiring ``module`` at ``version``.
    """
    target_dir = build_cache_dir() / f"{name}-{version}"
    binaries = {binary: target_dir / "bin" / binary for binary in packages}
    if all(path.exists() for path in binaries.values()):
        return binaries
    progress(f"[images] building {name} {version} (go build of {module}, first time ~{expected_minutes} min)")
    started = time.monotonic()
    partial = target_dir.with_name(target_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "bin").mkdir(parents=True)
    log = build_cache_dir() / f"{name}-{version}.log"
    try:
        with tempfile.TemporaryDirectory(prefix="cnilab-go-") as workdir:  # outside any module
            if replace:
                # `go install pkg@version` ignores replace directives: build inside a module of our own
                # that requires the module at ``version`` and pins the replaced dependencies.
                lines = [f"module cnilab.local/{name}-build", "", "go 1.25.0", "", f"require {module} {version}", ""]
                lines += [f"replace {path} => {path} {pinned}" for path, pinned in sorted(replace.items())]
                (Path(workdir) / "go.mod").write_text("\n".join(lines) + "\n")
                argv = ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial / "bin") + "/",
                        *packages.values()]
                what = f"go build {' '.join(packages.values())} ({module} {version}, replaced: {', '.join(sorted(replace))})"
                _run_go(argv, Path(workdir), log, what, {"GOFLAGS": "-mod=mod -buildvcs=false"}, cgo=cgo, progress=progress,
                        doing=f"building {name} {version}")
            else:
                argv = ["go", "install", "-trimpath", "-ldflags", ldflags,
                        *(f"{pkg}@{version}" for pkg in packages.values())]
                what = f"go install {' '.join(packages.values())}@{version}"
                _run_go(argv, Path(workdir), log, what, {"GOBIN": str(partial / "bin")}, cgo=cgo, progress=progress,
                        doing=f"building {name} {version}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for binary, package in packages.items():
        built = partial / "bin" / package.rsplit("/", 1)[-1]
        if built.name != binary:
            built.rename(partial / "bin" / binary)
    shutil.rmtree(target_dir, ignore_errors=True)
    partial.rename(target_dir)
    progress(f"[images] built {name} {version} in {time.monotonic() - started:.0f} s")
    return binaries


def pause_binary(progress: Progress = print, source: Path = _PAUSE_SOURCE) -> Path:
    """Build the lab's pause program (lib/cni_runbook/lab/pause) once per source change."""
    digest = hashlib.sha256()
    for path in sorted(source.glob("*.go")) + [source / "go.mod"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    target_dir = build_cache_dir() / f"pause-{digest.hexdigest()[:16]}"
    binary = target_dir / "bin" / "pause"
    if binary.exists():
        return binary
    progress("[images] building pause (go build, a few seconds)")
    partial = target_dir.with_name(target_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "bin").mkdir(parents=True)
    argv = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial / "bin" / "pause"), "."]
    try:
        _run_go(argv, source, build_cache_dir() / "pause.log", "go build of the pause program", progress=progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(target_dir, ignore_errors=True)
    partial.rename(target_dir)
    return binary


# --- rootfs assembly -----------------------------------------------------------------------

_MERGED_USR = {"/bin": "/usr/bin", "/sbin": "/usr/sbin", "/lib": "/usr/lib", "/lib64": "/usr/lib64"}


def _image_path(path: str) -> str:
    """Normalise an image path and store /bin, /lib, ... content under /usr."""
    norm = os.path.normpath("/" + path.lstrip("/"))
    for top, usr in _MERGED_USR.items():
        if norm == top or norm.startswith(top + "/"):
            return usr + norm[len(top):]
    return norm


@dataclass(frozen=True)
class _Entry:
    kind: str  # "file", "dir" or "symlink"
    mode: int = 0o755
    source: Path | None = None
    data: bytes | None = None
    target: str = ""


def _is_dynamic_elf(path: Path) -> bool:
    """True for ELF files with a dynamic section (executables and shared objects)."""
    with path.open("rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        if is64:
            phoff, = struct.unpack_from(endian + "Q", ident, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 54)
        else:
            phoff, = struct.unpack_from(endian + "I", ident, 28)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_dynamic = 2
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == pt_dynamic:
            return True
    return False


_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)(?:\s+\(0x[0-9a-f]+\))?\s*$")


def shared_libraries(binaries: Iterable[Path]) -> list[Path]:
    """Absolute paths of the shared libraries (and the loader) the given ELF files need."""
    dynamic = [str(b) for b in binaries if _is_dynamic_elf(b)]
    if not dynamic:
        return []
    proc = subprocess.run(["ldd", *dynamic], capture_output=True, text=True)
    found: set[Path] = set()
    missing: list[str] = []
    for line in proc.stdout.splitlines():
        if not line.startswith(("\t", " ")):
            continue  # "<file>:" headers when several files are listed
        if "=> not found" in line:
            missing.append(line.split()[0])
            continue
        match = _LDD_LINE.match(line)
        if match and match.group(2).startswith("/"):
            found.add(Path(match.group(2)))
    if missing:
        raise ImageBuildError(f"ldd cannot resolve {', '.join(sorted(set(missing)))} for {', '.join(dynamic)}")
    if proc.returncode != 0 and not found:
        raise ImageBuildError(f"ldd failed on {', '.join(dynamic)}: {proc.stderr.strip()}")
    return sorted(found)


def _mode_of(path: Path) -> int:
    return 0o755 if os.stat(path).st_mode & 0o111 else 0o644


def _hint_for(path: Path) -> str:
    for prefix, package in _DEBIAN_PACKAGES.items():
        if str(path) == prefix or str(path).startswith(prefix + "/"):
            return f"install the Debian package {package}"
    if str(path).startswith("/usr/bin/"):
        return "install the Debian package coreutils"
    return "build it first"


def _rootfs(rec: Recipe) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}

    def add(path: str, entry: _Entry) -> None:
        entries[_image_path(path)] = entry

    for top, usr in _MERGED_USR.items():
        add(usr, _Entry("dir"))
        entries[top] = _Entry("symlink", mode=0o777, target=usr.lstrip("/"))
    for path, mode in _BASE_DIRECTORIES + rec.directories:
        add(path, _Entry("dir", mode=mode))
    for path, data in _BASE_FILES + rec.generated:
        add(path, _Entry("file", mode=0o644, data=data))
    for path, target in _BASE_SYMLINKS + rec.symlinks:
        add(path, _Entry("symlink", mode=0o777, target=target))
    for source, dest in rec.files:
        if not source.exists():
            raise MissingInput(source, _hint_for(source))
        add(dest, _Entry("file", mode=_mode_of(source), source=source))
    for lib in shared_libraries(source for source, _ in rec.files):
        # The library's own directory may be a link (/lib -> usr/lib); the file is stored
        # at the canonical place, which the merged-/usr links make visible at `lib` too.
        dest = str(Path(os.path.realpath(lib.parent)) / lib.name)
        add(dest, _Entry("file", mode=_mode_of(lib), source=lib))

    for path in list(entries):  # every parent directory exists as a directory entry
        parent = os.path.dirname(path)
        while parent != "/" and parent not in entries:
            entries[parent] = _Entry("dir")
            parent = os.path.dirname(parent)
    return entries


# --- deterministic layer and layout ------------------------------------------------------


def _sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """File-like sink that hashes and counts what passes through to ``target``."""

    def __init__(self, target):
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)


def _write_layer(entries: Mapping[str, _Entry], blob: Path) -> tuple[str, str, int]:
    """Write the gzip layer to ``blob``; return (diff_id, digest, size)."""
    with blob.open("wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=6, mtime=0) as gz:
            uncompressed = _HashingWriter(gz)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(entries):
                    entry = entries[path]
                    info = tarfile.TarInfo(path.lstrip("/"))
                    info.mtime = 0
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = entry.mode
                    if entry.kind == "dir":
                        info.type = tarfile.DIRTYPE
                        tar.addfile(info)
                    elif entry.kind == "symlink":
                        info.type = tarfile.SYMTYPE
                        info.linkname = entry.target
                        tar.addfile(info)
                    elif entry.data is not None:
                        info.size = len(entry.data)
                        tar.addfile(info, io.BytesIO(entry.data))
                    else:
                        assert entry.source is not None
                        info.size = os.stat(entry.source).st_size
                        with entry.source.open("rb") as f:
                            tar.addfile(info, f)
    return "sha256:" + uncompressed.sha.hexdigest(), "sha256:" + compressed.sha.hexdigest(), compressed.size


def _image_config_body(rec: Recipe) -> dict:
    config: dict = {"User": rec.user, "WorkingDir": rec.workdir}
    if rec.env:
        config["Env"] = list(rec.env)
    if rec.entrypoint:
        config["Entrypoint"] = list(rec.entrypoint)
    if rec.cmd:
        config["Cmd"] = list(rec.cmd)
    if rec.exposed_ports:
        config["ExposedPorts"] = {port: {} for port in rec.exposed_ports}
    if rec.labels:
        config["Labels"] = dict(rec.labels)
    return config


def _canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _cache_key(rec: Recipe, entries: Mapping[str, _Entry]) -> str:
    inputs = {
        path: _sha256_file(entry.source)
        for path, entry in entries.items()
        if entry.kind == "file" and entry.source is not None
    }
    return _sha256_bytes(_canonical_json({"builder": _BUILDER_VERSION, "recipe": rec.describe(), "inputs": inputs}))


def _read_ref(layout: Path, name: str, repo: str, tag: str, rebuilt: bool) -> ImageRef:
    record = json.loads((layout / _BUILD_RECORD).read_text())
    return ImageRef(
        name=name,
        repo=repo,
        tag=tag,
        layout=layout,
        manifest_digest=record["manifest_digest"],
        config_digest=record["config_digest"],
        size=record["size"],
        rebuilt=rebuilt,
    )


def build_layout(
    rec: Recipe, out_dir: Path | None = None, progress: Progress = print, force: bool = False,
    quiet_when_cached: bool = False,
) -> ImageRef:
    """Write ``rec`` as an OCI image layout (unless an identical one is already there).

    ``force`` rewrites the layout even when its cache key matches (the digests come out
    the same: the build is deterministic). ``quiet_when_cached``: say nothing about a reused
    layout (:func:`build_all` sums those up in one line).
    """
    layout = out_dir or images_dir() / f"{rec.name}-{rec.tag}"
    entries = _rootfs(rec)
    key = _cache_key(rec, entries)
    record_path = layout / _BUILD_RECORD
    if record_path.exists() and not force:
        try:
            if json.loads(record_path.read_text()).get("cache_key") == key:
                ref = _read_ref(layout, rec.name, rec.repo, rec.tag, rebuilt=False)
                if not quiet_when_cached:
                    progress(f"[images] {rec.name}:{rec.tag} up to date ({ref.manifest_digest[:19]})")
                return ref
        except (ValueError, OSError) as exc:
            progress(f"[images] {rec.name}: unreadable build record ({exc}); rebuilding")

    started = time.monotonic()
    layout.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{layout.name}.", dir=layout.parent))
    try:
        blobs = staging / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_tmp = blobs / "layer.partial"
        diff_id, layer_digest, layer_size = _write_layer(entries, layer_tmp)
        layer_tmp.rename(blobs / layer_digest.split(":", 1)[1])

        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": _EPOCH,
            "config": _image_config_body(rec),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": _EPOCH, "created_by": f"cni-runbook lab image recipe {rec.name}"}],
        }
        config_bytes = _canonical_json(config)
        config_digest = _sha256_bytes(config_bytes)
        (blobs / config_digest.split(":", 1)[1]).write_bytes(config_bytes)

        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": MEDIA_TYPE_LAYER, "digest": layer_digest, "size": layer_size}],
        }
        manifest_bytes = _canonical_json(manifest)
        manifest_digest = _sha256_bytes(manifest_bytes)
        (blobs / manifest_digest.split(":", 1)[1]).write_bytes(manifest_bytes)

        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_TYPE_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                    "annotations": {
                        "io.containerd.image.name": f"{LAB_REGISTRY}/{rec.repo}:{rec.tag}",
                        "org.opencontainers.image.ref.name": rec.tag,
                    },
                }
            ],
        }
        (staging / "index.json").write_bytes(_canonical_json(index))
        (staging / "oci-layout").write_bytes(_canonical_json({"imageLayoutVersion": "1.0.0"}))
        record = {
            "cache_key": key,
            "ref": f"{LAB_REGISTRY}/{rec.repo}:{rec.tag}",
            "manifest_digest": manifest_digest,
            "config_digest": config_digest,
            "size": len(config_bytes) + layer_size,
        }
        (staging / _BUILD_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

        if layout.exists():
            old = layout.with_name(f".{layout.name}.old-{os.getpid()}")
            layout.rename(old)
            staging.rename(layout)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(layout)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(
        f"[images] {rec.name}:{rec.tag} written ({layer_size / 1e6:.1f} MB layer, "
        f"{time.monotonic() - started:.1f} s) -> {layout}"
    )
    return _read_ref(layout, rec.name, rec.repo, rec.tag, rebuilt=True)


def build_image(name: str, progress: Progress = print, force: bool = False,
                quiet_when_cached: bool = False) -> ImageRef:
    """Build (or reuse) one lab image by name."""
    return build_layout(recipe(name, progress), progress=progress, force=force, quiet_when_cached=quiet_when_cached)


def build_all(
    progress: Progress = print, names: Iterable[str] = IMAGE_NAMES, force: bool = False
) -> dict[str, ImageRef]:
    """Build (or reuse) the lab images; returns them by name in build order.

    Go binaries are built once per version and kept; ``force`` only rewrites layouts.
    """
    refs = {name: build_image(name, progress, force, quiet_when_cached=True) for name in names}
    cached = [f"{r.name}:{r.tag}" for r in refs.values() if not r.rebuilt]
    if cached:
        progress(f"[images] {len(cached)} up to date: {', '.join(cached)}")
    return refs


def export_oci_archive(image: ImageRef, dest: Path) -> Path:
    """Tar an image layout (``ctr images import`` reads it; the name comes from index.json)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in image.layout.rglob("*") if p.name != _BUILD_RECORD):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(image.layout)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    partial.rename(dest)
    return dest
