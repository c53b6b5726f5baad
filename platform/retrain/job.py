"""`sightline retrain`: the one job a scheduler runs.

pull -> validate -> repro -> register -> reload -> push -> commit, then a summary (an MLflow
run in the `sightline-retrain` experiment, tag kind=retrain, and reports/retrain/<time>.json).
DVC decides what runs: with unchanged data and params every stage is up to date and nothing
trains. The register stages decide the champion (reports/registry/<group>/<family>.json); the
job only reads their reports. A failing step stops the job, names the step and still writes the
summary; nothing stored (DVC cache, remote, registry) is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from sightline.config import Settings

EXPERIMENT = "sightline-retrain"
RUN_KIND_TAG, RETRAIN = "kind", "retrain"
SERVE_URL_ENV = "SIGHTLINE_SERVE_URL"
VALIDATE_MODULE = "sightline.pipelines.validate"
STEPS = ("pull", "validate", "repro", "register", "reload", "push", "commit", "summary")


class StepFailed(Exception):
    """A step could not finish; the message says why (the job stops there)."""


class StepSkipped(Exception):
    """A step with nothing to do; the message says why."""


@dataclass
class RetrainOptions:
    targets: list[str] = field(default_factory=list)
    serve_url: str | None = None
    push: bool = True
    commit: bool = True
    verbose: bool = False
    # Extra tags for the summary run, e.g. the Ray Jobs submission id (sightline.retrain.submit).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class StepResult:
    name: str
    status: str  # ok | skipped | failed
    seconds: float
    detail: str


@dataclass
class RetrainReport:
    started_at: str
    project: str
    targets: list[str]
    status: str = "running"  # ok | failed
    failed_step: str | None = None
    error: str | None = None
    data_hash: str = "unknown"
    steps: list[StepResult] = field(default_factory=list)
    stale_before: list[str] = field(default_factory=list)  # `dvc status` before repro
    stages_run: list[str] = field(default_factory=list)  # dvc.lock entries repro changed
    registered: list[dict[str, Any]] = field(default_factory=list)  # new register reports
    champions_moved: list[dict[str, Any]] = field(default_factory=list)
    reloaded: bool = False
    commit: str | None = None
    mlflow_run_id: str | None = None
    report_path: str | None = None

    @property
    def seconds_total(self) -> float:
        return sum(step.seconds for step in self.steps)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "seconds_total": self.seconds_total}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RetrainReport:
        fields = json.loads(text)
        fields.pop("seconds_total", None)
        fields["steps"] = [StepResult(**step) for step in fields.get("steps", [])]
        return cls(**fields)


class RetrainJob:
    def __init__(
        self, settings: Settings, options: RetrainOptions, log: Callable[[str], None] = print
    ) -> None:
        self.settings = settings
        self.options = options
        self.log = log
        self.root = settings.project_root.resolve()
        started = datetime.now(UTC)
        self.report = RetrainReport(
            started_at=started.isoformat(timespec="seconds"),
            project=str(self.root),
            targets=list(options.targets),
        )
        self.report_file = self.root / "reports" / "retrain" / f"{started:%Y%m%dT%H%M%S_%f}Z.json"
        self._lock_before: dict[str, Any] = {}
        self._registry_before: dict[str, dict[str, Any]] = {}
        self._remote: bool | None = None
        # dvc.yaml's commands say `python`: the one this job runs on, even with no venv active.
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    # --- the job ----------------------------------------------------------------------------

    def run(self) -> RetrainReport:
        self.log(f"retrain {self.root}: targets {' '.join(self.options.targets) or 'all'}")
        steps: list[tuple[str, Callable[[], str]]] = [
            ("pull", self.pull),
            ("validate", self.validate),
            ("repro", self.repro),
            ("register", self.read_registry),
            ("reload", self.reload),
            ("push", self.push),
            ("commit", self.commit),
        ]
        for name, body in steps:
            if not self._step(name, body):
                break
        else:
            self.report.status = "ok"
        self._step("summary", self.summarize)
        if self.report_file.is_file():
            self._write_report()  # with the summary step's own outcome
        return self.report

    def _step(self, name: str, body: Callable[[], str]) -> bool:
        start = time.monotonic()
        try:
            detail, status = body(), "ok"
        except StepSkipped as skipped:
            detail, status = str(skipped), "skipped"
        except StepFailed as failed:
            detail, status = str(failed), "failed"
        except Exception as exc:  # an unexpected error still ends in a summary naming the step
            detail, status = f"{type(exc).__name__}: {exc}", "failed"
        self.report.steps.append(
            StepResult(name, status, round(time.monotonic() - start, 3), detail)
        )
        self.log(f"retrain {name}: {status}{f' ({detail})' if detail else ''}")
        if status == "failed":
            self.report.status = "failed"
            self.report.failed_step = self.report.failed_step or name
            self.report.error = self.report.error or f"step {name} failed: {detail}"
        return status != "failed"

    # --- steps ------------------------------------------------------------------------------

    def pull(self) -> str:
        self._lock_before = self._lock()  # before anything can change it
        self._registry_before = self._registry_reports()
        if not self._in_git_repo():
            # A submitted job's working_dir is a copy without .git: DVC must not look for it
            # (config.local: this workspace only).
            self._dvc("config", "--local", "core.no_scm", "true")
        if not self._has_remote():
            self._set_data_hash()
            raise StepSkipped("no DVC remote configured (dvc remote add -d NAME URL)")
        # Outputs never pushed (a first run) are missing from the remote: repro builds them.
        self._dvc("pull", "--allow-missing")
        self._set_data_hash()
        return f"data {self.report.data_hash}"

    def validate(self) -> str:
        self.report.stale_before = self._stale_stages()
        if not self.report.stale_before:
            raise StepSkipped("every stage is up to date")
        stages = self._validate_stages()
        if not stages:
            raise StepSkipped("no validate stage among the targets")
        # --single-item: the validate stages alone; they run only if their data changed.
        self._dvc("repro", "--single-item", *stages, capture=False)
        return ", ".join(stages)

    def repro(self) -> str:
        if not self.report.stale_before:
            raise StepSkipped("data and params unchanged: DVC says every stage is up to date")
        command = [sys.executable, "-m", "sightline.cli", "repro", *self.options.targets]
        if self.options.verbose:
            command.append("--verbose")
        # `sightline repro`: one Ray for every stage (joins RAY_ADDRESS when set).
        code = subprocess.run(command, cwd=self.root, env=self.env, check=False).returncode
        if code != 0:
            raise StepFailed(f"`sightline repro` exited {code} (its output is above)")
        after = self._lock()
        self.report.stages_run = sorted(
            name for name, entry in after.items() if self._lock_before.get(name) != entry
        )
        return f"{len(self.report.stages_run)} stage(s) ran: {', '.join(self.report.stages_run)}"

    def read_registry(self) -> str:
        after = self._registry_reports()
        for path, report in sorted(after.items()):
            if self._registry_before.get(path) == report:
                continue
            entry = {
                "family": Path(path).stem,
                "registered_model": report.get("registered_model"),
                "version": report.get("version"),
                "promoted": bool(report.get("promoted")),
                "metric": report.get("metric"),
                "value": report.get("value"),
            }
            self.report.registered.append(entry)
            if entry["promoted"]:
                self.report.champions_moved.append(entry)
        if not self.report.registered:
            raise StepSkipped("no new model version")
        return "; ".join(
            f"{e['registered_model']} v{e['version']} ({e['family']})"
            f"{' champion' if e['promoted'] else ''}"
            for e in self.report.registered
        )

    def reload(self) -> str:
        import httpx

        if not self.report.champions_moved:
            raise StepSkipped("no champion moved")
        url = self.options.serve_url or os.environ.get(SERVE_URL_ENV)
        if not url:
            raise StepSkipped(f"no serving URL (--serve-url or {SERVE_URL_ENV})")
        token = self.settings.api_token
        if not token:
            raise StepFailed(f"SIGHTLINE_API_TOKEN is not set: {url}/v1/admin/reload needs it")
        endpoint = f"{url.rstrip('/')}/v1/admin/reload"
        try:
            response = httpx.post(
                endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=600
            )
        except httpx.TransportError as exc:
            raise StepFailed(f"cannot reach {endpoint}: {exc}") from None
        if response.status_code != 200:
            raise StepFailed(f"{endpoint} answered {response.status_code}: {response.text[:300]}")
        self.report.reloaded = True
        models = response.json().get("models", [])
        served = [f"{m['name']} v{m['version']}" for m in models if m.get("champion")]
        return f"{url} serves the champions {', '.join(served) or '(none)'}"

    def push(self) -> str:
        if not self.options.push:
            raise StepSkipped("--no-push")
        if not self._has_remote():
            raise StepSkipped("no DVC remote configured")
        self._dvc("push")
        return "outputs in the DVC remote"

    def commit(self) -> str:
        if not self.options.commit:
            raise StepSkipped("--no-commit")
        if not self._in_git_repo():
            raise StepSkipped("not a git repository")
        if not (self.root / "dvc.lock").is_file():
            raise StepSkipped("no dvc.lock")
        paths = ["dvc.lock", *self._git_tracked(self._uncached_outputs())]
        self._git("add", "--", *paths)
        if self._git("diff", "--cached", "--quiet", "--", *paths, check=False).returncode == 0:
            raise StepSkipped("dvc.lock and the tracked metrics are unchanged")
        self._git("commit", "-q", "-m", self._commit_message(), "--", *paths)
        self.report.commit = self._git("rev-parse", "HEAD").stdout.strip()
        return f"{self.report.commit[:12]}: {', '.join(paths)}"

    def summarize(self) -> str:
        self.report.report_path = str(self.report_file)
        self._write_report()  # first, so a summary exists even if MLflow is down
        try:
            self.report.mlflow_run_id = self._log_to_mlflow()
        finally:
            self._write_report()
        return f"{self.report_file} (MLflow run {self.report.mlflow_run_id})"

    # --- helpers ----------------------------------------------------------------------------

    def _dvc(self, *args: str, capture: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=self.root,
            env=self.env,
            capture_output=capture,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout or "") + (done.stderr or "") if capture else ""
            tail = f": {output.strip()[-1500:]}" if output.strip() else " (its output is above)"
            raise StepFailed(f"`dvc {' '.join(args)}` exited {done.returncode}{tail}")
        return done.stdout or ""

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise StepFailed(f"`git {' '.join(args[:2])}` exited {done.returncode}: {done.stderr}")
        return done

    def _in_git_repo(self) -> bool:
        return self._git("rev-parse", "--is-inside-work-tree", check=False).returncode == 0

    def _has_remote(self) -> bool:
        if self._remote is None:
            with self._repo() as repo:
                self._remote = bool(repo.config.get("remote"))
        return self._remote

    @contextlib.contextmanager
    def _repo(self) -> Iterator[Any]:
        """DVC's own API, in this process (a `dvc` process costs seconds to start)."""
        from dvc.repo import Repo

        # DVC resolves a target against the working directory: the project's, not the caller's.
        with contextlib.chdir(self.root), Repo(str(self.root)) as repo:
            yield repo

    def _set_data_hash(self) -> None:
        from sightline.track.lineage import dvc_data_hash

        self.report.data_hash = dvc_data_hash(self.root, self.root / "data")

    def _stale_stages(self) -> list[str]:
        targets = self.options.targets
        with self._repo() as repo:
            return sorted(repo.status(targets=targets or None, with_deps=bool(targets)))

    def _pipeline_stages(self) -> list:
        from dvc.stage import PipelineStage

        with self._repo() as repo:
            if self.options.targets:
                stages = [
                    stage
                    for target in self.options.targets
                    for stage in repo.stage.collect(target, with_deps=True)
                ]
            else:
                stages = list(repo.index.stages)
            return [stage for stage in stages if isinstance(stage, PipelineStage)]

    def _validate_stages(self) -> list[str]:
        return sorted(
            {s.addressing for s in self._pipeline_stages() if VALIDATE_MODULE in (s.cmd or "")}
        )

    def _uncached_outputs(self) -> list[str]:
        """Outputs and metrics dvc.yaml keeps out of the DVC cache (cache: false): git's."""
        with self._repo() as repo:
            outs = [out for stage in repo.index.stages for out in stage.outs]
            return sorted({out.def_path for out in outs if not out.use_cache})

    def _git_tracked(self, paths: list[str]) -> list[str]:
        if not paths:
            return []
        listed = self._git("ls-files", "--", *paths).stdout.split()
        return [path for path in paths if path in listed]

    def _lock(self) -> dict[str, Any]:
        lock = self.root / "dvc.lock"
        return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}

    def _registry_reports(self) -> dict[str, dict[str, Any]]:
        folder = self.root / "reports" / "registry"
        return {
            str(path.relative_to(folder)): json.loads(path.read_text())
            for path in sorted(folder.glob("*/*.json"))
        }

    def _commit_message(self) -> str:
        moved = [
            f"{e['registered_model']} v{e['version']} ({e['family']})"
            for e in self.report.champions_moved
        ]
        champions = f"champion {', '.join(moved)}" if moved else "champions unchanged"
        return f"retrain: data {self.report.data_hash}; {champions}"

    def _write_report(self) -> None:
        self.report_file.parent.mkdir(parents=True, exist_ok=True)
        self.report_file.write_text(self.report.to_json() + "\n")

    def _log_to_mlflow(self) -> str:
        import mlflow

        from sightline.track.runs import experiment_id, local_artifact_root, use_tracking

        report = self.report
        use_tracking(self.settings.tracking_uri)
        artifact_root = local_artifact_root(
            self.settings.tracking_uri, self.settings.path("mlartifacts")
        )
        tags = {
            RUN_KIND_TAG: RETRAIN,
            "status": report.status,
            "failed_step": report.failed_step or "",
            "data_hash": report.data_hash,
            "stages_run": ",".join(report.stages_run)[:4900],
            "champion_moved": str(bool(report.champions_moved)).lower(),
            "versions": ",".join(
                f"{e['registered_model']}:v{e['version']}" for e in report.registered
            ),
            "champions": ",".join(
                f"{e['registered_model']}:v{e['version']}" for e in report.champions_moved
            ),
            **self.options.tags,
        }
        with mlflow.start_run(
            experiment_id=experiment_id(EXPERIMENT, artifact_root),
            run_name=f"retrain {report.started_at}",
            tags=tags,
        ) as run:
            mlflow.log_params(
                {"data_hash": report.data_hash, "targets": ",".join(report.targets) or "all"}
            )
            mlflow.log_metrics(
                {
                    **{f"seconds_{s.name}": s.seconds for s in report.steps},
                    "stages_stale": len(report.stale_before),
                    "stages_run": len(report.stages_run),
                    "models_registered": len(report.registered),
                    "champions_moved": len(report.champions_moved),
                }
            )
            report.mlflow_run_id = run.info.run_id
            self._write_report()
            mlflow.log_artifact(str(self.report_file), "retrain")
            if (self.root / "dvc.lock").is_file():
                mlflow.log_artifact(str(self.root / "dvc.lock"), "retrain")
            # The outputs git keeps (metrics, registry reports): a submitted job's working dir
            # is a copy, so its submitter commits them from here (sightline.retrain.submit).
            for path in self._uncached_outputs() if report.stages_run else []:
                if (self.root / path).is_file():
                    folder = str(Path("retrain/workspace", path).parent)
                    mlflow.log_artifact(str(self.root / path), folder)
            return run.info.run_id
