"""The detection deployment: registered detectors (registered.py) run on decoded images."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray import serve
from torch import nn

from sightline.evaluate.coco import masks_to_rle
from sightline.serve.registered import RegisteredModels
from sightline.serve.schemas import Catalog, Detection


def detect_objects(
    model: nn.Module,
    pixels: np.ndarray,
    class_names: list[str],
    score_threshold: float,
    scale: float = 1.0,
    original_size: tuple[int, int] | None = None,
) -> list[Detection]:
    """Run one HxWx3 uint8 image through a torchvision-contract detector.

    Boxes are multiplied by `scale` and clamped to `original_size` (width, height): the upload
    may have been shrunk before inference (images.inference_pixels).
    """
    height, width = pixels.shape[:2]
    width, height = original_size or (width, height)
    # A copy: arrays arriving through Ray's object store are read-only.
    image = torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1).div_(255.0)
    with torch.inference_mode():
        output = model([image])[0]
    keep = output["scores"] >= score_threshold
    boxes = output["boxes"][keep] * scale
    # The model maps boxes back to the input size; clamp away float overshoot at the border.
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    count = len(boxes)
    keypoints = _keypoints(output, keep, scale) if "keypoints" in output else [None] * count
    masks = _masks_rle(output, keep, (height, width)) if "masks" in output else [None] * count
    return [
        Detection(
            box=[round(float(v), 2) for v in box],
            label=label_name(int(label), class_names),
            label_id=int(label),
            score=round(float(score), 4),
            keypoints=points,
            mask=mask,
        )
        for box, label, score, points, mask in zip(
            boxes.tolist(),
            output["labels"][keep].tolist(),
            output["scores"][keep].tolist(),
            keypoints,
            masks,
            strict=True,
        )
    ]


def _keypoints(output: dict[str, torch.Tensor], keep: torch.Tensor, scale: float) -> list:
    points = output["keypoints"][keep].clone()
    points[..., :2] *= scale
    return [[[round(float(v), 2) for v in point] for point in person] for person in points.tolist()]


def _masks_rle(
    output: dict[str, torch.Tensor], keep: torch.Tensor, size: tuple[int, int]
) -> list[dict[str, Any]]:
    """Masks (probabilities at the inference size) -> binary COCO RLE at the upload's size."""
    probabilities = output["masks"][keep]
    if len(probabilities) and tuple(probabilities.shape[-2:]) != size:
        probabilities = F.interpolate(probabilities, size=size, mode="bilinear")
    rles = masks_to_rle(probabilities)
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]


def label_name(label_id: int, class_names: list[str]) -> str:
    if 1 <= label_id <= len(class_names):
        return class_names[label_id - 1]
    return f"class_{label_id}"


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_constructor_retry_count=2)
class Detector:
    """Holds the loaded detectors; the ingress resolves `?model=` against `catalog()`."""

    def __init__(self, tracking_uri: str) -> None:
        self._registered = RegisteredModels(tracking_uri, "detection")

    def catalog(self) -> Catalog:
        return self._registered.catalog()

    def reload(self) -> Catalog:
        return self._registered.load()

    def detect(
        self,
        pixels: np.ndarray,
        version: str,
        score_threshold: float,
        scale: float = 1.0,
        original_size: tuple[int, int] | None = None,
    ) -> list[Detection]:
        loaded = self._registered.get(version)
        return detect_objects(
            loaded.model, pixels, loaded.class_names, score_threshold, scale, original_size
        )
