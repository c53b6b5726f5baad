"""Evaluate a detector on a split: COCO metrics, an untrained baseline, figures for MLflow."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from sightline.data.detection import DetectionDataset, DetectionSplit, task_dataset
from sightline.evaluate.coco import IOU_TYPES, evaluate, precision_recall_curves, predict
from sightline.evaluate.plots import detection_grid_figure, precision_recall_figure


@dataclass
class DetectionEvaluation:
    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)


def _image_stream(dataset: DetectionDataset):
    for index in range(len(dataset)):
        image, target = dataset[index]
        yield int(target["image_id"]), image


def evaluate_detector(
    model: nn.Module,
    split: DetectionSplit,
    *,
    task: str = "detect",
    split_name: str = "val",
    grid_images: int = 8,
    grid_score_threshold: float = 0.5,
    with_figures: bool = True,
    proposals: Mapping[int, np.ndarray] | None = None,
) -> DetectionEvaluation:
    dataset = task_dataset(split, task)
    started = time.perf_counter()
    results = predict(
        model, _image_stream(dataset), split.label_to_category_id, proposals=proposals
    )
    elapsed = time.perf_counter() - started
    metrics: dict[str, float] = {}
    evaluator = None
    for iou_type in IOU_TYPES[task]:
        scores, type_evaluator = evaluate(
            split.coco, results.get(iou_type, []), iou_type, image_ids=split.image_ids
        )
        metrics.update(scores)
        evaluator = type_evaluator if iou_type == "bbox" else evaluator
    metrics["inference_ms_per_image"] = round(1000 * elapsed / max(1, len(dataset)), 3)
    figures: dict[str, Figure] = {}
    if with_figures:
        if evaluator is not None:
            figures["precision_recall.png"] = precision_recall_figure(
                precision_recall_curves(evaluator), f"{split_name}: precision vs recall"
            )
        figures["val_predictions.png"] = _grid(
            model, dataset, split, grid_images, grid_score_threshold
        )
    return DetectionEvaluation(metrics=metrics, figures=figures)


@torch.no_grad()
def _grid(
    model: nn.Module, dataset: DetectionDataset, split: DetectionSplit, count: int, threshold: float
) -> Figure:
    items: list[tuple[torch.Tensor, dict[str, Any]]] = [
        dataset[i] for i in range(min(count, len(dataset)))
    ]
    predictions = model([image for image, _ in items])
    return detection_grid_figure(
        [image for image, _ in items],
        [target for _, target in items],
        predictions,
        split.class_names,
        threshold,
    )
