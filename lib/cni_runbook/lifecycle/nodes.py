"""What a removed CNI leaves on the nodes: find it and clean it, over SSH through Ansible.

Pure parts: :func:`listing_script` (one shell script printing a node's conflists, binaries,
interfaces, iptables chains, ipsets and routes as ``section<TAB>value`` lines),
:func:`parse_listing`, :func:`leftovers_found` (which of a CNI's :class:`~.profiles.Leftovers`
a listing still shows) and :func:`cleanup_script` (the shell script that removes them). The
scripts run on every node with :func:`run_script`, a small playbook through the project's
Ansible gateway (:mod:`cni_runbook.ansible.runner`) - the same SSH path as stage 00.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .profiles import Leftovers

#: iptables has two backends (legacy, nft) and a CNI may use either (its image decides): both are
#: listed and cleaned, each with its own binaries; plain ``iptables`` when neither variant exists.
_BACKENDS = ('backends=""; for b in iptables-legacy iptables-nft; do command -v "$b-save" >/dev/null 2>&1 && '
             'backends="$backends $b"; done; [ -n "$backends" ] || backends=iptables')

SECTIONS = ("conflist", "binary", "interface", "chain", "ipset", "route", "file")
LISTING_TASK = "list CNI leftovers"
CLEANUP_TASK = "remove CNI leftovers"


def listing_script(leftovers: Leftovers | None = None) -> str:
    """A POSIX shell script listing what a CNI may leave on a node (read-only)."""
    files = " ".join(shlex.quote(f) for f in (leftovers.files if leftovers else ()))
    binaries = " ".join(shlex.quote(f) for f in (leftovers.binaries if leftovers else ()))
    return "\n".join([
        "set -u",
        'for f in /etc/cni/net.d/*; do [ -e "$f" ] && printf "conflist\\t%s\\n" "$f"; done',
        f'for f in {binaries}; do [ -e "$f" ] && printf "binary\\t%s\\n" "$f"; done' if binaries else ":",
        "ip -o link show | awk -F': ' '{split($2, n, \"@\"); printf \"interface\\t%s\\n\", n[1]}'",
        _BACKENDS,
        "for b in $backends; do for t in filter nat mangle raw; do ${b}-save -t $t 2>/dev/null | "
        "awk -v t=$t -v b=$b '/^:/ {printf \"chain\\t%s:%s/%s\\n\", b, t, substr($1, 2)}'; done; done",
        "ipset list -n 2>/dev/null | awk '{printf \"ipset\\t%s\\n\", $1}'",
        "ip -4 route show | awk '{printf \"route\\t%s\\n\", $0}'",
        # an empty directory is not a leftover (a mount point stays, e.g. the lab's per-node /run/flannel)
        f'for f in {files}; do [ -e "$f" ] && {{ [ ! -d "$f" ] || [ -n "$(ls -A "$f")" ]; }} && printf "file\\t%s\\n" "$f"; '
        'done' if files else ":",
        "exit 0",
    ]) + "\n"


def parse_listing(text: str) -> dict[str, list[str]]:
    """``section<TAB>value`` lines -> {section: [values]} (unknown sections ignored)."""
    out: dict[str, list[str]] = {s: [] for s in SECTIONS}
    for line in text.splitlines():
        section, _, value = line.partition("\t")
        if section in out and value:
            out[section].append(value.strip())
    return out


def _matches(name: str, patterns: Iterable[str], *, prefix: bool) -> bool:
    for pattern in patterns:
        if pattern.endswith("*") and fnmatch.fnmatchcase(name, pattern):
            return True
        if prefix and name.startswith(pattern):
            return True
        if name == pattern:
            return True
    return False


def leftovers_found(listing: Mapping[str, list[str]], leftovers: Leftovers, *, pod_cidrs: Iterable[str] = (),
                    own_pod_cidr: str | None = None, new_cni_routes: bool = False) -> list[dict[str, str]]:
    """Rows {what, name} of ``leftovers`` still present in a node's ``listing``.

    Routes: a route to another node's pod CIDR (``pod_cidrs`` minus ``own_pod_cidr``) counts
    only when ``leftovers.pod_cidr_routes``; ``new_cni_routes`` (the listing is taken after the
    next CNI set up its own routes to the same CIDRs, e.g. kube-router's via the node's link):
    only a route through one of the removed CNI's interfaces counts.
    """
    rows = []
    rows += [{"what": "conflist", "name": n} for n in listing.get("conflist", []) if n in leftovers.conflists]
    rows += [{"what": "binary", "name": n} for n in listing.get("binary", []) if n in leftovers.binaries]
    rows += [{"what": "interface", "name": n} for n in listing.get("interface", [])
             if _matches(n, leftovers.interfaces, prefix=False)]
    rows += [{"what": "iptables chain", "name": n} for n in listing.get("chain", [])
             if _matches(n.partition("/")[2], leftovers.iptables_chains, prefix=True)]
    rows += [{"what": "ipset", "name": n} for n in listing.get("ipset", []) if _matches(n, leftovers.ipsets, prefix=True)]
    rows += [{"what": "file", "name": n} for n in listing.get("file", []) if n in leftovers.files]
    if leftovers.pod_cidr_routes:
        others = {c for c in pod_cidrs if c and c != own_pod_cidr}
        rows += [{"what": "route", "name": r} for r in listing.get("route", []) if r.split()[0] in others
                 and (not new_cni_routes or _matches(_route_dev(r), leftovers.interfaces, prefix=False))]
    return rows


def _route_dev(route: str) -> str:
    words = route.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else ""


def cleanup_script(leftovers: Leftovers, *, pod_cidrs: Iterable[str] = ()) -> str:
    """A shell script removing ``leftovers`` from a node (idempotent; prints what it removed).

    Interfaces are deleted (a bridge's veths go with their pods), iptables chains are flushed
    then every rule jumping to them is deleted and the chains removed, ipsets destroyed, routes
    to ``pod_cidrs`` deleted, conflists/binaries/files removed.
    """
    q = shlex.quote
    lines = ["set -u", "removed=0", 'say() { printf "removed\\t%s\\n" "$1"; removed=$((removed+1)); }']
    for path in (*leftovers.conflists, *leftovers.binaries):
        lines.append(f'if [ -e {q(path)} ]; then rm -f {q(path)} && say {q(path)}; fi')
    for name in leftovers.interfaces:
        if name.endswith("*"):
            pattern = name[:-1]
            lines.append(f"for i in $(ip -o link show | awk -F': ' '{{split($2, n, \"@\"); print n[1]}}' | grep '^{pattern}'); "
                         'do ip link delete "$i" && say "interface $i"; done')
        else:
            lines.append(f"if ip link show {q(name)} >/dev/null 2>&1; then ip link delete {q(name)} && say {q('interface ' + name)}; fi")
    if leftovers.iptables_chains:
        regex = "|".join(leftovers.iptables_chains)
        lines += [
            _BACKENDS,
            "for b in $backends; do for t in filter nat mangle raw; do",
            f"  chains=$(${{b}}-save -t $t 2>/dev/null | awk '/^:/ {{print substr($1, 2)}}' | grep -E '^({regex})' || true)",
            '  [ -z "$chains" ] && continue',
            # delete every rule that jumps to one of the chains (from any chain), then flush and delete them
            f"  ${{b}}-save -t $t | grep -E -- '-j ({regex})' | sed 's/^-A /-D /' | while read -r rule; do "
            "eval $b -t $t $rule 2>/dev/null || true; done",
            '  for c in $chains; do $b -t $t -F "$c" 2>/dev/null || true; done',
            '  for c in $chains; do $b -t $t -X "$c" 2>/dev/null && say "chain $b:$t/$c"; done',
            "done; done",
        ]
    if leftovers.ipsets:
        regex = "|".join(leftovers.ipsets)
        lines += [
            _BACKENDS,
            # a set in use cannot be destroyed: first every rule matching one (e.g. kube-router's pod
            # egress MASQUERADE in nat POSTROUTING, which jumps to no chain of its own)
            "for b in $backends; do for t in filter nat mangle raw; do",
            f"  ${{b}}-save -t $t 2>/dev/null | grep -E -- '^-A .*--match-set ({regex})' | sed 's/^-A /-D /' | "
            "while read -r rule; do eval $b -t $t $rule 2>/dev/null && say \"rule $b:$t ${rule#-D }\"; done",
            "done; done",
            f"for s in $(ipset list -n 2>/dev/null | grep -E '^({regex})' || true); do "
            'ipset destroy "$s" 2>/dev/null && say "ipset $s"; done',
        ]
    if leftovers.pod_cidr_routes:
        for cidr in pod_cidrs:
            lines.append(f"if ip -4 route show {q(cidr)} | grep -q .; then ip -4 route del {q(cidr)} && say {q('route ' + cidr)}; fi")
    for path in leftovers.files:  # a directory that is a mount point cannot go: it is emptied
        lines.append(f'if [ -e {q(path)} ]; then rm -rf {q(path)} 2>/dev/null || find {q(path)} -mindepth 1 -delete; '
                     f'say {q(path)}; fi')
    lines += ['printf "total\\t%s\\n" "$removed"', "exit 0"]
    return "\n".join(lines) + "\n"


def playbook(name: str, script: str, *, become: bool = False) -> str:
    """A one-task playbook running ``script`` with /bin/sh on every host (no fact gathering)."""
    play = [{"name": name, "hosts": "all", "gather_facts": False, "become": become,
             "tasks": [{"name": name, "ansible.builtin.shell": {"cmd": script, "executable": "/bin/sh"},
                        "changed_when": False}]}]
    return yaml.safe_dump(play, sort_keys=False, width=1000)


def run_script(inventory: Mapping[str, Any], run_dir: str | Path, name: str, script: str, *, envvars: Mapping[str, str],
               become: bool = False, timeout: int = 300, redact=None) -> dict[str, str]:
    """Run ``script`` on every host of ``inventory``; returns host -> stdout. Raises on any failed host."""
    from ..ansible.runner import run_playbook

    work = Path(run_dir) / "lifecycle-playbooks"
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name.replace(' ', '-')}.yml"
    path.write_text(playbook(name, script, become=become))
    result = run_playbook(path, run_dir=run_dir, inventory=dict(inventory), envvars=dict(envvars), timeout=timeout,
                          capture=[name], redact=redact, name=name.replace(" ", "-"))
    if not result.ok:
        raise RuntimeError(f"{name}: {result.summary()}")
    return {host: (r.res.get("stdout") or "") for host, r in sorted(result.results(name).items())}


__all__ = ["cleanup_script", "leftovers_found", "listing_script", "parse_listing", "playbook", "run_script"]
