"""`sightline retrain` and `sightline schedule` on a scratch project with real DVC, git and MLflow.

The project holds the repo's dvc.yaml, the tiny params and real tiny data; every other
dependency and output of the detection chain is a committed placeholder, so DVC calls the
chain up to date without training (tests/integration/test_cluster_retrain.py trains for real).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo
from dvc.stage import PipelineStage
from mlflow import MlflowClient

from sightline.config import load_settings
from sightline.data.synth.detection import generate
from sightline.retrain.job import EXPERIMENT, RetrainOptions
from sightline.retrain.schedule import JOB_ID, ScheduleError, build_scheduler, cron_trigger
from sightline.retrain.submit import SubmitError, entrypoint, job_address
from tests.conftest import REPO_ROOT
from tests.integration.dvc_project import PROJECT_FILES
from tests.integration.test_dvc_status import commit_placeholders, dvc
from tests.integration.test_pipeline_dvc import DETECTION_CHAIN
from tests.integration.tiny import tiny_params, write_params

BIN = Path(sys.executable).parent
REGISTRY_REPORT = {
    "comparable": True,
    "metric": "map",
    "previous_value": None,
    "previous_version": None,
    "promoted": True,
    "registered_model": "sightline-detector",
    "value": 0.1,
    "version": "1",
}


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=False, env=GIT_ENV
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


GIT_ENV = {
    **os.environ,
    **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
       for what, value in (("NAME", "t"), ("EMAIL", "t@t"))},
}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("retrain")
    for name in PROJECT_FILES:
        shutil.copy(REPO_ROOT / name, root / name)
    settings = load_settings(write_params(root, tiny_params()))
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "add", "-q", "data")
    with contextlib.chdir(root), Repo(str(root)) as repo:
        chain = tuple(
            stage.name
            for stage in repo.stage.collect(DETECTION_CHAIN, with_deps=True)
            if isinstance(stage, PipelineStage)
        )
    report = root / "reports" / "registry" / "detection" / "faster_rcnn.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps(REGISTRY_REPORT))
    commit_placeholders(root, chain)
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "a trained project")
    env = {
        **GIT_ENV,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("SIGHTLINE_SERVE_URL", None)
    return root, env


def sightline(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "sightline"), *args, "--params", str(root / "params.yaml")]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)


def summary(output: str) -> dict:
    (line,) = [line for line in output.splitlines() if line.startswith("summary: ")]
    path = Path(line.removeprefix("summary: ").strip())
    assert path.parent.name == "retrain" and path.parent.parent.name == "reports"
    return json.loads(path.read_text())


def retrain_runs(env: dict[str, str]) -> list:
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])


@pytest.mark.integration
def test_a_scheduled_tick_with_unchanged_data_is_a_no_op_with_a_summary(project) -> None:
    root, env = project
    head = git(root, "rev-parse", "HEAD")
    lock = (root / "dvc.lock").read_text()

    done = sightline(
        root, env, "schedule", "--cron", "0 2 * * *", "--once-now", "--targets", DETECTION_CHAIN
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "retrain repro: skipped (data and params unchanged" in output
    report = summary(done.stdout)
    assert report["status"] == "ok" and report["failed_step"] is None
    assert report["stale_before"] == [] and report["stages_run"] == []
    assert report["registered"] == [] and report["champions_moved"] == []
    assert report["data_hash"] == (root / "data.dvc").read_text().split("md5: ")[1].split()[0]
    assert {s["name"]: s["status"] for s in report["steps"]} == {
        "pull": "skipped",  # no remote configured
        "validate": "skipped",
        "repro": "skipped",
        "register": "skipped",
        "reload": "skipped",
        "push": "skipped",
        "commit": "skipped",
        "summary": "ok",
    }
    assert "tick: retrain ok" in (root / "logs" / "schedule.log").read_text()
    (run,) = retrain_runs(env)
    assert run.data.tags["kind"] == "retrain" and run.data.tags["status"] == "ok"
    assert run.data.tags["champion_moved"] == "false"
    assert run.data.params["data_hash"] == report["data_hash"]
    assert run.data.metrics["stages_run"] == 0
    assert run.info.run_id == report["mlflow_run_id"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.search_registered_models() == [], "no model version on a no-op"
    assert json.loads(dvc(root, "status", "--json", "--with-deps", DETECTION_CHAIN) or "{}") == {}
    assert git(root, "rev-parse", "HEAD") == head and (root / "dvc.lock").read_text() == lock


@pytest.mark.integration
def test_broken_data_stops_the_job_at_validate_and_keeps_what_is_stored(project) -> None:
    root, env = project
    kept = {p: (root / p).read_text() for p in ("dvc.lock", "metrics/faster_rcnn.json")}
    annotations = root / "data" / "detection" / "annotations" / "train.json"
    coco = json.loads(annotations.read_text())
    coco["annotations"][0]["bbox"][2] = 0  # zero-width box
    annotations.write_text(json.dumps(coco))

    done = sightline(root, env, "retrain", "--targets", DETECTION_CHAIN)

    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    assert "retrain validate: failed" in output
    assert "error: step validate failed" in output
    assert str(coco["annotations"][0]["id"]) in output, "the validation names the record"
    report = summary(done.stdout)
    assert report["status"] == "failed" and report["failed_step"] == "validate"
    assert [s["name"] for s in report["steps"]] == ["pull", "validate", "summary"]
    assert "validate" in report["stale_before"]
    latest = retrain_runs(env)[0]
    assert latest.data.tags["status"] == "failed" and latest.data.tags["failed_step"] == "validate"
    assert {p: (root / p).read_text() for p in kept} == kept, "nothing stored is lost"


def test_a_bad_cron_expression_is_named() -> None:
    with pytest.raises(ScheduleError, match="'0 2 \\* \\*'"):
        cron_trigger("0 2 * *")


def test_ticks_never_overlap_and_missed_ticks_collapse() -> None:
    scheduler = build_scheduler(cron_trigger("*/5 * * * *"), lambda: 0)
    job = scheduler.get_job(JOB_ID)
    assert job.max_instances == 1 and job.coalesce is True


def test_the_submitted_job_runs_the_same_command_without_committing_there() -> None:
    options = RetrainOptions(targets=["bench_detectors"], serve_url="http://s:8000", push=False)
    command = entrypoint(options, "sightline-retrain-1", "/opt/py/bin/python")
    assert command == (
        "/opt/py/bin/python -m sightline.cli retrain --no-commit --targets bench_detectors "
        "--serve-url http://s:8000 --no-push --tag submission_id=sightline-retrain-1"
    )


def test_submit_needs_an_explicit_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_ADDRESS", raising=False)
    with pytest.raises(SubmitError, match="--address"):
        job_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert job_address(None) == "127.0.0.1:6379"
    monkeypatch.setenv("RAY_JOB_ADDRESS", "http://head:8265")
    assert job_address(None) == "http://head:8265"
    assert job_address("http://other:8265") == "http://other:8265"
