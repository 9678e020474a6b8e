"""Stage 02: install the CNI (Antrea first; the lab profile on the lab; any CNI as manifests or a chart).

:class:`CniInstallStage` on the stage base:

* ``plan`` - obtain the source (a remote one is fetched read-only: fetching touches no host and no
  cluster), render it with the profile and order the objects (:func:`cni_runbook.cni.preparation.prepare`);
  ``rendered.yaml``, ``rendered.diff`` and ``objects.csv`` go to the artifacts. Route
  ``kubespray_custom_cni``: the same :class:`~cni_runbook.provision.kubespray_job.KubesprayJob`
  as stage 01 renders the inventory and group_vars (``kube_network_plugin: custom_cni``) into
  the artifacts and validates them. A source that cannot be obtained, a setting the profile
  rejects or a Kubespray validation error is a blocking finding (the plan fails, named by key).
* ``apply`` - connect to the Target stage 01 handed over, check the objects against the cluster,
  apply by the route (server-side apply, or Kubespray's network step with the working inventory
  in the private folder), wait, health, Antrea post-checks. A failed install was rolled back.
"""

from __future__ import annotations

from typing import Any

from cni_runbook.checks import Check, Status
from cni_runbook.cni.errors import CniError, ManifestError, SettingsError, SourceError
from cni_runbook.cni.preparation import Prepared, prepare
from cni_runbook.cni.result import InstallError, InstallResult, Step, Timeouts
from cni_runbook.kube.client import KubeError

from . import registry
from .base import Finding, Outcome, Plan, Stage, View

CUSTOM_CNI_DIR = "kubespray"


def source_key(cni: Any) -> str:
    if cni.source is None:
        return "cni.version" if cni.profile == "antrea" else "cni.profile"
    return {"manifest-url": "cni.source.url", "file": "cni.source.path", "helm": "cni.source.helm"}[cni.source.kind]


def findings_of(exc: CniError, cni: Any) -> list[Finding]:
    """The params keys an error of the source or the rendering is about, one finding per problem."""
    if isinstance(exc, SettingsError):
        return [Finding("cni.config", p) for p in exc.problems]
    if isinstance(exc, ManifestError):
        return [Finding(source_key(cni), p) for p in exc.problems]
    return [Finding(source_key(cni) if isinstance(exc, SourceError) else "cni", str(exc))]


def compatibility_step(cni: Any, kube_version: str | None, *, kube_from: str) -> Step:
    """The CNI's compatibility with the Kubernetes version (:mod:`cni_runbook.lifecycle.compat`) as a
    step: ``failed`` when unsupported and not accepted (``cni.compatibility.accept_unsupported``)."""
    from cni_runbook.lifecycle.compat import check_kube

    check = check_kube(cni.profile, cni.version, kube_version, declared=cni.compatibility, kube_from=kube_from,
                       accept=cni.compatibility.accept_unsupported)
    status = check.as_check()["status"]
    return Step("CNI supports the Kubernetes version", status, f"{check.status}: {check.detail} [{check.source}]")


class CniInstallStage(Stage):
    """Stage 02 (see module docstring)."""

    def __init__(self, ctx: Any, timeouts: Timeouts = Timeouts(), antctl_timeout: float = 900) -> None:
        super().__init__(ctx)
        self.timeouts = timeouts
        self.antctl_timeout = antctl_timeout
        self.prepared: Prepared | None = None
        self.job: Any = None  # the KubesprayJob of the kubespray_custom_cni route
        self.installed: InstallResult | None = None

    # -- plan ----------------------------------------------------------------------------------
    def plan(self, ctx: Any) -> Plan:
        cni = ctx.params.cni
        actions = registry.outline(ctx.stage.id, ctx.params)
        plan = Plan(actions=actions, views=[View(f"{ctx.stage.id}: {len(actions)} planned actions", actions,
                                                  section="plan")])
        try:
            self.prepared = prepare(cni, ctx.artifacts, kube_proxy_remove=ctx.params.kubespray.kube_proxy_remove,
                                    pod_network=ctx.params.kubespray.kube_pods_subnet)
        except CniError as exc:
            plan.findings += findings_of(exc, cni)
            return plan
        p = self.prepared
        diff = p.diff()
        ctx.write_artifact("rendered.diff", diff or "rendered manifest == upstream, byte for byte\n")
        objects = p.objects_table()
        ctx.write_artifact("objects.csv", objects)
        plan.artifacts += ["rendered.yaml", "rendered.diff", "objects.csv"]
        plan.views += [View(f"{cni.profile}: source", p.source_table(), section="source")]
        plan.views += [View("note", note, "text", "source") for note in p.notes]
        plan.views += [View("rendered.diff", diff or "rendered manifest == upstream, byte for byte", "text", "render"),
                       View("objects changed by rendering", p.changed_objects(), section="render"),
                       View(f"{len(objects)} objects, {len(p.images())} images", objects, section="objects",
                            brief=f"{len(objects)} objects ("
                                  + ", ".join(f"{n} {k}" for k, n in objects["kind"].value_counts(sort=False).items())
                                  + f"), {len(p.images())} images: {', '.join(p.images())} (every object in the notebook)")]
        if cni.route == "kubespray_custom_cni":
            self._plan_kubespray(ctx, plan)
        plan.summary = f"{len(objects)} objects rendered; nothing was touched"
        plan.data = {"objects": len(objects), "images": p.images(), "notes": list(p.notes)}
        return plan

    def _plan_kubespray(self, ctx: Any, plan: Plan) -> None:
        """The custom_cni route: stage 01's Kubespray job with the custom_cni variables, rendered and validated.

        Manifest mode (a manifest source): ``custom_cni_manifests`` names the protected manifest
        written at apply. Helm mode (``cni.source.kind: helm``): the ``custom_cni_chart_*``
        variables (:func:`~cni_runbook.cni.custom_cni.chart_args_for`); Kubespray's helm-apps
        installs the chart with ``custom_cni_chart_values`` only, so a rendering that changes
        the chart's output (an image mirror, a network the values do not set) is a blocking
        finding: what Kubespray would install is not what the plan shows.
        """
        from cni_runbook.cni.custom_cni import chart_args_for, chart_vars, manifest_vars
        from cni_runbook.cni.kubespray_route import DEFAULT_FILENAME, MANIFEST_DIR
        from cni_runbook.kubespray import findings_frame, inventory_yaml
        from cni_runbook.kubespray.vars import GROUP_VARS_FILE, group_vars_yaml, plain
        from cni_runbook.provision import KubesprayJob, stage_hosts

        from .cluster import params_key

        cni = ctx.params.cni
        hosts = stage_hosts(ctx.params)
        if self.helm_mode:
            try:
                custom = chart_vars(**chart_args_for(cni.source.helm, namespace=cni.namespace))
            except SettingsError as exc:
                plan.findings += [Finding("cni.source.helm", p) for p in exc.problems]
                return
            custom.pop("kube_network_plugin")  # managed: the job sets it
            changed = self.prepared.changed_objects()
            if not changed.empty:
                what = "; ".join(f"{r.kind} {r.name}: {r.paths}" for r in changed.itertuples())
                plan.findings.append(Finding(
                    "cni.source.helm.values",
                    f"route kubespray_custom_cni installs the chart with Kubespray's helm-apps, which passes "
                    f"custom_cni_chart_values and nothing else: the rendering changed {len(changed)} object(s) "
                    f"the chart's values do not ({what}); set these as chart values (images, network) so the "
                    "chart renders them itself, or use route direct"))
        try:
            if not self.helm_mode:
                job = KubesprayJob(ctx.params, hosts.hosts, ctx.run_dir, ctx.redactor.text, network_plugin="custom_cni")
                # the protected manifest is written at apply, inside the private working inventory
                custom = manifest_vars([str(job.inventory_dir / MANIFEST_DIR / DEFAULT_FILENAME)])
                custom.pop("kube_network_plugin")
            self.job = job = KubesprayJob(ctx.params, hosts.hosts, ctx.run_dir, ctx.redactor.text,
                                          network_plugin="custom_cni", extra_vars=custom)
        except ValueError as exc:
            plan.findings.append(Finding("kubespray.extra_vars", str(exc)))
            return
        ctx.write_artifact(f"{CUSTOM_CNI_DIR}/inventory.yml", job.inventory)
        ctx.write_artifact(f"{CUSTOM_CNI_DIR}/{GROUP_VARS_FILE}", plain(job.group_vars))
        found = [f for f in job.validate() if f.rule != "custom_cni_manifest"]  # written at apply, in the private folder
        ctx.write_artifact(f"{CUSTOM_CNI_DIR}/findings.csv", findings_frame(found))
        plan.findings += [Finding(params_key(f), f"{f.message} (rendered as {f.file}: {f.key} = {f.value!r})",
                                  expected=f.expected, severity=f.severity) for f in found]
        plan.views += [View("Kubespray inventory (custom_cni route)", inventory_yaml(job.inventory), "file", "kubespray"),
                       View(str(GROUP_VARS_FILE), group_vars_yaml(job.group_vars), "file", "kubespray"),
                       View("validation before Kubespray starts", findings_frame(found), "findings", "kubespray")]

    @property
    def helm_mode(self) -> bool:
        """Route kubespray_custom_cni with a chart source: Kubespray's custom_cni Helm mode (helm-apps)."""
        source = self.ctx.params.cni.source
        return source is not None and source.kind == "helm"

    def planned(self, ctx: Any, plan: Plan) -> Outcome:
        return Outcome(Status.PLANNED, plan.summary, data=plan.data, views=[
            View("apply", "plan mode: nothing applied", "text", "apply"),
            View("waits and checks", [], section="health")])

    # -- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: Any, plan: Plan) -> Outcome:
        self.installed = result = self.install(ctx)
        ctx.write_artifact("applied.csv", result.applied_table())
        ctx.write_artifact("steps.csv", result.steps_table())
        views = []
        if result.error:
            views.append(View("error", result.error, "text", "apply"))
        views.append(View(result.summary(), result.applied_table(), section="apply"))
        if result.health is not None:
            ctx.write_artifact("health.csv", result.health)
            views.append(View("CNI pods", result.health, section="health"))
        if result.antctl_output:
            ctx.write_artifact("antctl-check-installation.txt", result.antctl_output)
            views.append(View("antctl check installation", result.antctl_output, "text", "health"))
        views.append(View("waits and checks", result.steps_table(), section="health"))
        return self.outcome(result, views)

    def install(self, ctx: Any) -> InstallResult:
        """Connect, check against the cluster, apply by route, wait, post-checks. Never raises for a
        failed install: the result has ``error`` set (and what was rolled back)."""
        from cni_runbook.cni.antrea_health import antrea_post_checks
        from cni_runbook.cni.engine import install, objects_for_cluster
        from cni_runbook.cni.rollback import write_target
        from cni_runbook.kube import Kube
        from cni_runbook.provision import targets

        cni = ctx.params.cni
        target = targets.resolve(ctx.params, ctx.get)
        kube = Kube.from_kubeconfig(target.kubeconfig, target.context)
        result = InstallResult(dry_run=cni.server_dry_run)
        compatible = None
        try:
            compatible = compatibility_step(cni, kube.version(), kube_from="the live API server")
            result.steps.append(compatible)
            if compatible.status == "failed":
                result.error = f"refused: {compatible.detail}"
                return result
            objects = objects_for_cluster(self.prepared.rendered, kube, namespace=cni.namespace)
            write_target(ctx.artifacts, target.kubeconfig, target.context)
            if cni.route == "kubespray_custom_cni" and not cni.server_dry_run:
                result = self._kubespray_route(ctx, kube, objects)
            else:
                result = install(kube, objects, record_dir=ctx.artifacts, dry_run=cni.server_dry_run,
                                 namespace=cni.namespace, timeouts=self.timeouts, progress=print)
            if cni.profile == "antrea" and not cni.server_dry_run:
                checks, result.antctl_output = antrea_post_checks(kube, objects, namespace=cni.namespace,
                                                                  antctl_timeout=self.antctl_timeout)
                result.post_checks += checks
        except (InstallError, CniError, KubeError) as exc:
            result = getattr(exc, "result", None) or result
            result.error = str(exc)
        finally:
            kube.close()
        if compatible is not None and compatible not in result.steps:  # the route's result replaced ours
            result.steps.insert(0, compatible)
        return result

    def _kubespray_route(self, ctx: Any, kube: Any, objects: list) -> InstallResult:
        """Kubespray's network step applies the protected manifest (manifest mode) or installs the
        chart (Helm mode: the objects include the Secret of the release revision helm would record);
        the working inventory is private."""
        from cni_runbook.cni.custom_cni import helm_release_secret, protect_jinja
        from cni_runbook.cni.engine import objects_for_cluster
        from cni_runbook.cni.kubespray_route import DEFAULT_FILENAME, MANIFEST_DIR, install_via_kubespray, next_helm_revision

        job = self.job
        if self.helm_mode:
            helm, namespace = ctx.params.cni.source.helm, ctx.params.cni.namespace
            revision = next_helm_revision(kube, helm.release_name, namespace)
            objects = [*objects, *objects_for_cluster(helm_release_secret(helm.release_name, namespace, revision), kube,
                                                      namespace=namespace)]
            files = job.write_inventory()
        else:
            manifest = protect_jinja(self.prepared.rendered.rendered.text)
            files = job.write_inventory({f"{MANIFEST_DIR}/{DEFAULT_FILENAME}": manifest})
        _, result = install_via_kubespray(kube, objects, job=job, inventory=files.inventory,
                                          record_dir=ctx.artifacts, timeouts=self.timeouts, progress=print)
        return result

    # -- outcome -------------------------------------------------------------------------------
    @staticmethod
    def outcome(result: InstallResult, views: list[View] | None = None) -> Outcome:
        """The applied outcome of an install result (no cluster needed to compute it)."""
        checks = [Check(s.name, s.status, s.detail, round(s.time_s, 2)) for s in [*result.steps, *result.post_checks]]
        summary = result.summary()
        failed = [s for s in [*result.steps, *result.post_checks] if s.status == "failed"]
        if result.error:
            summary += f"; {result.error.splitlines()[0]}"
        elif failed:  # a post-check that failed without an error: name it and what it saw
            summary += "; failed: " + "; ".join(f"{s.name} ({(s.detail or '').splitlines()[0][:200]})"
                                                 if s.detail else s.name for s in failed)
        from cni_runbook.cni.waits import unhealthy_pods

        pods = [line.strip() for line in unhealthy_pods(result.health, limit=100).splitlines()[2:]]
        if pods and not result.ok:  # the CNI pods at fault, by name and node
            summary += f"; CNI pods not ready: {', '.join(pods[:3])}" + (f" (+{len(pods) - 3} more)" if len(pods) > 3 else "")
        return Outcome(Status.PASSED if result.ok else Status.FAILED, summary, checks,
                       {"counts": result.counts, "changes": result.changes, "dry_run": result.dry_run,
                        "rolled_back": len(result.rolled_back), **({"error": result.error} if result.error else {})},
                       views or [])
