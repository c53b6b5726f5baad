"""Ray Train for real: 2 CPU workers (gloo DDP), a checkpoint per epoch, and recovery from a
crashed worker that resumes from the last checkpoint inside the same MLflow run."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from sightline.config import load_settings
from sightline.data.synth.detection import generate
from sightline.track.runs import start_training_run
from sightline.train.job import job_for
from sightline.train.launcher import fit
from sightline.workloads import workload_for
from tests.integration.tiny import tiny_params, write_params


@pytest.fixture
def tiny_project(tmp_path: Path, mlflow_store: str):
    settings = load_settings(
        write_params(tmp_path, tiny_params(epochs=3, inject_failure_at_epoch=1))
    )
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    return settings


def test_worker_crash_resumes_from_checkpoint_in_the_same_run(
    ray_cluster: str, tiny_project
) -> None:
    settings = tiny_project
    run_id = start_training_run(
        "faster_rcnn", experiment="sightline-detection", params={"family": "faster_rcnn"}, tags={}
    )
    detection = workload_for("detection")
    data = detection.training_data(settings, "faster_rcnn")
    job = job_for(settings, data, family="faster_rcnn", run_id=run_id)
    outcome = fit(job, detection, ray_address=ray_cluster)

    assert (Path(job.marker_dir) / "failure_injected").exists(), "the failure was not injected"
    assert outcome.metrics["epoch"] == 2
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["resumed_from_epoch"] == "0"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert steps == [0, 1, 2], "each epoch logged once, into the same run, across the restart"
    experiment = run.info.experiment_id
    assert len(client.search_runs([experiment])) == 1, "the restart must not start a new run"
    assert not outcome.model.training
