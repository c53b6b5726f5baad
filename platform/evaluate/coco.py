"""COCO-standard evaluation with pycocotools: the 12 summary numbers under DESIGN.md's names."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

# COCOeval.stats order: AP@[.5:.95], AP50, AP75, AP S/M/L, AR maxDets 1/10/100, AR S/M/L.
SUMMARY_NAMES = [
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
]
# COCOeval.stats for keypoints: no "small" area range, and recall at IoU 0.5 / 0.75 instead.
KEYPOINT_SUMMARY_NAMES = [
    "map",
    "map_50",
    "map_75",
    "map_medium",
    "map_large",
    "mar",
    "mar_50",
    "mar_75",
    "mar_medium",
    "mar_large",
]
# Metric names per pycocotools iouType (bbox keeps the bare names).
METRIC_NAMES = {
    "bbox": SUMMARY_NAMES,
    "segm": [f"mask_{n}" for n in SUMMARY_NAMES],
    "keypoints": [f"kp_{n}" for n in KEYPOINT_SUMMARY_NAMES],
}


def box_xyxy_to_xywh(boxes: torch.Tensor) -> list[list[float]]:
    xywh = boxes.clone()
    xywh[:, 2:] -= xywh[:, :2]
    return xywh.tolist()


# What each task is scored on (pycocotools iouTypes).
IOU_TYPES: dict[str, tuple[str, ...]] = {
    "detect": ("bbox",),
    "segment": ("bbox", "segm"),
    "keypoints": ("bbox", "keypoints"),
}
MASK_THRESHOLD = 0.5
# pycocotools' OKS sigmas are COCO's 17 person keypoints; other skeletons get this one falloff
# (about the mean of COCO's), so OKS stays comparable in spirit.
DEFAULT_KEYPOINT_SIGMA = 0.07


def masks_to_rle(probabilities: torch.Tensor) -> list[dict[str, Any]]:
    """(N, 1, H, W) mask probabilities -> N binary COCO RLEs (threshold MASK_THRESHOLD)."""
    if not len(probabilities):
        return []
    binary = (probabilities[:, 0] > MASK_THRESHOLD).to(torch.uint8).numpy()
    return mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))


def coco_records(
    image_id: int, output: dict[str, torch.Tensor], label_to_category_id: Callable[[int], int]
) -> dict[str, list[dict[str, Any]]]:
    """One image's detections as COCO result records, per iouType the output supports."""
    categories = [label_to_category_id(int(label)) for label in output["labels"].tolist()]
    scores = [round(float(score), 5) for score in output["scores"].tolist()]
    base = [
        {"image_id": int(image_id), "category_id": cid, "score": score}
        for cid, score in zip(categories, scores, strict=True)
    ]
    records = {
        "bbox": [
            {**rec, "bbox": [round(v, 2) for v in box]}
            for rec, box in zip(base, box_xyxy_to_xywh(output["boxes"]), strict=True)
        ]
    }
    if "masks" in output:
        rles = masks_to_rle(output["masks"])
        records["segm"] = [
            {**rec, "segmentation": rle} for rec, rle in zip(base, rles, strict=True)
        ]
    if "keypoints" in output:
        records["keypoints"] = [
            {**rec, "keypoints": [round(float(v), 2) for v in points.flatten().tolist()]}
            for rec, points in zip(base, output["keypoints"], strict=True)
        ]
    return records


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Iterable[tuple[int, torch.Tensor]],
    label_to_category_id: Callable[[int], int],
    batch_size: int = 4,
    proposals: Mapping[int, np.ndarray] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run a detector over (image_id, CHW tensor) pairs; COCO result records per iouType.

    `proposals` (image id -> boxes) are handed to proposal-based families, so they are scored on
    the precomputed selective-search boxes rather than searching again.
    """
    model.eval()
    results: dict[str, list[dict[str, Any]]] = {}
    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        images = [img for _, img in batch]
        if proposals is None:
            outputs = model(images)
        else:
            boxes = [torch.from_numpy(proposals[image_id]) for image_id, _ in batch]
            outputs = model(images, proposals=boxes)
        for (image_id, _), out in zip(batch, outputs, strict=True):
            for iou_type, records in coco_records(image_id, out, label_to_category_id).items():
                results.setdefault(iou_type, []).extend(records)
        batch.clear()

    for item in images:
        batch.append(item)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return results


def evaluate(
    coco_gt: COCO,
    results: Sequence[dict[str, Any]],
    iou_type: str = "bbox",
    image_ids: Sequence[int] | None = None,
) -> tuple[dict[str, float], COCOeval | None]:
    """COCOeval summary as {name: value}; an empty result list scores 0 everywhere.

    pycocotools marks "no ground truth in this area range" with -1; those stay -1 so that a
    reader can tell "absent" from "zero".
    """
    names = METRIC_NAMES[iou_type]
    if not results:
        return dict.fromkeys(names, 0.0), None
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its table; we return it
        coco_dt = coco_gt.loadRes(list(results))
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if iou_type == "keypoints":
            _use_dataset_keypoint_sigmas(evaluator, coco_gt)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=float)
    return {n: round(float(v), 6) for n, v in zip(names, stats, strict=True)}, evaluator


def _use_dataset_keypoint_sigmas(evaluator: COCOeval, coco_gt: COCO) -> None:
    count = max((len(c.get("keypoints", [])) for c in coco_gt.cats.values()), default=0)
    if count and count != len(evaluator.params.kpt_oks_sigmas):
        evaluator.params.kpt_oks_sigmas = np.full(count, DEFAULT_KEYPOINT_SIGMA)


def precision_recall_curves(evaluator: COCOeval) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean precision over classes vs recall at IoU 0.5 and 0.75 (area all, 100 dets)."""
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    recall = np.asarray(evaluator.params.recThrs)
    curves = {}
    for iou in (0.5, 0.75):
        t = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - iou)))
        p = precision[t, :, :, 0, -1]
        p = np.where(p < 0, np.nan, p)
        curves[f"IoU={iou}"] = (
            recall,
            np.nanmean(p, axis=1) if np.isfinite(p).any() else recall * 0,
        )
    return curves
