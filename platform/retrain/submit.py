"""`sightline retrain --submit`: the same job through Ray's Jobs API, on the cluster.

The project travels as the job's working_dir (git-ignored paths, .git, the DVC cache and the
local stores stay here), so the job pulls its data from the DVC remote and pushes what it
builds there. It cannot commit to this clone; it logs dvc.lock, its summary and the small
git-kept outputs (metrics, registry reports) to its MLflow summary run, and `finish_locally`
brings them here and commits them, so `git pull && dvc pull` gets the result without training.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sightline.config import Settings
from sightline.retrain.job import (
    EXPERIMENT,
    SERVE_URL_ENV,
    RetrainJob,
    RetrainOptions,
    RetrainReport,
)

JOB_ADDRESS_ENV = "RAY_JOB_ADDRESS"
WORKSPACE_ARTIFACTS = "retrain/workspace"
# Never uploaded: environments, caches and local stores (besides what .gitignore excludes);
# gitignore patterns, anchored at the project root (`data` alone would drop platform/data too).
EXCLUDES = [
    "/.git",
    "/.venv",
    "/.dvc/cache",
    "/.dvc/tmp",
    "/.dvc/config.local",
    "/artifacts",
    "/mlruns",
    "/mlartifacts",
    "/mlflow.db",
    "/data",
    "/logs",
    "/.cluster",
]
# What the job needs from the submitter's environment (when set here).
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", SERVE_URL_ENV, "SIGHTLINE_API_TOKEN", "SIGHTLINE_PROFILE")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(RuntimeError):
    """The job could not be submitted or followed (no Jobs API at the address, ...)."""


def job_address(address: str | None) -> str:
    """--address, else RAY_JOB_ADDRESS, else RAY_ADDRESS (the Jobs client finds the dashboard
    of a cluster address itself); never auto-detected."""
    chosen = address or os.environ.get(JOB_ADDRESS_ENV) or os.environ.get("RAY_ADDRESS")
    if not chosen:
        raise SubmitError(
            f"no cluster address: pass --address http://HEAD:8265 or set {JOB_ADDRESS_ENV}"
        )
    return chosen


def entrypoint(options: RetrainOptions, submission_id: str, python: str) -> str:
    args = [python, "-m", "sightline.cli", "retrain", "--no-commit"]
    args += [arg for target in options.targets for arg in ("--targets", target)]
    if options.serve_url:
        args += ["--serve-url", options.serve_url]
    if not options.push:
        args.append("--no-push")
    args += ["--tag", f"submission_id={submission_id}"]
    return shlex.join(args)


def submit(
    settings: Settings,
    options: RetrainOptions,
    address: str | None = None,
    python: str = "python",
    log: Callable[[str], None] = print,
) -> int:
    """Submit, stream the job's output, then bring its result here; the job's exit decides."""
    from ray.job_submission import JobSubmissionClient

    target = job_address(address)
    try:
        client = JobSubmissionClient(target)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all "cannot reach"
        raise SubmitError(f"cannot reach the Ray Jobs API at {target}: {exc}") from None
    submission_id = f"sightline-retrain-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    env_vars = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    client.submit_job(
        entrypoint=entrypoint(options, submission_id, python),
        submission_id=submission_id,
        runtime_env={
            "working_dir": str(settings.project_root.resolve()),
            "excludes": EXCLUDES,
            "env_vars": env_vars,
        },
        metadata={"kind": "retrain"},
    )
    log(f"submitted {submission_id} to {target}")
    asyncio.run(_stream(client, submission_id, log))
    status = str(client.get_job_status(submission_id).value)
    log(f"job {submission_id}: {status}")
    report = finish_locally(settings, options, submission_id, log)
    if report is not None:
        log(f"summary: {report}")
    return 0 if status == "SUCCEEDED" else 1


async def _stream(client, submission_id: str, log: Callable[[str], None]) -> None:
    async for chunk in client.tail_job_logs(submission_id):
        for line in chunk.splitlines():
            log(f"  | {line}")


def finish_locally(
    settings: Settings, options: RetrainOptions, submission_id: str, log: Callable[[str], None]
) -> Path | None:
    """The job's summary, dvc.lock and git-kept outputs into this clone, then the commit step
    here (unless --no-commit). Returns the local summary's path (None: the job left none)."""
    import mlflow

    from sightline.track.runs import use_tracking

    use_tracking(settings.tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"tags.submission_id = '{submission_id}'",
        output_format="list",
    )
    if not runs:
        log(f"the job left no summary run in {settings.tracking_uri} (experiment {EXPERIMENT})")
        return None
    run = runs[0]
    root = settings.project_root.resolve()
    summary: Path | None = None
    with tempfile.TemporaryDirectory() as folder:
        downloaded = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="retrain", dst_path=folder
            )
        )
        for source in sorted(p for p in downloaded.rglob("*") if p.is_file()):
            relative = source.relative_to(downloaded)
            if relative.parts[0] == "workspace":  # the job's git-kept outputs
                destination = root.joinpath(*relative.parts[1:])
            elif relative.name == "dvc.lock":
                destination = root / "dvc.lock"
            else:
                destination = summary = root / "reports" / "retrain" / relative.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
    if summary is None:
        log(f"MLflow run {run.info.run_id} of {submission_id} holds no summary file")
        return None
    report = RetrainReport.from_json(summary.read_text())
    if report.status == "ok":
        job = RetrainJob(settings, options, log)
        job.report = report  # the commit message names the job's data version and champions
        # The outputs dvc.lock now names, from the remote the job pushed them to.
        if options.push and job._step("local pull", job.pull) and options.commit:
            job._step("local commit", job.commit)
        summary.write_text(report.to_json() + "\n")
    return summary
