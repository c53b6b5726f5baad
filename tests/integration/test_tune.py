"""A Ray Tune search end to end: trials as MLflow child runs of one parent, a failing trial
recorded and the search going on, the best trial registered under the champion rule."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from sightline.config import load_settings
from sightline.data.detection import load_task_split
from sightline.data.synth.detection import generate
from sightline.models import build_model
from sightline.track.registry import CHAMPION, log_model, register
from sightline.track.runs import experiment_id, resume_run, start_training_run
from sightline.tune.search import run_search
from sightline.workloads import workload_for
from tests.integration.tiny import tiny_params, write_params

pytestmark = pytest.mark.integration


@pytest.fixture()
def tiny_search(tmp_path, ray_cluster: str, mlflow_store: str):
    params = tiny_params(epochs=1, num_workers=1)
    params["tune"] = {
        "families": ["faster_rcnn"],
        "num_samples": 1,
        "max_concurrent_trials": 1,
        "max_epochs": 1,
        "spaces": {
            # A grid: one good trial and one that cannot build (a negative layer size).
            "faster_rcnn": {"models.representation_size": {"grid": [32, -1]}}
        },
    }
    settings = load_settings(write_params(tmp_path, params))
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    return settings


def test_search_records_trials_and_keeps_a_better_champion(tiny_search, mlflow_store) -> None:
    settings = tiny_search
    client = MlflowClient(mlflow_store)
    # A champion already scored on the same validation data and classes, and hard to beat.
    split = load_task_split(settings.detection_data, "val", settings.project_root, "detect")
    run_id = start_training_run("faster_rcnn", experiment="sightline-detection", params={}, tags={})
    with resume_run(run_id):
        params = {"width": 8, "representation_size": 32}
        uri = log_model(
            build_model("faster_rcnn", split.num_classes + 1, **params),
            family="faster_rcnn",
            num_classes=split.num_classes + 1,
            model_params=params,
            metadata={"task": "detect"},
        )
    scope = f"val:{','.join(split.class_names)}"
    detection = workload_for("detection")
    held = register(uri, workload=detection, family="faster_rcnn", metrics={"map": 0.99},
                    tags={}, eval_scope=scope)  # fmt: skip

    torch.manual_seed(0)
    outcome = run_search(settings, "faster_rcnn")

    assert sorted(t.status for t in outcome.trials) == ["FAILED", "FINISHED"]
    failed = next(t for t in outcome.trials if t.status == "FAILED")
    assert failed.config == {"models.representation_size": "-1"} and failed.error
    assert outcome.best is not None and outcome.best.config == {"models.representation_size": "32"}
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.tags["best_run_id"] == outcome.best.run_id
    assert parent.data.metrics["trials_failed"] == 1
    children = client.search_runs(
        [experiment_id("sightline-detection")],
        f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'",
    )
    assert len(children) == 2
    best_run = client.get_run(outcome.best.run_id)
    assert "val_map" in best_run.data.metrics and "final_map" in best_run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(outcome.parent_run_id, "tune")}
    assert "tune/map_vs_params.png" in artifacts
    # Registered, but the champion stays: the tiny trial does not beat map 0.99.
    assert outcome.promotion is not None and not outcome.promotion["promoted"]
    champion = client.get_model_version_by_alias("sightline-detector", CHAMPION)
    assert str(champion.version) == held.version


def test_trials_stopped_early_free_their_workers_for_the_next(
    tmp_path, ray_cluster, another_ray_instance
) -> None:
    """Every trial's Ray Train worker takes the whole cluster's CPUs (one worker with a thread
    per CPU, at most 2; one process fewer to start than two workers): a trial driver
    that held a share of a CPU, or a trial stopped by ASHA that kept its workers' placement group,
    would leave the next trial unplaceable, and it would fail after one 60 s wait. It runs while
    another Ray instance is up on the host: Train v2's placement-group cleaner used to find
    "multiple active Ray instances" by auto-detection and never free the stopped trial's group
    (sightline.cluster pins every worker to its own cluster's address)."""
    assert another_ray_instance != ray_cluster
    import ray

    cpus = max(1, min(2, int(ray.cluster_resources().get("CPU", 1))))
    params = tiny_params(epochs=2, num_workers=1)
    params["tune"] = {
        "families": ["faster_rcnn"],
        "num_samples": 1,
        "max_concurrent_trials": 1,
        "workers_per_trial": 1,
        "threads_per_worker": cpus,
        "max_epochs": 2,
        "grace_period": 1,
        "worker_start_retries": 0,
        # The second trial barely learns: ASHA stops it after one epoch if it scores lower
        # than the first; the third must still get its workers.
        "spaces": {"faster_rcnn": {"train.lr": {"grid": [0.02, 1e-7, 0.02]}}},
    }
    settings = load_settings(write_params(tmp_path, params))
    generate(settings.path(settings.detection_data.root), settings.synth.detection)

    torch.manual_seed(0)
    outcome = run_search(settings, "faster_rcnn")

    assert len(outcome.trials) == 3
    assert all(t.status in {"FINISHED", "KILLED"} for t in outcome.trials), outcome.trials
    assert all(t.epochs >= 1 for t in outcome.trials)
    assert all(t.epochs == 2 for t in outcome.trials if t.status == "FINISHED")
