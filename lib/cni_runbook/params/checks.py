"""Static checks of validated params: everything that can be known before a host or a cluster is touched.

The schema checks each value on its own; these checks read what the values point at and how they
fit together for the chosen CNI source and stages:

* files named by params exist and parse (``policy.files``, ``cni.source.path``, Helm
  ``values_files``, ``policy.layout``);
* built-in policy scenario names and preflight waiver names exist;
* ``cni.config`` only for a profile that has settings (flannel: ``chain_bandwidth``);
* the Antrea settings in ``cni.config`` are known, well-typed and consistent
  (``antreaProxy.proxyAll`` with ``kube_proxy_remove`` needs ``kubeAPIServerOverride``);
* an Antrea version without ``cni.source`` is a release this runbook knows.

:func:`check` returns problems, one a line, each naming the file (with line), the key and what
was expected. :func:`cni_runbook.params.load_params` calls it, so ``cni-runbook params``, ``run``
(before stage 00) and every stage notebook get the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from .schema import Params

Where = Callable[[tuple[str | int, ...]], str]

#: Antrea release series this runbook knows (v2.7.0 is the newest tag it was checked against).
#: A newer release works by giving its manifest as ``cni.source`` (kind manifest-url or file).
ANTREA_SERIES = {1: range(0, 16), 2: range(0, 8)}
ANTREA_MAX_PATCH = 20


def _yaml_file(path: str, loc: tuple[str | int, ...], where: Where, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        return [f"{where(loc)}: {_dotted(loc)} = {path!r}: {what} does not exist (expected a readable file)"]
    try:
        from .loader import safe_load_all_bounded

        safe_load_all_bounded(p.read_text(), str(p))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{where(loc)}: {_dotted(loc)} = {path!r}: cannot read {what}: {exc}"]
    except (yaml.YAMLError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [f"{where(loc)}: {_dotted(loc)} = {path!r}: {what} is not valid YAML: {first}"]
    return []


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _files(params: Params, where: Where) -> list[str]:
    problems: list[str] = []
    for i, path in enumerate(params.policy.files):
        problems += _yaml_file(path, ("policy", "files", i), where, "the policy file")
    source = params.cni.source
    if source is not None and source.kind == "file" and source.path:
        problems += _yaml_file(source.path, ("cni", "source", "path"), where, "the CNI manifest")
    if source is not None and source.helm is not None:
        for i, path in enumerate(source.helm.values_files):
            problems += _yaml_file(path, ("cni", "source", "helm", "values_files", i), where, "the Helm values file")
    return problems


def _policy(params: Params, where: Where) -> list[str]:
    """Scenario names, the layout and the policy files' objects, as stage 04 will read them."""
    policy = params.policy
    if not policy.files and policy.layout is None and list(policy.scenarios) == ["all"]:
        return []  # the defaults hold (and the policy engine is slow to import)
    from ..policy.sets import PolicyFileError, layout_for, policy_sets

    try:
        layout = layout_for(params.policy)
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{where(('policy', 'layout'))}: policy.layout: {exc}"]
    try:
        policy_sets(params.policy, layout.cluster(), layout)
    except PolicyFileError as exc:
        return [f"{where(('policy', 'files'))}: policy.files: {line}" for line in str(exc).splitlines()]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{where(('policy', 'scenarios'))}: policy.scenarios: {exc}"]
    return []


def _waivers(params: Params, where: Where) -> list[str]:
    if not params.cluster.preflight.waivers:
        return []  # (the check list module is slow to import: only when there is something to check)
    from ..preflight.checks import PROFILES, check_names

    known = sorted({name for profile in PROFILES for name in check_names(profile)})
    problems = []
    for i, waiver in enumerate(params.cluster.preflight.waivers):
        if waiver not in known:
            import difflib

            close = difflib.get_close_matches(waiver, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{where(('cluster', 'preflight', 'waivers', i))}: cluster.preflight.waivers[{i}] = "
                            f"{waiver!r}: no preflight check has this name; {hint}known: {', '.join(known)}")
    return problems


def _profile_settings(params: Params, where: Where) -> list[str]:
    """``cni.config`` for a profile that takes no settings (lab, generic) or only a few (flannel): what
    stage 02's renderer would refuse, said before anything is touched."""
    cni, loc = params.cni, ("cni", "config")
    if not cni.config or cni.profile == "antrea":
        return []
    if cni.profile == "flannel":
        from ..cni import flannel

        unknown = sorted(set(cni.config) - set(flannel.SETTINGS))
        if unknown:
            return [f"{where(loc)}: cni.config: {', '.join(unknown)}: the flannel profile knows only "
                    f"{', '.join(flannel.SETTINGS)}"]
        return []
    return [f"{where(loc)}: cni.config: {', '.join(sorted(cni.config))}: profile {cni.profile!r} has no configuration "
            "keys (expected no cni.config); edit the manifest (or chart values) itself, or use a profile that knows "
            "this CNI (antrea, flannel)"]


def _antrea(params: Params, where: Where) -> list[str]:
    cni = params.cni
    if cni.profile != "antrea":
        return []
    from ..cni import antrea

    problems = []
    if cni.source is None and cni.version:
        m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", str(cni.version).strip())
        if m:
            major, minor, patch = (int(g) for g in m.groups())
            if minor not in ANTREA_SERIES.get(major, ()) or patch > ANTREA_MAX_PATCH:
                newest = max(ANTREA_SERIES)
                problems.append(
                    f"{where(('cni', 'version'))}: cni.version = {cni.version!r}: not an Antrea release this "
                    f"runbook knows (v1.0-v1.{max(ANTREA_SERIES[1])}, v2.0-v{newest}.{max(ANTREA_SERIES[newest])} "
                    "series); for another release give its manifest as cni.source")
    # the flat form (antreaProxy: {...}) and the per-file form (antrea-agent.conf: {...}), as stage 02 reads them
    per_file = (antrea.AGENT_CONF, antrea.CONTROLLER_CONF)
    flat = antrea.flatten_settings({k: v for k, v in cni.config.items() if k not in per_file})
    for conf in per_file:
        flat.update(antrea.flatten_settings(cni.config.get(conf) or {}))
    loc = ("cni", "config")
    for key, value in flat.items():
        if key.startswith("featureGates."):
            if not isinstance(value, bool):
                problems.append(f"{where(loc)}: cni.config.{key}: expected true or false")
            continue  # gate names: the manifest's own config lists them; stage 02 checks against it
        spec = antrea.SETTINGS.get(key)
        if spec is None:
            import difflib

            near = difflib.get_close_matches(key, sorted(antrea.SETTINGS), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}? " if near else ""
            problems.append(f"{where(loc)}: cni.config.{key}: unknown Antrea setting; {hint}"
                            f"supported: {', '.join(sorted(antrea.SETTINGS))}, featureGates.<Gate>")
            continue
        issue = spec.check(value)
        if issue:
            problems.append(f"{where(loc)}: cni.config.{key}: {issue}")
    proxy_all = flat.get("antreaProxy.proxyAll") is True
    if proxy_all and flat.get("antreaProxy.enable") is False:
        problems.append(f"{where(loc)}: cni.config.antreaProxy.proxyAll: true needs antreaProxy.enable: true")
    if params.kubespray.kube_proxy_remove and not flat.get("kubeAPIServerOverride"):
        problems.append(
            f"{where(loc)}: cni.config.kubeAPIServerOverride: required when kubespray.kube_proxy_remove is true "
            "(with antreaProxy.proxyAll the agents reach the API server without kube-proxy); e.g. "
            "https://10.0.0.10:6443")
    if params.kubespray.kube_proxy_remove and not proxy_all:
        problems.append(f"{where(loc)}: cni.config.antreaProxy.proxyAll: must be true when kubespray.kube_proxy_remove "
                        "is true (nothing else would serve Services)")
    if proxy_all and not params.kubespray.kube_proxy_remove and not flat.get("kubeAPIServerOverride"):
        problems.append(
            f"{where(loc)}: cni.config.antreaProxy.proxyAll: true needs cni.config.kubeAPIServerOverride "
            "(the API server address the agents use once AntreaProxy serves all Services), e.g. https://10.0.0.10:6443")
    return problems


def check(params: Params, where: Where) -> list[str]:
    """Every static problem of ``params``; ``where(loc)`` names the file:line that set a key."""
    problems = _files(params, where)
    problems += _waivers(params, where)
    problems += _antrea(params, where)
    problems += _profile_settings(params, where)
    if not any(p.split(": ", 2)[1].startswith("policy.files") for p in problems if ": " in p):
        problems += _policy(params, where)
    return problems


__all__ = ["check", "ANTREA_SERIES"]
