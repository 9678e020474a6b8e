"""``cni-runbook policy``: convert policies with an equivalence proof, and the impact of a policy
change before it is applied. Both read files and (impact, or convert --kubeconfig) the cluster
through the API; neither changes anything."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    policy = subparsers.add_parser(
        "policy", help="convert Calico/Kubernetes policies (with proof) and show a policy change's impact",
        description="Policy tools that touch nothing: 'convert' turns Calico projectcalico.org/v3 (and "
                    "Kubernetes) policies into Kubernetes NetworkPolicies or Antrea policies and proves the "
                    "result equivalent over a cluster model; 'impact' lists the connections new or changed "
                    "policies would cut or open on the live cluster.",
    )
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    c = sub.add_parser("convert", help="convert policy files; print each policy's status (exact/lossy/unsupported)")
    c.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML files (multi-document or kind: List)")
    c.add_argument("--out", type=Path, help="write the converted objects (Tiers, Antrea, Kubernetes) to this YAML file")
    c.add_argument("--check", action="store_true",
                   help="prove equivalence: compare both sets' matrices over the cluster model")
    c.add_argument("--layout", type=Path,
                   help="cluster model for --check: a YAML layout (see policy/layout.py; default x/y/z by a/b/c)")
    _cluster_args(c, "cluster model for --check: the live cluster's pods (instead of --layout)")
    c.set_defaults(func=run)
    i = sub.add_parser("impact", help="connections new/changed policies would cut or open on the live cluster")
    i.add_argument("files", nargs="*", type=Path, metavar="FILE", help="proposed policies (YAML)")
    i.add_argument("--remove", action="append", default=[], metavar="KIND/NAMESPACE/NAME",
                   help="a policy to delete (repeatable; Kind/name for cluster-scoped ones)")
    i.add_argument("--namespace", "-n", action="append", metavar="NS", help="only pods of these namespaces")
    i.add_argument("--ports", help="ports to evaluate, e.g. 80/TCP,53/UDP (default: every port the policies "
                                   "mention or the pods declare, plus one no policy mentions)")
    i.add_argument("--json", action="store_true", help="print every changed connection as JSON")
    _cluster_args(i, "cluster to read (default $KUBECONFIG, else ~/.kube/config)")
    i.set_defaults(func=run)


def _cluster_args(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--kubeconfig", type=Path, help=text)
    parser.add_argument("--context", help="kubeconfig context")


def read_objects(paths: list[Path]) -> list[dict[str, Any]]:
    """Objects of multi-document YAML files (``kind: List`` expanded); errors name the file."""
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read: {exc}") from None
        for number, doc in enumerate(docs, 1):
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: document {number} is not a mapping")
            out.extend(doc.get("items") or [] if doc.get("kind") == "List" else [doc])
    return out


def _ports(text: str | None) -> list[tuple[int, str]] | None:
    if not text:
        return None
    out = []
    for part in text.split(","):
        port, _, proto = part.strip().partition("/")
        if not port.isdigit():
            raise ValueError(f"--ports: {part!r} is not PORT[/PROTOCOL]")
        out.append((int(port), (proto or "TCP").upper()))
    return out


def _kube(args: argparse.Namespace) -> Any:
    from ..kube import Kube

    path = args.kubeconfig or Path(os.environ.get("KUBECONFIG", "") or Path.home() / ".kube" / "config")
    if not Path(path).is_file():
        raise ValueError(f"kubeconfig {path} not found (give --kubeconfig)")
    return Kube.from_kubeconfig(path, args.context)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 120)
    try:
        if args.policy_command == "convert":
            return _convert(args)
        return _impact(args)
    except ValueError as exc:
        print(f"cni-runbook policy: {exc}", file=sys.stderr)
        return 2


def _convert(args: argparse.Namespace) -> int:
    from . import convert, equivalence
    from .layout import default_layout, layout_from_dict

    objects = read_objects(args.files)
    result = convert.convert(objects)
    print(result.summary().to_string(index=False))
    if args.out:
        args.out.write_text(yaml.safe_dump_all(result.objects(), sort_keys=False))
        print(f"wrote {len(result.objects())} objects to {args.out}")
    if not args.check:
        return 0
    if args.kubeconfig:
        from .impact import live_cluster

        kube = _kube(args)
        try:
            cluster = live_cluster(kube)
        finally:
            kube.close()
    elif args.layout:
        cluster = layout_from_dict(yaml.safe_load(args.layout.read_text()) or {}).cluster()
    else:
        cluster = default_layout().cluster()
    proof = equivalence.check(cluster, objects, result)
    print(proof.summary)
    if not proof.proven:
        print(proof.differences.to_string(index=False))
        return 1
    return 0


def _impact(args: argparse.Namespace) -> int:
    from .impact import live_impact

    proposed = read_objects(args.files)
    if not proposed and not args.remove:
        raise ValueError("give proposed policy files and/or --remove")
    kube = _kube(args)
    try:
        result = live_impact(kube, proposed, args.remove, args.namespace, _ports(args.ports))
    finally:
        kube.close()
    if args.json:
        print(json.dumps(result.changes.to_dict(orient="records"), indent=2))
        return 0
    print(result.summary)
    grouped = result.grouped()
    if not grouped.empty:
        grouped["rule"] = grouped["rule"].map(lambda r: r.splitlines()[0] if r else "")
        print(grouped.to_string(index=False))
    return 0
