"""Every 2-D family through the same spine: the one Ray Train loop, then the COCO evaluator
with the iouTypes of its task (bbox; + segm for masks; + keypoints for pose)."""

from __future__ import annotations

import pytest

from sightline.artifacts import proposals_for, proposals_path
from sightline.config import load_settings
from sightline.data.detection import DetectionSplit, load_task_split
from sightline.data.proposals import compute_split_proposals
from sightline.data.synth.detection import generate
from sightline.evaluate.detection import evaluate_detector
from sightline.models import FAMILIES
from sightline.track.runs import start_training_run
from sightline.train.job import job_for
from sightline.train.launcher import fit
from tests.integration.tiny import TINY_FAMILIES, tiny_params, write_params

EXPECTED = {"detect": "map", "segment": "mask_map", "keypoints": "kp_map"}
TWO_D = sorted(name for name, fam in FAMILIES.items() if fam.task in EXPECTED)


def test_every_2d_family_has_tiny_test_params() -> None:
    assert set(TWO_D) <= set(TINY_FAMILIES)


@pytest.fixture(scope="module")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("families")
    settings = load_settings(write_params(root, tiny_params(epochs=1, num_workers=1)))
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    for name in ("train", "val"):  # what the `proposals` stage computes for rcnn / fast_rcnn
        split = DetectionSplit.load(settings.detection_data, name, settings.project_root)
        compute_split_proposals(split, proposals_path(settings, name), max_side=64)
    return settings


@pytest.mark.parametrize("family", TWO_D)
def test_family_trains_on_ray_and_is_evaluated(
    family: str, ray_cluster: str, tiny_settings, mlflow_store: str
) -> None:
    task = FAMILIES[family].task
    split = load_task_split(tiny_settings.detection_data, "train", tiny_settings.project_root, task)
    run_id = start_training_run(family, params={"family": family}, tags={})
    job = job_for(tiny_settings, family=family, num_classes=split.num_classes + 1, run_id=run_id)
    outcome = fit(job, ray_address=ray_cluster)
    assert outcome.metrics["loss"] > 0

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
