"""The registry of runbook stages: ids, notebooks, titles, the params sections each reads, the class.

Pure data and name resolution; nothing here imports the rest of the package, so the params
schema can validate stage names against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS_DIR = Path(__file__).resolve().parents[3] / "notebooks"


@dataclass(frozen=True)
class StageSpec:
    """One stage of the runbook, executed from ``notebooks/<id>.ipynb``."""

    id: str  # e.g. "02_cni_install"
    title: str
    sections: tuple[str, ...]  # top-level params sections the stage reads
    impl: str = ""  # "module:Class" of its :class:`cni_runbook.stages.base.Stage` subclass

    @property
    def number(self) -> str:
        return self.id.split("_", 1)[0]

    @property
    def name(self) -> str:
        return self.id.split("_", 1)[1]

    @property
    def notebook(self) -> str:
        return f"{self.id}.ipynb"

    @property
    def output_name(self) -> str:
        """File name of the executed notebook in a run folder: ``NN-name.ipynb``."""
        return f"{self.number}-{self.name}.ipynb"


STAGES: tuple[StageSpec, ...] = (
    StageSpec("00_preflight", "Preflight: can every node be reached and does it qualify?",
              ("provisioner", "cluster", "kubespray"), "cni_runbook.stages.preflight:PreflightStage"),
    StageSpec("01_cluster_no_cni", "Cluster without a CNI (Kubespray, network plugin none)",
              ("provisioner", "cluster", "kubespray"), "cni_runbook.stages.cluster:ClusterStage"),
    StageSpec("02_cni_install", "CNI install", ("provisioner", "kubespray", "cni"),
              "cni_runbook.stages.cni_install:CniInstallStage"),
    StageSpec("03_validation", "Network validation", ("provisioner", "validation"),
              "cni_runbook.stages.validation:ValidationStage"),
    StageSpec("04_policy_qos", "NetworkPolicy and QoS", ("provisioner", "policy", "qos"),
              "cni_runbook.stages.policy_qos:PolicyQosStage"),
    StageSpec("05_cni_lifecycle", "CNI lifecycle: upgrade in place or replacement",
              ("provisioner", "cluster", "kubespray", "cni", "lifecycle", "validation", "policy"),
              "cni_runbook.lifecycle.stage:LifecycleStage"),
)
STAGE_IDS: tuple[str, ...] = tuple(s.id for s in STAGES)


def get(ref: str) -> StageSpec:
    """Find a stage by id (``02_cni_install``), number (``02``, ``2``) or name (``cni_install``)."""
    for stage in STAGES:
        if ref in (stage.id, stage.number, stage.name) or (ref.isdigit() and int(ref) == int(stage.number)):
            return stage
    raise KeyError(ref)


def select(refs: list[str] | tuple[str, ...]) -> list[StageSpec]:
    """Resolve stage references (``all`` = every stage) to stages in runbook order."""
    if not refs or "all" in refs:
        return list(STAGES)
    wanted = {get(r).id for r in refs}
    return [s for s in STAGES if s.id in wanted]


def is_stage_ref(ref: str) -> bool:
    """True if ref names a stage or is ``all``."""
    if ref == "all":
        return True
    try:
        get(ref)
    except KeyError:
        return False
    return True


# --- what each stage will do, derived from the params (the plan-mode outline) ----------------

def _action(step: str, target: str, detail: str) -> dict[str, str]:
    return {"step": step, "target": target, "detail": detail}


def _cluster_source(p) -> list[dict[str, str]]:
    kind = p.provisioner.kind
    if kind == "lab":
        return [_action("cluster", "local lab", "use the embedded lab cluster (`cni-runbook lab status`)")]
    if kind == "existing":
        return [_action("cluster", p.provisioner.kubeconfig or "", "use the existing cluster from this kubeconfig")]
    return []


def _preflight(p) -> list[dict[str, str]]:
    ssh = p.cluster.ssh
    out = _cluster_source(p)
    for node in p.cluster.nodes:
        out.append(_action("reach", node.name, f"ssh {ssh.user}@{node.ansible_host}:{ssh.port}, gather facts"))
        out.append(_action("qualify", node.name, "memory, kernel modules (br_netfilter, overlay), ip is local, "
                           f"roles {', '.join(node.roles)}"))
    return out


def _cluster(p) -> list[dict[str, str]]:
    ks = p.kubespray
    out = _cluster_source(p)
    if p.provisioner.kind == "kubespray":
        groups = sorted({r for n in p.cluster.nodes for r in n.roles})
        out += [
            _action("render", "inventory", f"{len(p.cluster.nodes)} nodes in {', '.join(groups)}"),
            _action("render", "group_vars", f"kube_network_plugin={ks.network_plugin}, "
                    f"services {ks.kube_service_addresses}, pods {ks.kube_pods_subnet}/{ks.kube_network_node_prefix}, "
                    f"kube_proxy_mode={ks.kube_proxy_mode}, kube_proxy_remove={ks.kube_proxy_remove}"),
            _action("run", f"{ks.dir}/cluster.yml", f"Kubespray {ks.version}"),
        ]
    out.append(_action("expect", "nodes", "NotReady until a CNI is installed; CoreDNS Pending"))
    return out


def _cni(p) -> list[dict[str, str]]:
    cni = p.cni
    src = cni.source
    if src is None:
        origin = f"the {cni.profile} profile's own manifests" + (f" ({cni.version})" if cni.version else "")
    elif src.kind == "manifest-url":
        origin = src.url.replace("{version}", cni.version or "")
    elif src.kind == "file":
        origin = src.path
    else:
        origin = (f"local helm chart {src.helm.path}" if src.helm.path else
                  f"helm chart {src.helm.chart} {src.helm.version or ''} from {src.helm.repository_url}")
    out = [_action("fetch", cni.profile, origin)]
    if cni.config:
        out.append(_action("render", "config", f"override {', '.join(sorted(cni.config))}"))
    if cni.image_registry:
        out.append(_action("render", "images", f"pull images from {cni.image_registry}"))
    if cni.route == "kubespray_custom_cni":
        what = ("the custom_cni_chart_* variables (Helm mode: helm-apps installs the chart)" if src is not None and
                src.kind == "helm" else "the rendered manifests")
        out.append(_action("run", "kubespray", f"cluster.yml with kube_network_plugin=custom_cni and {what}"))
    else:
        mode = "server-side dry-run" if cni.server_dry_run else "server-side apply"
        out.append(_action("apply", cni.namespace, mode))
    if not cni.server_dry_run:
        out.append(_action("wait", "nodes", "CNI pods Ready, every node Ready, CoreDNS Running"))
    from ..lifecycle.compat import check_kube

    compat = check_kube(cni.profile, cni.version, p.kubespray.kube_version, declared=cni.compatibility,
                        kube_from="kubespray.kube_version; the apply checks the live server",
                        accept=cni.compatibility.accept_unsupported)
    out.append(_action("check", "compatibility", f"{compat.status}: {compat.detail} [{compat.source}]"))
    return out


def _validation(p) -> list[dict[str, str]]:
    v = p.validation
    t = v.thresholds
    out = [
        _action("deploy", v.namespace, f"probe pods ({v.images.probe}) on every node"),
        _action("test", f"tests ~ /{v.tests}/" + (f", skip /{v.skip}/" if v.skip else ""),
                f"pod-to-pod, pod-to-service, DNS (<= {t.max_dns_ms} ms), loss <= {t.max_loss_pct}%"),
    ]
    if v.perf:
        out.append(_action("perf", v.images.perf, f">= {t.min_throughput_mbps} Mbit/s, rtt <= {t.max_rtt_ms} ms"))
    out.append(_action("cleanup", v.namespace, "delete the probe namespace"))
    return out


def _policy_qos(p) -> list[dict[str, str]]:
    out = [_action("scenario", "x, y, z" if p.policy.layout is None else "own layout", s) for s in p.policy.scenarios]
    out += [_action("apply", f, "apply and verify the expected allow/deny matrix") for f in p.policy.files]
    if p.qos.enabled:
        bw = p.qos.bandwidth
        out.append(_action("qos", "bandwidth", f"ingress {bw.ingress}, egress {bw.egress}, "
                           f"tolerance {p.qos.tolerance_pct}%"))
    return out


def _lifecycle(p) -> list[dict[str, str]]:
    lc = p.lifecycle
    target = lc.target
    name = (f"{target.profile} {target.version or ''}".strip() if target is not None else "(lifecycle.target not set)")
    if lc.mode == "upgrade":
        out = [_action("read", p.cni.namespace, f"installed {p.cni.profile}: version from the cluster's objects"),
               _action("check", "compatibility", f"{name} against the Kubernetes version; skew installed -> target"),
               _action("diff", "objects", "installed vs new rendering: added, changed, removed; CRDs first")]
    else:
        out = [_action("check", "policies", f"NetworkPolicies in force; does {name} enforce them?"),
               _action("delete", p.cni.profile, "the installed CNI's API objects"),
               _action("clean", "nodes", "conflists, binaries, interfaces, iptables chains, ipsets, routes (SSH)"),
               _action("restart", "pods", f"every pod that is not hostNetwork, {lc.pod_restart}")]
    out += [_action("baseline", "cluster", "connectivity and the truth tables of the policies in force"),
            _action("apply", name, f"ordered, rollout waits; probe {lc.disruption.sample_pairs} pod pairs every "
                    f"{lc.disruption.interval_s} s"),
            _action("after", "cluster", "same checks; before/after side by side, disruption per pair and node")]
    if lc.rollback_on_failure:
        out.append(_action("rollback", "on failure", "restore the recorded previous objects, validate again"))
    return out


_OUTLINES = {
    "00_preflight": _preflight,
    "01_cluster_no_cni": _cluster,
    "02_cni_install": _cni,
    "03_validation": _validation,
    "04_policy_qos": _policy_qos,
    "05_cni_lifecycle": _lifecycle,
}


def outline(stage_id: str, params) -> list[dict[str, str]]:
    """What the stage will do with these params, one row per action (its plan-mode summary)."""
    return _OUTLINES[get(stage_id).id](params)
