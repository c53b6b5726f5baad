"""The detection deployment: registered detectors loaded from MLflow, run on decoded images.

It serves the registry's champion plus, per model family, one version selected by `?model=`:
the champion itself for the champion's family, otherwise that family's latest registered
version (versions are grouped by their `family` tag, so new families need no code here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import mlflow
import numpy as np
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from ray import serve
from torch import nn

from sightline.evaluate.coco import masks_to_rle
from sightline.models.registry import FAMILIES
from sightline.serve.schemas import Catalog, Detection, ModelCard
from sightline.track.registry import REGISTERED_MODEL, LoadedModel, champion_version, load_version

logger = logging.getLogger(__name__)

GROUP = "detection"
# While nothing is loaded, look for a newly registered champion at most this often.
RETRY_LOAD_AFTER_S = 3.0


def family_versions(versions: Iterable[ModelVersion], champion: str | None) -> dict[str, str]:
    """Family -> the version `?model=<family>` serves (see the module docstring)."""
    latest: dict[str, int] = {}
    champion_family = None
    for version in versions:
        family = version.tags.get("family")
        if family is None:
            continue
        latest[family] = max(latest.get(family, 0), int(version.version))
        if str(version.version) == champion:
            champion_family = family
    chosen = {family: str(number) for family, number in latest.items()}
    if champion_family is not None:
        chosen[champion_family] = str(champion)
    return chosen


def model_card(loaded: LoadedModel, champion: bool) -> ModelCard:
    known = FAMILIES.get(loaded.family)
    task = loaded.metadata.get("task") or (known.task if known else "detect")
    return ModelCard(
        name=loaded.registered_model,
        version=loaded.version,
        family=loaded.family,
        task=str(task),
        class_names=loaded.class_names,
        champion=champion,
    )


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


def load_versions(numbers: Iterable[str]) -> dict[str, LoadedModel]:
    models: dict[str, LoadedModel] = {}
    for number in numbers:
        try:
            models[number] = load_version(GROUP, number)
        except Exception:
            # One broken version must not take the others (or the server) down.
            logger.exception("could not load %s v%s; skipping it", REGISTERED_MODEL[GROUP], number)
    return models


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_constructor_retry_count=2)
class Detector:
    """Holds the loaded detectors; the ingress resolves `?model=` against `catalog()`."""

    def __init__(self, tracking_uri: str) -> None:
        # Explicit, so the replica never depends on the environment it was started with.
        mlflow.set_tracking_uri(tracking_uri)
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._models: dict[str, LoadedModel] = {}
        self._catalog = Catalog(models=[], families={})
        self._last_attempt = 0.0
        self._load()

    def _load(self) -> None:
        self._last_attempt = time.monotonic()
        name = REGISTERED_MODEL[GROUP]
        champion = champion_version(self._client, name)
        champion_number = str(champion.version) if champion is not None else None
        wanted = family_versions(
            self._client.search_model_versions(f"name = '{name}'"), champion_number
        )
        numbers = set(wanted.values()) | ({champion_number} if champion_number else set())
        self._models = load_versions(sorted(numbers, key=int))
        self._catalog = Catalog(
            models=[model_card(m, n == champion_number) for n, m in self._models.items()],
            families={f: n for f, n in wanted.items() if n in self._models},
            champion_version=champion_number if champion_number in self._models else None,
        )
        logger.info("serving %s versions %s", name, list(self._models) or "none")

    def catalog(self) -> Catalog:
        if not self._models and time.monotonic() - self._last_attempt > RETRY_LOAD_AFTER_S:
            self._load()
        return self._catalog

    def detect(
        self,
        pixels: np.ndarray,
        version: str,
        score_threshold: float,
        scale: float = 1.0,
        original_size: tuple[int, int] | None = None,
    ) -> list[Detection]:
        loaded = self._models[version]
        return detect_objects(
            loaded.model, pixels, loaded.class_names, score_threshold, scale, original_size
        )
