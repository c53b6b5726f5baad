"""The detection group (detect, segment, keypoints): COCO data, COCO metrics."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from torch import nn

from sightline.artifacts import ModelRecord, proposals_for
from sightline.config import Settings
from sightline.data.detection import load_task_split
from sightline.evaluate.coco import SUMMARY_NAMES
from sightline.evaluate.detection import evaluate_detector
from sightline.models.registry import family as lookup_family
from sightline.workloads import Evaluation, TrainingData


class DetectionWorkload:
    group = "detection"
    headline_metrics = ("map", "map_50")
    # params.yaml keys each stage kind reads ("{family}": the stage's family); dvc.yaml lists
    # exactly these (tests/unit/test_dvc_params.py).
    stage_params = MappingProxyType(
        {
            "validate": ("detection_data",),
            "train": (
                "seed",
                "detection_data",
                "train",
                "detection.train",
                "detection.family_train",
                "models.{family}",
            ),
            "evaluate": ("seed", "detection_data", "evaluate"),
            "register": ("evaluate.split",),
        }
    )

    def training_data(self, settings: Settings, family: str) -> TrainingData:
        fam = lookup_family(family)
        split = load_task_split(settings.detection_data, "train", settings.project_root, fam.task)
        return TrainingData(
            num_classes=split.num_classes + 1,
            class_names=split.class_names,
            category_ids=split.category_ids,
            data_root=settings.path(settings.detection_data.root),
            model_params=fam.params_from_data(settings.model_params(family), split.coco.dataset),
            record_schema={"image": "string", "boxes": "string", "labels": "string"},
            split_sizes={"train_images": len(split.coco.imgs)},
        )

    def after_training(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> dict[str, Any]:
        if not lookup_family(record.family).post_hoc:
            return {}
        from sightline.train.post_hoc import fit_post_hoc

        return {"post_hoc": fit_post_hoc(settings, model, record.family, record.task)}

    def evaluate(
        self, settings: Settings, model: nn.Module, record: ModelRecord, *, with_figures: bool
    ) -> Evaluation:
        split_name = settings.evaluate.split
        split = load_task_split(
            settings.detection_data, split_name, settings.project_root, record.task
        )
        result = evaluate_detector(
            model,
            split,
            task=record.task,
            split_name=split_name,
            proposals=proposals_for(settings, record.family, split_name),
            grid_images=settings.evaluate.grid_images,
            grid_score_threshold=settings.evaluate.grid_score_threshold,
            with_figures=with_figures,
        )
        return Evaluation(metrics=result.metrics, figures=result.figures)

    def registry_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return {k: metrics[k] for k in SUMMARY_NAMES if k in metrics}

    def eval_scope(self, settings: Settings, record: ModelRecord) -> str:
        return f"{settings.evaluate.split}:{','.join(record.class_names)}"


WORKLOAD = DetectionWorkload()
