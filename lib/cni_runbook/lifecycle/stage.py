"""Stage 05 wired: the plan from the params (and, read-only, the cluster when it exists), the apply.

:func:`plan_stage` renders the installed CNI (``cni``) and the target (``lifecycle.target``)
into the artifacts (``current/``, ``target/``), reads - read only, also in plan mode - the
cluster's server version, the installed objects and the policies in force when a cluster is
reachable (else ``kubespray.kube_version`` and the renderings stand in), and builds the
:class:`~.upgrade.UpgradePlan` or :class:`~.replace.ReplacementPlan`. :func:`apply_stage`
carries it out (see :mod:`.apply`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import profiles
from .installed import Installed, read_installed
from .replace import PoliciesInForce, ReplacementPlan, kubespray_vars, plan_replacement
from .upgrade import UpgradePlan, plan_upgrade

KUBE_FROM_PARAMS = "kubespray.kube_version"
KUBE_FROM_SERVER = "the live API server"


@dataclass
class LifecyclePlan:
    """What stage 05 would do: ``skipped`` (no target), else ``upgrade`` or ``replace``."""

    mode: str
    plan: UpgradePlan | ReplacementPlan | None = None
    skipped: str = ""  # why nothing is planned
    current: Any = None  # cni.preparation.Prepared of the installed CNI
    target: Any = None  # cni.preparation.Prepared of the target
    kube_version: str | None = None
    kube_from: str = ""
    cluster_read: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.plan is not None and self.plan.ok

    @property
    def refusals(self) -> list[str]:
        return list(self.plan.refusals) if self.plan is not None else []

    def summary(self) -> str:
        return self.skipped or self.plan.summary()

    def actions(self) -> list[dict[str, str]]:
        return list(self.plan.steps) if self.plan is not None else []

    def record(self) -> dict[str, Any]:
        out = {"mode": self.mode, "skipped": self.skipped, "kube_version": self.kube_version, "kube_from": self.kube_from,
               "cluster_read": self.cluster_read, "notes": self.notes}
        if self.plan is not None:
            out["plan"] = self.plan.as_record()
        return out

    def checks(self) -> list[dict[str, Any]]:
        if self.plan is None:
            return []
        out = [c.as_check() for c in self.plan.checks]
        out += [{"name": "plan refused", "status": "failed", "message": r} for r in self.plan.refusals]
        return out


def kubeconfig(params, state_get, *, require_up: bool = True):
    """(kubeconfig path, context) of the cluster (:func:`cni_runbook.provision.targets.resolve`)."""
    from ..provision import targets

    target = targets.resolve(params, state_get, require_up=require_up)
    return target.kubeconfig_path, target.context


def connect(params, state_get):
    """A :class:`~cni_runbook.kube.Kube` for the cluster when one is reachable, else None (and why)."""
    from ..errors import OperatorError
    from ..kube import Kube

    try:
        path, context = kubeconfig(params, state_get, require_up=False)
        if path is None or not path.is_file():
            return None, f"{path}: no kubeconfig (the cluster does not exist yet)"
        kube = Kube.from_kubeconfig(path, context)
        kube.version()
        return kube, ""
    except OperatorError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - no cluster (yet): the plan says so and goes on without it
        return None, f"the cluster is not reachable ({type(exc).__name__}: {str(exc)[:200]})"


def _prepare(cni, artifacts: Path, plan: bool, kube_proxy_remove: bool, pod_network=None):
    """Stage 02's rendering of ``cni`` (same options: flannel's Network is ``pod_network``)."""
    from ..cni import preparation as cni_install

    artifacts.mkdir(parents=True, exist_ok=True)
    return cni_install.prepare(cni, artifacts, kube_proxy_remove=kube_proxy_remove,
                               pod_network=pod_network)  # plan mode fetches too


def _refs(*renderings) -> list[tuple[str, str, str | None, str]]:
    refs = []
    for prepared in renderings:
        for o in (prepared.objects if prepared is not None else ()):
            refs.append((o.ref.api_version, o.ref.kind, o.ref.namespace, o.ref.name))
    return refs


def _policies(kube) -> PoliciesInForce:
    import json

    from kubernetes import client

    items = json.loads(client.NetworkingV1Api(kube.api).list_network_policy_for_all_namespaces(
        _preload_content=False).data)["items"]
    native = []
    for api_version, kind in (("crd.antrea.io/v1beta1", "ClusterNetworkPolicy"), ("crd.antrea.io/v1beta1", "NetworkPolicy")):
        try:
            res = kube.resource(api_version, kind)
        except Exception:  # noqa: BLE001 - Antrea not installed: no native policies
            continue
        native += [i.to_dict() for i in kube.dynamic.get(res).items]
    return PoliciesInForce.from_objects(items, native)


def cni_on_cluster(kube, lp: LifecyclePlan) -> dict[str, str]:
    """The CNI(s) of the operation as read from the cluster now: {family: "version (workloads; maker)"
    or "absent"}: the installed CNI and, for a replacement, the target."""
    p = lp.plan
    if isinstance(p, ReplacementPlan):
        sides = [(profiles.facts(p.current_profile), _refs(lp.current)), (profiles.facts(p.target_profile), _refs(lp.target))]
    else:
        sides = [(profiles.facts(p.profile), _refs(lp.current, lp.target))]
    out = {}
    for facts, refs in sides:
        found = read_installed(kube, facts, refs)
        where = ", ".join(f"{w['workload']} {w['version'] or '?'}" for w in found.workloads)
        out[facts.family] = f"{found.version or '?'} ({where}; made by {found.made_by})" if found.found else "absent"
    return out


def plan_stage(ctx, *, kube=None) -> LifecyclePlan:
    """The stage's plan (module docstring). ``kube``: an open connection (else one is tried)."""
    params = ctx.params
    lc = params.lifecycle
    if lc.target is None:
        return LifecyclePlan(lc.mode, skipped="lifecycle.target is not set: no upgrade or replacement to do")
    notes: list[str] = []
    own_kube = kube is None
    why = ""
    if kube is None:
        kube, why = connect(params, ctx.get)
    try:
        if kube is not None:
            kube_version, kube_from = kube.version(), KUBE_FROM_SERVER
        else:
            kube_version, kube_from = params.kubespray.kube_version, KUBE_FROM_PARAMS
            notes.append(f"cluster not read: {why}" if why else "cluster not read")
        proxy_remove, pods = params.kubespray.kube_proxy_remove, params.kubespray.kube_pods_subnet
        current = _prepare(params.cni, ctx.artifacts / "current", ctx.plan, proxy_remove, pods)
        target = _prepare(lc.target, ctx.artifacts / "target", ctx.plan, proxy_remove, pods)
        notes += [f"installed: {n}" for n in current.notes] + [f"target: {n}" for n in target.notes]
        facts_a = profiles.facts(params.cni.profile, leftovers=lc.current_leftovers)
        if lc.mode == "upgrade":
            installed = read_installed(kube, facts_a, _refs(current, target)) if kube is not None else None
            if installed is not None and not installed.found and lc.target.server_dry_run:
                notes.append(f"no {facts_a.family} installed on this cluster: the server-side dry-run is planned "
                             "against the rendering of `cni` instead (nothing is persisted)")
                installed = None
            plan = plan_upgrade(current=params.cni, target=lc.target, facts=facts_a, objects=target.objects,
                                installed=installed, previous=current.objects, kube_version=kube_version,
                                kube_from=kube_from, accept=lc.accept)
        else:
            facts_b = profiles.facts(lc.target.profile, enforces_network_policy=lc.target_enforces_network_policy)
            if kube is not None:
                installed = read_installed(kube, facts_a, _refs(current))
                current_objects = list(installed.objects.values())
                policies = _policies(kube)
            else:
                current_objects = [dict(o.body, metadata={**o.body.get("metadata", {}), "namespace": o.ref.namespace})
                                   if o.ref.namespace else o.body for o in current.objects]
                policies = PoliciesInForce()
                notes.append("policies in force not read (no cluster): the apply run counts them and may refuse")
            ks = params.kubespray
            cluster = {"kube_service_addresses": str(ks.kube_service_addresses), "kube_pods_subnet": str(ks.kube_pods_subnet),
                       "kube_network_node_prefix": ks.kube_network_node_prefix, "kube_proxy_mode": ks.kube_proxy_mode,
                       "kube_proxy_remove": ks.kube_proxy_remove}
            extras = dict(ks.extra_vars) | ({"kube_version": ks.kube_version} if ks.kube_version else {})
            vars_ = kubespray_vars(network_plugin=ks.network_plugin, cluster=cluster, extras=extras,
                                   target_route=lc.target.route,
                                   target_manifest=str(target.rendered_path) if target.rendered_path else None)
            plan = plan_replacement(current=params.cni, target=lc.target, current_facts=facts_a, target_facts=facts_b,
                                    current_objects=current_objects, target_objects=target.objects, policies=policies,
                                    kube_version=kube_version, kube_from=kube_from, restart=lc.pod_restart,
                                    accept=lc.accept, kubespray=vars_)
        return LifecyclePlan(lc.mode, plan, "", current, target, kube_version, kube_from, kube is not None, notes)
    finally:
        if own_kube and kube is not None:
            kube.close()


def write_plan_artifacts(ctx, lp: LifecyclePlan) -> list[str]:
    """The plan's tables and texts into the artifacts; returns the names written."""
    written = ["lifecycle-plan.json"]
    ctx.write_artifact("lifecycle-plan.json", lp.record())
    p = lp.plan
    if isinstance(p, UpgradePlan):
        ctx.write_artifact("object-diff.csv", p.diff)
        written.append("object-diff.csv")
    elif isinstance(p, ReplacementPlan):
        ctx.write_artifact("remove.csv", p.remove_table())
        ctx.write_artifact("leftovers.csv", p.leftovers_table())
        ctx.write_artifact("kubespray-group_vars.diff", p.kubespray.get("diff", ""))
        written += ["remove.csv", "leftovers.csv", "kubespray-group_vars.diff"]
    return written


__all__ = ["LifecyclePlan", "connect", "plan_stage", "write_plan_artifacts", "Installed"]


def validation_tables(kube, params, state_get, *, cni=None, record_dir=None, progress=None) -> dict[str, Any]:
    """The before/after of an operation, as result tables.

    ``validation``: stage 03's suite (``result`` per test); ``truth tables`` (when
    ``lifecycle.truth_tables`` and ``record_dir``): stage 04's verification of the policy sets of
    ``policy`` (``status`` per set). ``cni``: the CNI in place at that moment (its agent is
    checked), default ``params.cni``; when it does not enforce NetworkPolicy its truth tables are
    recorded but informational (they cannot pass).
    """
    import pandas as pd

    from ..provision import targets
    from ..validation.suite import SuiteConfig, run_suite
    from ..validation.workloads import images_for

    if cni is not None:
        params = params.model_copy(update={"cni": cni})
    target = targets.resolve(params, state_get)
    suite = run_suite(kube, SuiteConfig.from_params(params, images_for(params, target)), progress=progress)
    frame = suite.frame.copy()
    frame.attrs["summary"] = suite.summary
    out = {"validation": frame}
    if params.lifecycle.truth_tables and record_dir is not None:
        from ..policy import flow
        from ..policy.workloads import probe_image

        run = flow.run(kube, params.policy, probe_image(params, target), Path(record_dir), progress=progress)
        table = pd.DataFrame([r.row() for r in run.results], columns=["set", "correct", "incorrect", "unknown", "status",
                                                                      "message"])
        if run.error:
            table = pd.DataFrame([{"set": "baseline", "status": "failed", "message": run.error}])
        enforces = profiles.facts(params.cni.profile, enforces_network_policy=(
            params.lifecycle.target_enforces_network_policy if cni is not None else None)).enforces_network_policy
        table.attrs["summary"] = f"{len(table)} set(s): " + ", ".join(f"{r.set} {r.status}" for r in table.itertuples())
        table.attrs["informational"] = not enforces
        out["truth tables"] = table
    return out


def disruption_factory(kube, params, state_get, *, progress=None, relay: bool = False):
    """A factory of :func:`.disruption.measure` windows for this cluster; None without the streaming probe.
    ``relay``: a replacement's (the probe pods are restarted onto the new CNI when the window ends)."""
    import importlib.util
    import json

    if importlib.util.find_spec("cni_runbook.validation.stream") is None:
        return None
    from ..provision import targets
    from ..validation.workloads import images_for
    from .disruption import measure

    lc = params.lifecycle
    images = images_for(params, targets.resolve(params, state_get))
    nodes = [n["metadata"]["name"] for n in json.loads(kube.core.list_node(_preload_content=False).data)["items"]]
    return lambda: measure(kube, nodes=nodes, images=images, pairs=lc.disruption.sample_pairs,
                           interval_s=lc.disruption.interval_s, relay=relay, progress=progress)


def apply_stage(ctx, lp: LifecyclePlan, *, progress=print, validate: bool = True, disruption=None):
    """Stage 05 outside plan mode: carry out ``lp`` (refused plans are never applied)."""
    from ..cni.rollback import write_target
    from ..kube import Kube

    if lp.plan is None or not lp.ok:
        return None
    params = ctx.params
    lc = params.lifecycle
    path, context = kubeconfig(params, ctx.get)
    kube = Kube.from_kubeconfig(path, context)
    write_target(ctx.artifacts, path, context)
    try:
        dry = bool(lc.target.server_dry_run)
        before = cni_on_cluster(kube, lp) if not dry else {}
        result = _apply(ctx, lp, kube, path, progress=progress, validate=validate, disruption=disruption)
        if result is not None and not dry:
            after = cni_on_cluster(kube, lp)
            result.identity = [{"cni": family, "before": before.get(family, "absent"), "after": after.get(family, "absent")}
                               for family in dict.fromkeys([*before, *after])]
        return result
    finally:
        kube.close()


def _apply(ctx, lp: LifecyclePlan, kube, path, *, progress, validate: bool, disruption):
    from .apply import apply_upgrade

    params = ctx.params
    lc = params.lifecycle
    if lp.mode == "replace":
        if disruption is None:
            disruption = disruption_factory(kube, params, ctx.get, progress=progress, relay=True)
        return _apply_replacement(ctx, lp, kube, progress=progress, validate=validate, disruption=disruption)
    dry = bool(lc.target.server_dry_run)
    rounds = iter(range(1, 100))
    check = (lambda: validation_tables(kube, params, ctx.get, record_dir=ctx.artifacts / f"checks-{next(rounds)}",
                                       progress=progress)) if validate and not dry else None
    helm = None
    if lp.plan.helm_release and lp.target is not None and lp.target.source is not None:
        from ..cni import helm as helm_route

        record, chart = lp.target.source, lc.target.source.helm
        values = [*chart.values_files] + ([str(record.path.parent / record.details["values_file"])]
                                           if record.details.get("values_file") else [])
        helm = (lambda kc: helm_route.upgrade_install(record.path, release=chart.release_name, namespace=lc.target.namespace,
                                                      kubeconfig=kc, values_files=values,
                                                      wait_timeout_s=lc.rollout_timeout_s).output[-500:])
    if lp.plan.installed is None and not dry:
        from .errors import LifecycleError

        raise LifecycleError("the installed CNI was not read from the cluster; nothing is applied")
    if disruption is None and not dry:
        disruption = disruption_factory(kube, params, ctx.get, progress=progress)
    return apply_upgrade(kube, lp.plan, record_dir=ctx.artifacts, dry_run=dry, rollout_timeout_s=lc.rollout_timeout_s,
                         rollback_on_failure=lc.rollback_on_failure, helm_chart=helm, kubeconfig=str(path),
                         validate=check, disruption=disruption, progress=progress)


def _apply_replacement(ctx, lp: LifecyclePlan, kube, *, progress, validate: bool, disruption):
    from ..cni.engine import objects_for_cluster
    from ..cni.result import Timeouts
    from ..provision.hosts import ansible_envvars, stage_hosts
    from .nodes import run_script
    from .swap import apply_replacement

    params = ctx.params
    lc = params.lifecycle
    facts_a = profiles.facts(params.cni.profile, leftovers=lc.current_leftovers)
    installed = read_installed(kube, facts_a, _refs(lp.current))
    hosts = stage_hosts(params)
    inventory = hosts.inventory()

    def on_nodes(name: str, script: str):
        return run_script(inventory, ctx.run_dir, name, script, envvars=ansible_envvars(), redact=ctx.redactor.text)

    objects = objects_for_cluster(lp.target.rendered, kube, namespace=lc.target.namespace)
    timeouts = Timeouts(rollout_s=lc.rollout_timeout_s)
    phase = {"after": False}

    def check():  # before: the installed CNI's agent; after the install: the target's
        cni = lc.target if phase["after"] else None
        where = ctx.artifacts / ("checks-after" if phase["after"] else "checks-before")
        phase["after"] = True
        return validation_tables(kube, params, ctx.get, cni=cni, record_dir=where, progress=progress)

    check = check if validate else None
    return apply_replacement(kube, lp.plan, installed=installed, target_objects=objects, record_dir=ctx.artifacts,
                             run_on_nodes=on_nodes, timeouts=timeouts, namespace=lc.target.namespace,
                             rollout_timeout_s=lc.rollout_timeout_s, rollback_on_failure=lc.rollback_on_failure,
                             validate=check, disruption=disruption, progress=progress)


# ----------------------------------------------------------------------------- the stage class

_REFUSAL_KEYS = (
    ("supports the Kubernetes version", "lifecycle.accept.unsupported_kube_version",
     "a target supported on this Kubernetes version, or the explicit acceptance"),
    ("version skew", "lifecycle.accept.version_skew", "a target within the skew rule, or the explicit acceptance"),
    ("does not enforce NetworkPolicy", "lifecycle.accept.policies_not_enforced",
     "no NetworkPolicy in force, a target that enforces them, or the explicit acceptance"),
    ("lifecycle.target", "lifecycle.target", "the CNI after the operation, shaped like `cni`"),
    ("lifecycle.pod_restart", "lifecycle.pod_restart", "node-by-node or all-at-once"),
)


def refusal_finding(text: str):
    """A refusal as the stage layer's blocking :class:`~cni_runbook.stages.base.Finding` (params key named)."""
    from ..stages.base import Finding

    for needle, key, expected in _REFUSAL_KEYS:
        if needle in text:
            return Finding(key, text, expected=expected)
    return Finding("cni", text, expected="an installed CNI this runbook can read (made by stage 02 or Helm)")


def _stage_base():
    from ..stages.base import Stage

    return Stage


class LifecycleStage(_stage_base()):
    """Stage 05 on the stage base: ``plan`` -> :func:`plan_stage`, ``apply`` -> :func:`apply_stage`."""

    def plan(self, ctx):
        from ..stages import outline
        from ..stages.base import Plan, View
        from . import views

        lp = plan_stage(ctx)
        artifacts = write_plan_artifacts(ctx, lp)
        return Plan(actions=lp.actions() or outline(ctx.stage.id, ctx.params),
                    findings=[refusal_finding(r) for r in lp.refusals],
                    views=[View(caption, obj, "object", "plan") for caption, obj in views.plan_views(lp)],
                    artifacts=artifacts, data={"lifecycle": lp}, summary=lp.summary())

    def planned(self, ctx, plan):
        from ..stages.base import Outcome

        lp = plan.data["lifecycle"]
        args = __import__("cni_runbook.lifecycle.views", fromlist=["result_args"]).result_args(lp, plan=True)
        return Outcome(args["status"], args["summary"], args.get("checks", []), args.get("data", {}))

    def apply(self, ctx, plan):
        from ..stages.base import Outcome, View
        from . import views

        lp = plan.data["lifecycle"]
        if lp.plan is None:
            return self.planned(ctx, plan)
        result = apply_stage(ctx, lp, progress=print)
        args = views.result_args(lp, result, plan=False)
        return Outcome(args["status"], args["summary"], args.get("checks", []), args.get("data", {}),
                       [View(caption, obj, "object", "apply") for caption, obj in views.apply_views(result)])
