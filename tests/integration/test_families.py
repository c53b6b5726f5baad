"""Every 2-D family through the same spine: the one Ray Train loop, then the COCO evaluator
with the iouTypes of its task (bbox; + segm for masks; + keypoints for pose).

Families train in Ray Train's local mode (`train.num_workers: 0`: the same loop, the same
ray.train reports and checkpoints, in this process): what differs between families (and
schedules) is their adapter, losses and evaluation, not the worker actors, whose start costs
~20 s per fit on 2 cores (about 100 s under load). The worker path (actors, DDP, checkpoints
in Ray's storage) is exercised by test_train_resume, test_pipeline_dvc, test_identification
and test_tune."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sightline.artifacts import model_dir, proposals_for, proposals_path
from sightline.config import load_settings
from sightline.data.detection import DetectionSplit, load_task_split
from sightline.data.proposals import compute_split_proposals
from sightline.data.synth.detection import generate
from sightline.evaluate.detection import evaluate_detector
from sightline.models import FAMILIES
from sightline.track.runs import start_training_run
from sightline.train.job import job_for
from sightline.train.launcher import fit
from sightline.train.post_hoc import fit_post_hoc
from sightline.workloads import workload_for
from tests.detection_contract import two_image_batch
from tests.integration.tiny import TINY_FAMILIES, tiny_params, write_params

EXPECTED = {"detect": "map", "segment": "mask_map", "keypoints": "kp_map"}
TWO_D = sorted(name for name, fam in FAMILIES.items() if fam.task in EXPECTED)


def test_every_2d_family_has_tiny_test_params() -> None:
    assert set(TWO_D) <= set(TINY_FAMILIES)


@pytest.fixture(scope="module")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("families")
    settings = load_settings(write_params(root, tiny_params(epochs=1, num_workers=0)))
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    for name in ("train", "val"):  # what the `proposals` stage computes for rcnn / fast_rcnn
        split = DetectionSplit.load(settings.detection_data, name, settings.project_root)
        compute_split_proposals(split, proposals_path(settings, name), max_side=64)
    return settings


@pytest.mark.parametrize("family", TWO_D)
def test_family_trains_in_the_loop_and_is_evaluated(
    family: str, ray_cluster: str, tiny_settings, mlflow_store: str
) -> None:
    task = FAMILIES[family].task
    split = load_task_split(tiny_settings.detection_data, "train", tiny_settings.project_root, task)
    run_id = start_training_run(
        family, experiment="sightline-detection", params={"family": family}, tags={}
    )
    detection = workload_for("detection")
    job = job_for(
        tiny_settings, detection.training_data(tiny_settings, family), family=family, run_id=run_id
    )
    outcome = fit(job, detection, ray_address=ray_cluster)
    assert outcome.metrics["loss"] > 0
    assert Path(outcome.checkpoint_path).is_dir()  # kept in Ray's storage although local
    from mlflow import MlflowClient

    logged = MlflowClient(mlflow_store).get_metric_history(run_id, "loss")
    assert [m.value for m in logged][-1] == pytest.approx(outcome.metrics["loss"])
    if FAMILIES[family].post_hoc:  # R-CNN stage 2: SVMs + regressors from cached features
        report = fit_post_hoc(tiny_settings, outcome.model, family, task)
        cache = model_dir(tiny_settings, family) / report.region_features
        assert cache.is_file() and report.cached_regions > len(split)
        assert outcome.model.is_fitted

    val = load_task_split(tiny_settings.detection_data, "val", tiny_settings.project_root, task)
    proposals = proposals_for(tiny_settings, family, "val")
    evaluation = evaluate_detector(
        outcome.model, val, task=task, with_figures=False, proposals=proposals
    )
    metrics = evaluation.metrics
    assert -1.0 <= metrics[EXPECTED[task]] <= 1.0
    assert "map" in metrics and metrics["inference_ms_per_image"] > 0
    if task == "keypoints":
        assert val.class_names == ["person"], "pose is learnt on the keypoint class only"


def test_faster_rcnn_alternating_schedule_trains_four_steps_into_one_run(
    ray_cluster: str, tiny_settings, mlflow_store: str
) -> None:
    from mlflow import MlflowClient

    params = {
        **tiny_settings.model_params("faster_rcnn"),
        "schedule": "alternating",
        "alternating_epochs": [1, 1, 1, 1],
    }
    detection = workload_for("detection")
    data = detection.training_data(tiny_settings, "faster_rcnn")
    run_id = start_training_run(
        "faster_rcnn", experiment="sightline-detection", params={"family": "faster_rcnn"}, tags={}
    )
    job = job_for(
        tiny_settings, replace(data, model_params=params), family="faster_rcnn", run_id=run_id
    )
    outcome = fit(job, detection, ray_address=ray_cluster)
    history = MlflowClient(mlflow_store).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # one epoch per step, in order
    rpn_only = MlflowClient(mlflow_store).get_metric_history(run_id, "loss_objectness")
    assert sorted(m.step for m in rpn_only) == [0, 2]  # steps 1 and 3 train the RPN
    # The trained model is the whole detector again (no step losses filtered).
    assert set(outcome.model.train()(*two_image_batch())) >= {"loss_objectness", "loss_classifier"}
