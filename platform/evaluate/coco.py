"""COCO-standard evaluation with pycocotools: the 12 summary numbers under DESIGN.md's names."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
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
# Metric prefix per pycocotools iouType (bbox keeps the bare names).
PREFIX = {"bbox": "", "segm": "mask_", "keypoints": "kp_"}


def box_xyxy_to_xywh(boxes: torch.Tensor) -> list[list[float]]:
    xywh = boxes.clone()
    xywh[:, 2:] -= xywh[:, :2]
    return xywh.tolist()


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Iterable[tuple[int, torch.Tensor]],
    label_to_category_id: Callable[[int], int],
    batch_size: int = 4,
) -> list[dict[str, Any]]:
    """Run a detector over (image_id, CHW tensor) pairs; returns COCO result records (bbox)."""
    model.eval()
    results: list[dict[str, Any]] = []
    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        outputs = model([img for _, img in batch])
        for (image_id, _), out in zip(batch, outputs, strict=True):
            for box, label, score in zip(
                box_xyxy_to_xywh(out["boxes"]),
                out["labels"].tolist(),
                out["scores"].tolist(),
                strict=True,
            ):
                results.append(
                    {
                        "image_id": int(image_id),
                        "category_id": label_to_category_id(int(label)),
                        "bbox": [round(v, 2) for v in box],
                        "score": round(float(score), 5),
                    }
                )
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
    names = [PREFIX[iou_type] + n for n in SUMMARY_NAMES]
    if not results:
        return dict.fromkeys(names, 0.0), None
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its table; we return it
        coco_dt = coco_gt.loadRes(list(results))
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=float)
    return {n: round(float(v), 6) for n, v in zip(names, stats, strict=True)}, evaluator


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
