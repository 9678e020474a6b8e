"""What a stage notebook works with: the run-scoped state file and the StageContext.

A stage notebook calls :func:`open_stage` once with its parameters and gets a
:class:`StageContext`: the validated params, plan mode, its own artifacts folder, the run state
(values handed to later stages, e.g. the kubeconfig path) and :meth:`StageContext.result` to
record the outcome. See docs/stage-contract.md.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import audit, stages
from .params import LAB_FILE, LoadedParams, Params, load_params
from .redact import Redactor

STATE_FILE = "state.json"
RESULT_FILE = "result.json"
STATUSES = ("passed", "failed", "planned", "skipped")


class StageFailed(Exception):
    """Raised by StageContext.result(status="failed") so the notebook, and the run, stop there."""


class RunState:
    """A JSON key/value file in the run folder through which stages hand values to later ones."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / STATE_FILE

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._load().get(key)
        return default if entry is None else entry["value"]

    def set(self, key: str, value: Any, stage: str) -> None:
        """Record ``value`` (JSON-serialisable) under ``key``, noting the stage that set it."""
        data = self._load()
        data[key] = {"value": value, "stage": stage, "at": audit.now()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)

    def as_dict(self) -> dict[str, Any]:
        return {k: v["value"] for k, v in self._load().items()}


def kubeconfigs(run_dir: Path, params: Params) -> list[str]:
    """Kubeconfig files whose credentials must be scrubbed: the params' and the run state's."""
    found = [params.provisioner.kubeconfig] if params.provisioner.kubeconfig else []
    if value := RunState(run_dir).get("kubeconfig"):
        found.append(value)
    return found


def artifact_dirs(run_dir: Path, stage_id: str) -> list[Path]:
    """Existing artifact folders of a stage, oldest attempt first: <id>, <id>.attempt2, ..."""
    base = Path(run_dir) / "artifacts"
    found = []
    n = 1
    while (path := base / (stage_id if n == 1 else f"{stage_id}.attempt{n}")).exists():
        found.append(path)
        n += 1
    return found


@dataclass
class StageContext:
    """Everything a stage notebook needs; created by :func:`open_stage`."""

    stage: stages.Stage
    loaded: LoadedParams
    plan: bool
    run_dir: Path
    artifacts: Path
    redactor: Redactor
    state: RunState = field(init=False)

    def __post_init__(self) -> None:
        self.state = RunState(self.run_dir)

    @property
    def params(self) -> Params:
        return self.loaded.params

    def stage_params(self) -> dict[str, Any]:
        """The params sections this stage reads, as plain data."""
        dumped = self.params.model_dump(mode="json")
        return {name: dumped[name] for name in self.stage.sections}

    def put(self, key: str, value: Any) -> None:
        """Hand a value to later stages through the run state."""
        self.state.set(key, value, self.stage.id)
        if key == "kubeconfig":
            self.redactor.add_kubeconfig(value)

    def get(self, key: str, default: Any = None) -> Any:
        """A value an earlier stage handed over."""
        return self.state.get(key, default)

    def write_artifact(self, name: str, content: Any) -> Path:
        """Write an artifact once (scrubbed of secrets); the format follows the suffix.

        ``.yaml``/``.yml`` and ``.json`` take data, ``.csv`` a pandas DataFrame, anything else text.
        """
        path = self.artifacts / name
        if path.exists():
            raise FileExistsError(f"{path} already exists: artifacts are written once")
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(self.redactor.data(content), sort_keys=False, allow_unicode=True)
        elif suffix == ".json":
            text = json.dumps(self.redactor.data(content), indent=2, default=str) + "\n"
        elif suffix == ".csv":
            buf = io.StringIO()
            content.to_csv(buf, index=False)
            text = self.redactor.text(buf.getvalue())
        else:
            text = self.redactor.text(str(content))
        path.write_text(text)
        return path

    def record_plan(self, actions: list[dict[str, Any]]) -> Path:
        """Write what the stage would do (one mapping per action) to plan.yaml."""
        return self.write_artifact("plan.yaml", {"stage": self.stage.id, "plan": self.plan, "actions": actions})

    def result(self, status: str, summary: str, checks: list[dict[str, Any]] | None = None,
               data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record the stage outcome (result.json + junit.xml). ``status="failed"`` raises StageFailed.

        ``checks`` are ``{name, status, message?, time_s?}`` with the statuses of :data:`STATUSES`.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        checks = checks or []
        for check in checks:
            if check.get("status") not in STATUSES or not check.get("name"):
                raise ValueError(f"each check needs a name and a status in {STATUSES}: {check!r}")
        record = {"stage": self.stage.id, "status": status, "summary": summary, "plan": self.plan,
                  "at": audit.now(), "checks": checks, "data": data or {}}
        self.write_artifact(RESULT_FILE, record)
        self.write_artifact("junit.xml", audit.junit_xml(self.stage.id, checks or [
            {"name": self.stage.id, "status": status, "message": summary}]))
        if status == "failed":
            raise StageFailed(f"{self.stage.id}: {summary}")
        return record


def _default_run_dir(site: str) -> Path:
    env = os.environ.get("CNI_RUNBOOK_RUN_DIR")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return audit.create_run_dir(site)


def open_stage(stage: str, params_files: list[str] | tuple[str, ...] = (), set_values: list[str] | tuple[str, ...] = (),
               run_dir: str | os.PathLike[str] | None = None, plan: bool | None = True,
               inline: dict[str, Any] | None = None) -> StageContext:
    """Validate the params and open the stage's context. Called once, right after the parameters cell.

    * ``params_files`` - site files layered over params/defaults.yaml; when neither files nor
      ``inline`` sections are given, params/lab.yaml (the embedded lab) is used;
    * ``set_values`` - ``key.path=value`` overrides applied last;
    * ``inline`` - top-level sections given as notebook parameters (``papermill -f site.yaml``);
    * ``run_dir`` - the run folder (else $CNI_RUNBOOK_RUN_DIR, else a new folder in outputs/);
    * ``plan`` - True: render and show, touch nothing; None: take params ``run.plan``.
    """
    spec = stages.get(stage)
    inline = {k: v for k, v in (inline or {}).items() if v is not None}
    files = list(params_files) or ([] if inline else [str(LAB_FILE)])
    loaded = load_params(files, set_values, inline)
    params = loaded.params
    run_path = Path(run_dir) if run_dir else _default_run_dir(params.site)
    run_path.mkdir(parents=True, exist_ok=True)
    n = len(artifact_dirs(run_path, spec.id)) + 1
    artifacts = run_path / "artifacts" / (spec.id if n == 1 else f"{spec.id}.attempt{n}")
    artifacts.mkdir(parents=True)
    ctx = StageContext(stage=spec, loaded=loaded, plan=params.run.plan if plan is None else bool(plan),
                       run_dir=run_path, artifacts=artifacts,
                       redactor=Redactor.for_params(params, kubeconfigs(run_path, params)))
    ctx.write_artifact("params.yaml", ctx.stage_params())
    return ctx
