"""CNI profiles: what the runbook knows of each CNI, as data plus a renderer.

:data:`FACTS` holds one :class:`CniProfile` per ``cni.profile``: its renderer, whether it
enforces Kubernetes NetworkPolicy, its agent DaemonSet (``namespace/name`` in the vendor's
manifest), the label selector of its pods, and what its health check is. Stage 02 renders with
the renderer, stage 03 checks the agent, stage 04 decides from ``enforces_network_policy``
whether truth tables can prove anything (:func:`policy_enforcement`).

Every renderer takes the upstream :class:`~cni_runbook.cni.manifests.Manifest` and keyword
options and returns a :class:`~cni_runbook.cni.manifests.RenderedManifest`:

- ``antrea``: :func:`cni_runbook.cni.antrea.render_antrea` (version, settings, image_registry,
  kube_proxy_remove, where)
- ``flannel``: :func:`cni_runbook.cni.flannel.render_flannel` (version, network, settings,
  image_registry, where)
- ``generic``: :func:`cni_runbook.cni.generic.render_generic` (image_registry, where)
- ``lab``: :func:`cni_runbook.cni.generic.render_lab` (same options as generic)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .antrea import render_antrea
from .errors import SettingsError
from .flannel import render_flannel
from .generic import render_generic, render_lab
from .manifests import Manifest, RenderedManifest

Renderer = Callable[..., RenderedManifest]


@dataclass(frozen=True)
class CniProfile:
    """The facts of one CNI profile.

    ``enforces_network_policy``: True (its agent implements Kubernetes NetworkPolicy), False
    (policies are accepted by the API server and silently not enforced) or None (unknown: a
    generic manifest; stage 04's truth tables decide). ``agent``: ``namespace/DaemonSet`` of the
    node agent in the vendor's manifest (None: unknown). ``pod_selector``: label selector of the
    CNI's pods. ``health``: what stage 02/03 check for it beyond rollouts and Ready nodes.
    """

    name: str
    renderer: Renderer
    description: str
    enforces_network_policy: bool | None
    agent: str | None
    pod_selector: str | None
    health: str
    options: tuple[str, ...] = ()  # renderer options taken from the params besides settings/image_registry

    @property
    def agent_namespace(self) -> str | None:
        return self.agent.split("/", 1)[0] if self.agent else None


FACTS: dict[str, CniProfile] = {
    "antrea": CniProfile(
        "antrea", render_antrea, "Antrea (Open vSwitch datapath; openvswitch kernel module required)",
        enforces_network_policy=True, agent="kube-system/antrea-agent", pod_selector="app=antrea",
        health="antrea-agent Running on every node, antrea-controller Ready, APIServices Available, "
               "antctl check installation", options=("version", "kube_proxy_remove")),
    "lab": CniProfile(
        "lab", render_lab, "the lab's kube-router (bridge + host-local, NetworkPolicy via iptables/ipset)",
        enforces_network_policy=True, agent="kube-system/kube-router", pod_selector="k8s-app=kube-router",
        health="kube-router Ready on every node"),
    "flannel": CniProfile(
        "flannel", render_flannel, "flannel (vxlan overlay; no NetworkPolicy controller)",
        enforces_network_policy=False, agent="kube-flannel/kube-flannel-ds", pod_selector="app=flannel",
        health="kube-flannel-ds Ready on every node (v0.28.9+: /readyz probe), subnet lease per node",
        options=("version", "network")),
    "generic": CniProfile(
        "generic", render_generic, "any CNI from its own manifests or chart; the runbook knows nothing of it",
        enforces_network_policy=None, agent=None, pod_selector=None,
        health="rollouts of its DaemonSets/Deployments, nodes Ready, CoreDNS Running"),
}

#: profile name -> renderer (the renderers of :data:`FACTS`)
PROFILES: dict[str, Renderer] = {name: facts.renderer for name, facts in FACTS.items()}


def get_profile(profile: str) -> CniProfile:
    """The facts of ``profile``; SettingsError with a "did you mean" for an unknown name."""
    try:
        return FACTS[profile]
    except KeyError:
        near = difflib.get_close_matches(str(profile), FACTS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise SettingsError(f"cni.profile: unknown profile {profile!r}, expected one of {', '.join(FACTS)}{hint}") from None


def get_renderer(profile: str) -> Renderer:
    """The renderer of ``profile``; SettingsError with a "did you mean" for an unknown name."""
    return get_profile(profile).renderer


def render(profile: str, manifest: Manifest, **options: Any) -> RenderedManifest:
    """Render ``manifest`` with the renderer of ``profile``."""
    return get_renderer(profile)(manifest, **options)


def render_options(cni: Any, *, kube_proxy_remove: bool = False, pod_network: str | None = None,
                   where: str = "cni") -> dict[str, Any]:
    """The renderer options of ``cni`` (the params' ``cni`` section) for its profile."""
    facts = get_profile(cni.profile)
    options: dict[str, Any] = {"image_registry": cni.image_registry, "settings": dict(cni.config or {}),
                               "where": f"{where}.config"}
    available = {"version": cni.version, "kube_proxy_remove": kube_proxy_remove,
                 "network": str(pod_network) if pod_network else None}
    options.update({name: available[name] for name in facts.options})
    return options


def cni_agent(profile: str) -> str | None:
    """``namespace/DaemonSet`` of the profile's node agent (None when unknown)."""
    return FACTS[profile].agent if profile in FACTS else None


# --------------------------------------------------------------------------- NetworkPolicy


@dataclass(frozen=True)
class PolicyEnforcement:
    """Stage 04's verdict on whether NetworkPolicy truth tables can run on this CNI.

    ``probe``: run the truth tables (the CNI enforces policies, or nobody knows). ``check``: the
    ``ctx.result`` check to record (None when the truth tables decide). ``message``: what to say
    before probing.
    """

    profile: str
    enforces: bool | None
    accepted: bool
    probe: bool
    message: str
    check: dict[str, Any] | None

    def checks(self, policy_run: Any = None) -> list[dict[str, Any]]:
        """The policy part's checks: this verdict's own, then the truth tables' (if they ran)."""
        return ([self.check] if self.check else []) + (policy_run.checks() if policy_run is not None else [])

    def summary(self, policy_run: Any = None) -> str:
        if policy_run is not None:
            return policy_run.summary
        return self.check["message"] if self.check else "policy: truth tables not run"

    def record(self) -> dict[str, Any]:
        return {"profile": self.profile, "enforces_network_policy": self.enforces, "accepted": self.accepted,
                "truth_tables": self.probe, "message": self.message, "check": self.check}

    def row(self) -> dict[str, Any]:
        return {"profile": self.profile, "enforces NetworkPolicy": {True: "yes", False: "no", None: "unknown"}[self.enforces],
                "accepted without enforcement": self.accepted, "truth tables": "run" if self.probe else "not run",
                "message": self.message}


NO_ENFORCEMENT = "NetworkPolicy enforcement"


def policy_enforcement(profile: str, accept_no_enforcement: bool = False) -> PolicyEnforcement:
    """Decide stage 04's policy part from the profile's fact and the site's acceptance.

    A CNI that does not enforce NetworkPolicy gets no truth tables (every "blocked" cell would be
    reachable: that proves nothing new) and one check ``NetworkPolicy enforcement``: failed,
    unless ``policy.accept_no_enforcement`` is true, then skipped as waived. Never passed.
    """
    facts = get_profile(profile)
    if facts.enforces_network_policy is not False:
        known = "enforces" if facts.enforces_network_policy else "may or may not enforce (unknown CNI)"
        return PolicyEnforcement(profile, facts.enforces_network_policy, accept_no_enforcement, True,
                                 f"profile {profile}: {known} NetworkPolicy; the truth tables decide", None)
    message = (f"profile {profile}: no NetworkPolicy enforcement. {facts.description}: NetworkPolicies are "
               "accepted by the API server and silently NOT enforced; every pod stays reachable whatever the "
               "policies say. The truth tables are not run.")
    if accept_no_enforcement:
        check = {"name": NO_ENFORCEMENT, "status": "skipped",
                 "message": f"no NetworkPolicy enforcement ({profile}); waived by policy.accept_no_enforcement"}
        message += " The site accepts this (policy.accept_no_enforcement: true): recorded as waived."
    else:
        check = {"name": NO_ENFORCEMENT, "status": "failed",
                 "message": f"no NetworkPolicy enforcement ({profile}): policies would be accepted and not enforced; "
                            "set policy.accept_no_enforcement: true to run without enforcement"}
        message += " This fails the policy part (set policy.accept_no_enforcement: true to accept it)."
    return PolicyEnforcement(profile, False, accept_no_enforcement, False, message, check)
