"""The detection deployment: registered detectors (registered.py) run on decoded images.

Requests are batched (`@serve.batch`, sizes from params `serve.batch`): the images of one
batch that ask for the same model version go through it in one forward pass. A version of a
family in `serve.batch.unbatched_families` runs each request on its own, at once. Decoding
and resizing happen in the ingress (gateway.py), off this replica; the selective search of
rcnn and fast_rcnn in the replica's proposal workers (proposals.py), as each request arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray import serve
from torch import nn

from sightline.config import ServeBatch
from sightline.evaluate.coco import masks_to_rle
from sightline.models.registry import FAMILIES
from sightline.serve.capacity import (
    DEFAULT_BATCH,
    call_batched,
    configure_batching,
    each_or_error,
    indices_by,
)
from sightline.serve.proposals import ProposalPool, image_tensor
from sightline.serve.registered import RegisteredModels
from sightline.serve.schemas import Catalog, Detection


def detect_objects(
    model: nn.Module,
    pixels: np.ndarray,
    class_names: list[str],
    score_threshold: float,
    scale: float = 1.0,
    original_size: tuple[int, int] | None = None,
    proposals: torch.Tensor | None = None,
) -> list[Detection]:
    """Run one HxWx3 uint8 image through a torchvision-contract detector (see detections);
    `proposals`: its selective-search boxes, for the families that take them."""
    (output,) = run_detector(model, [pixels], None if proposals is None else [proposals])
    return detections(output, pixels.shape[:2], class_names, score_threshold, scale, original_size)


def run_detector(
    model: nn.Module,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """HxWx3 uint8 images (any sizes) through a torchvision-contract detector in one call;
    `proposals` (one set per image) for the families that take them, else they search."""
    tensors = [image_tensor(p) for p in images]
    with torch.inference_mode():
        return model(tensors) if proposals is None else model(tensors, proposals=proposals)


def detections(
    output: dict[str, torch.Tensor],
    inference_size: tuple[int, int],
    class_names: list[str],
    score_threshold: float,
    scale: float = 1.0,
    original_size: tuple[int, int] | None = None,
) -> list[Detection]:
    """One image's model output -> detections scoring at least `score_threshold`.

    Boxes are multiplied by `scale` and clamped to `original_size` (width, height): the upload
    may have been shrunk to `inference_size` (height, width) first (images.inference_pixels).
    """
    height, width = inference_size
    width, height = original_size or (width, height)
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

    def __init__(
        self, tracking_uri: str, batch: ServeBatch | None = None, proposal_workers: int = 0
    ) -> None:
        self._unbatched = set((batch or DEFAULT_BATCH).unbatched_families)
        if unknown := sorted(self._unbatched - FAMILIES.keys()):
            raise ValueError(f"serve.batch.unbatched_families: no such model family {unknown}")
        self._proposals = ProposalPool(proposal_workers)
        self._registered = RegisteredModels(tracking_uri, "detection")
        self._proposals.serve_models(self._registered.models())
        configure_batching(self._detect_batch, batch)

    def __del__(self) -> None:  # Serve calls it when it stops the replica
        if hasattr(self, "_proposals"):
            self._proposals.close()

    def catalog(self) -> Catalog:
        return self._registered.catalog()

    def reload(self) -> Catalog:
        catalog = self._registered.load()
        self._proposals.serve_models(self._registered.models())
        return catalog

    async def detect(
        self,
        pixels: np.ndarray,
        version: str,
        score_threshold: float,
        scale: float = 1.0,
        original_size: tuple[int, int] | None = None,
    ) -> list[Detection]:
        loaded = self._registered.get(version)
        proposals = await self._proposals.proposals(loaded.model, pixels)
        if loaded.family in self._unbatched:
            return detect_objects(
                loaded.model,
                pixels,
                loaded.class_names,
                score_threshold,
                scale,
                original_size,
                proposals,
            )
        return await call_batched(
            self._detect_batch, pixels, proposals, version, score_threshold, scale, original_size
        )

    @serve.batch(
        max_batch_size=DEFAULT_BATCH.max_batch_size,
        batch_wait_timeout_s=DEFAULT_BATCH.batch_wait_timeout_s,
    )
    async def _detect_batch(
        self,
        pixels: list[np.ndarray],
        proposals: list[torch.Tensor | None],
        versions: list[str],
        thresholds: list[float],
        scales: list[float],
        sizes: list[tuple[int, int] | None],
    ) -> list[list[Detection] | Exception]:
        """One forward pass per model version in the batch (failures: each_or_error)."""
        results: list[list[Detection] | Exception] = [[] for _ in pixels]
        for version, indices in indices_by(versions).items():
            loaded = self._registered.get(version)
            outputs = each_or_error(
                partial(_run_on, loaded.model), [(pixels[i], proposals[i]) for i in indices]
            )
            for index, output in zip(indices, outputs, strict=True):
                results[index] = (
                    output
                    if isinstance(output, Exception)
                    else detections(
                        output,
                        pixels[index].shape[:2],
                        loaded.class_names,
                        thresholds[index],
                        scales[index],
                        sizes[index],
                    )
                )
        return results


def _run_on(
    model: nn.Module, items: Sequence[tuple[np.ndarray, torch.Tensor | None]]
) -> list[dict[str, torch.Tensor]]:
    """run_detector on (pixels, proposals) pairs of one model version (all with proposals or
    none: the version's family decides)."""
    proposals = [boxes for _, boxes in items]
    given = None if any(boxes is None for boxes in proposals) else proposals
    return run_detector(model, [image for image, _ in items], given)
