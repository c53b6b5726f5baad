"""Family name -> builder and task. A new family is one module in models/ plus one line here.

Builders are referenced as "module:function" strings so that importing the registry does not
import every family (some pull in heavy optional dependencies).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

Task = Literal["detect", "segment", "keypoints", "events1d", "embed"]


class UnknownFamilyError(KeyError):
    """params.yaml or a request named a family the registry does not have."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def _resolve(reference: str) -> Any:
    module_name, function_name = reference.split(":")
    return getattr(importlib.import_module(module_name), function_name)


@dataclass(frozen=True)
class Family:
    name: str
    task: Task
    builder: str  # "module:function", the function takes (num_classes, **hparams)
    # Optional "module:function" (hparams, train_coco) -> hparams that fills in what is learnt
    # from the training data before the model is built (e.g. YOLO's k-means anchors).
    from_data: str | None = None
    # Trains and is scored on precomputed selective-search proposals (the `proposals` stage).
    uses_proposals: bool = False
    # False for families with nothing to learn (pixel_template): the train stage only builds,
    # calibrates and records them.
    trainable: bool = True
    # Optional "module:function" (hparams) -> [(step, epochs | None)]: a schedule of consecutive
    # trainings, each from the previous one's weights (Faster R-CNN's 4-step alternating
    # schedule); the builder gets `training_step=step`. Empty: one end-to-end training.
    steps: str | None = None
    # Fitted further after the training loop (R-CNN's SVMs and box regressors, train/post_hoc.py).
    post_hoc: bool = False

    def training_steps(self, hparams: dict[str, Any]) -> list[tuple[int, int | None]]:
        return list(_resolve(self.steps)(hparams)) if self.steps else []

    def build(self, num_classes: int, **hparams: Any) -> nn.Module:
        return _resolve(self.builder)(num_classes=num_classes, **hparams)

    def params_from_data(
        self, hparams: dict[str, Any], train_coco: dict[str, Any]
    ) -> dict[str, Any]:
        return (
            _resolve(self.from_data)(dict(hparams), train_coco) if self.from_data else dict(hparams)
        )


# `anchor_sizes: null` in the R-CNN family's params: sizes from the training boxes.
RCNN_ANCHORS_FROM_DATA = "sightline.models.faster_rcnn:anchor_sizes_from_train_boxes"

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("sliding_window", "detect", "sightline.models.sliding_window:build"),
        Family("rcnn", "detect", "sightline.models.rcnn:build", uses_proposals=True, post_hoc=True),
        Family("fast_rcnn", "detect", "sightline.models.fast_rcnn:build", uses_proposals=True),
        Family(
            "faster_rcnn",
            "detect",
            "sightline.models.faster_rcnn:build",
            RCNN_ANCHORS_FROM_DATA,
            steps="sightline.models.faster_rcnn:training_steps",
        ),
        Family("mask_rcnn", "segment", "sightline.models.mask_rcnn:build", RCNN_ANCHORS_FROM_DATA),
        Family(
            "keypoint_rcnn",
            "keypoints",
            "sightline.models.keypoint_rcnn:build",
            RCNN_ANCHORS_FROM_DATA,
        ),
        Family(
            "yolo",
            "detect",
            "sightline.models.yolo:build",
            "sightline.models.yolo:anchors_from_data",
        ),
        Family("ssd", "detect", "sightline.models.ssd:build"),
        Family("otdr_window", "events1d", "sightline.models.otdr_window:build"),
        Family("otdr_detector", "events1d", "sightline.models.otdr_detector:build"),
        Family(
            "pixel_template",
            "embed",
            "sightline.models.embedders:build_pixel_template",
            trainable=False,
        ),
        Family("classifier_embed", "embed", "sightline.models.embedders:build_classifier_embed"),
        Family("siamese_contrastive", "embed", "sightline.models.embedders:build_siamese"),
        Family("triplet", "embed", "sightline.models.embedders:build_triplet"),
    ]
}


def family(name: str) -> Family:
    """Look a family up by the name params.yaml uses; unknown names list the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise UnknownFamilyError(
            f"unknown model family {name!r}; known families: {known}"
        ) from None


def build_model(name: str, num_classes: int, **hparams: Any) -> nn.Module:
    return family(name).build(num_classes, **hparams)
