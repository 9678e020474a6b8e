"""``cni-runbook lab build|up|down|status|kubeconfig``."""

from __future__ import annotations

import argparse
import sys
import time

from .config import LabConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    lab = subparsers.add_parser(
        "lab", help="the embedded local lab cluster (real Kubernetes on this machine)",
        description="A real 3-node Kubernetes cluster on this machine, left without a CNI "
                    "(as Kubespray leaves it with kube_network_plugin: none). Needs root.",
    )
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")
    b = sub.add_parser("build", help="build (or reuse) the Kubernetes binaries and the lab images")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    b.add_argument("--cni", choices=(*cluster_cnis(), "all"), default="kube-router",
                   help="build what a lab with this CNI needs (default kube-router; flannel adds its images "
                        "and the reference CNI plugins; all: every set)")
    u = sub.add_parser("up", help="bring the lab up (a no-op when it is already up)")
    u.add_argument("--hosts-only", action="store_true",
                   help="stop after the bare hosts (namespaces + sshd), before Kubernetes")
    u.add_argument("--cni", choices=cluster_cnis(), default="kube-router",
                   help="prepare the lab for this CNI (default kube-router, the lab CNI); flannel: its images "
                        "in the lab registry and the reference CNI plugins in every node's /opt/cni/bin")
    u.add_argument("--with-cni", action="store_true",
                   help="also install that CNI directly; the runbook's stage 02 normally does this")
    u.add_argument("--manifest", default=None,
                   help="with --cni flannel --with-cni: the vendor's kube-flannel.yml to install")
    u.add_argument("--timeout", type=float, default=180, help="seconds to wait for the cluster (default 180)")
    sub.add_parser("down", help="stop the lab and remove everything it created")
    sub.add_parser("status", help="show each lab component and node")
    sub.add_parser("kubeconfig", help="print the PATH of the lab's admin kubeconfig (never its contents)")
    lab.set_defaults(func=run)


def cluster_cnis() -> tuple[str, ...]:
    from .cluster import LAB_CNIS

    return LAB_CNIS


def run(args: argparse.Namespace) -> int:
    from . import cluster, images
    from .build import build
    from .images_step import build_images

    cfg = LabConfig()
    cmd = args.lab_command
    if cmd == "build":
        started = time.monotonic()
        build(force=args.force)
        names = images.ALL_IMAGE_NAMES if args.cni == "all" else images.images_for(args.cni)
        build_images(force=args.force, names=names)
        if args.cni in ("all", "flannel"):
            images.reference_cni_plugins()
        print(f"[build] lab build done in {time.monotonic() - started:.0f}s")
        return 0
    if cmd == "up":
        if args.with_cni and args.cni == "flannel" and not args.manifest:
            print("--cni flannel --with-cni needs --manifest (the vendor's kube-flannel.yml)", file=sys.stderr)
            return 2
        print(cluster.up(cfg, hosts_only=args.hosts_only, timeout=args.timeout, cni=args.cni))
        if args.with_cni and not args.hosts_only:
            cluster.install_cni(cfg, cni=args.cni, manifest=args.manifest)
            print(f"{args.cni} installed: nodes Ready, CoreDNS running")
        return 0
    if cmd == "down":
        cluster.down(cfg)
        return 0
    if cmd == "kubeconfig":
        if cluster.phase(cfg) != "cluster":
            print("the lab cluster is not up: run `cni-runbook lab up` first", file=sys.stderr)
            return 1
        print(cfg.admin_kubeconfig)
        return 0
    print(cluster.status_text(cfg))
    return 0 if cluster.phase(cfg) != "down" else 3
