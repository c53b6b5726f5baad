"""The detection group (detect, segment, keypoints): any layout read as COCO, COCO metrics.

What a model learns to output is read from the training data, never kept in step by hand in
params.yaml: the classes (COCO categories, in id order; label 0 is background) and, for the
pose task, the number of keypoints (the categories' `keypoints` lists).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from sightline.artifacts import ModelExtras, ModelRecord, proposals_for
from sightline.config import Settings, SettingsError
from sightline.data.detection import DetectionSplit, load_task_split
from sightline.data.sources import DetectionData
from sightline.evaluate.coco import SUMMARY_NAMES
from sightline.evaluate.detection import evaluate_detector
from sightline.models.anchors import image_size_from_data
from sightline.models.registry import family as lookup_family
from sightline.train.job import TrainingData, TrainJob, expect
from sightline.train.tasks import TargetsBatch, TaskAdapter, targets_losses
from sightline.validate.report import ValidationReport
from sightline.workloads import Evaluation, Workload


def detection_dataset(job: TrainJob) -> Dataset:
    from sightline.data.detection import task_dataset

    data = expect(job.data, DetectionData, "the job's data section")
    split = load_task_split(data, "train", job.project_root, job.task)
    dataset: Dataset = task_dataset(split, job.task)
    if job.proposals_path is not None:
        from sightline.data.proposals import DatasetWithProposals, load_proposals

        proposals = load_proposals(job.proposals_path)
        dataset = DatasetWithProposals(dataset, proposals, job.proposals_path)
    if job.train.augment is None:
        return dataset
    from sightline.data.augment import AugmentedDataset, DetectionAugmentation, for_training

    keypoint_names = split.keypoint_names if job.task == "keypoints" else []
    augment = job.train.augment
    augmentation = DetectionAugmentation(augment, keypoint_names)
    return AugmentedDataset(dataset, for_training(augmentation, augment, job.train.epochs))


def detection_collate(batch: list[Any]) -> TargetsBatch:
    from sightline.data.detection import collate

    return collate(batch)


TRAIN_ADAPTER = TaskAdapter(detection_dataset, detection_collate, targets_losses)


def params_from_data(settings: Settings, family: str, split: DetectionSplit) -> dict[str, Any]:
    """`models.<family>` with what the training data decides filled in: `image_size: null`
    (the images' median longer side), then the registry's `from_data` (YOLO's k-means anchors,
    the R-CNN family's `anchor_sizes: null`), and the pose head's keypoint count."""
    fam = lookup_family(family)
    params = settings.model_params(family)
    if "image_size" in params and params["image_size"] is None:
        params["image_size"] = image_size_from_data(split.coco.dataset)
    params = fam.params_from_data(params, split.coco.dataset)
    if fam.task == "keypoints":
        if "num_keypoints" in params and params["num_keypoints"] != split.num_keypoints:
            raise SettingsError(
                f"models.{family}.num_keypoints is {params['num_keypoints']} but the training "
                f"data's categories name {split.num_keypoints} keypoints ({split.origin}); "
                f"remove it from params.yaml: it is read from the data"
            )
        params["num_keypoints"] = split.num_keypoints
    return params


class DetectionWorkload(Workload):
    name = "detection"
    tasks = ("detect", "segment", "keypoints")
    data_section = "detection_data"
    synth_kind = "detection"
    experiment = "sightline-detection"
    registered_model = "sightline-detector"
    primary_metric = "map"
    headline_metrics = ("map", "map_50")
    summary_metrics = ("map", "map_50", "map_small", "mar_100", "untrained_map_50")
    train_adapters = MappingProxyType({task: TRAIN_ADAPTER for task in tasks})
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
        task = lookup_family(family).task
        split = load_task_split(settings.detection_data, "train", settings.project_root, task)
        return TrainingData(
            num_classes=split.num_classes + 1,
            class_names=split.class_names,
            category_ids=split.category_ids,
            data_root=self.data_root(settings),
            model_params=params_from_data(settings, family, split),
            data=settings.detection_data,
            train=self.train_block(settings, family),
            record_schema={"image": "string", "boxes": "string", "labels": "string"},
            split_sizes={"train_images": len(split.coco.imgs)},
        )

    def after_training(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> ModelExtras:
        if not lookup_family(record.family).post_hoc:
            return ModelExtras()
        from sightline.train.post_hoc import fit_post_hoc

        return ModelExtras(post_hoc=fit_post_hoc(settings, model, record.family, record.task))

    def evaluate(
        self,
        settings: Settings,
        model: nn.Module,
        record: ModelRecord,
        *,
        with_figures: bool,
        first: int | None = None,
    ) -> Evaluation:
        split_name = settings.evaluate.split
        split = load_task_split(
            settings.detection_data, split_name, settings.project_root, record.task
        )
        if first is not None:
            split.image_ids = split.image_ids[:first]  # COCOeval scores these images only
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

    def validate(self, settings: Settings) -> ValidationReport:
        from sightline.validate.detection import validate_detection_dataset

        return validate_detection_dataset(settings.detection_data, settings.project_root)


WORKLOAD = DetectionWorkload()
