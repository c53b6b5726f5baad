"""Faster R-CNN: a Region Proposal Network and Fast R-CNN heads sharing one backbone.

torchvision supplies the mechanism (AnchorGenerator, RPN with 3x3 conv + 1x1 cls/reg heads,
NMS on objectness, RoIAlign, box heads, the four losses); this module picks a backbone that
trains from scratch and exposes the paper's knobs (anchor sizes x ratios, top-N proposals).

Training: end to end (the default, the four losses summed), or the paper's 4-step alternating
schedule (`schedule="alternating"`), run by the platform as four consecutive trainings, each
starting from the previous step's weights and building the model with `training_step=k`:
  1. the RPN (+ the backbone) on the RPN's two losses;
  2. the Fast R-CNN heads (+ the backbone) on the detector's two losses, with the step-1 RPN's
     proposals (its head frozen). The paper trained this step from a second ImageNet-initialised
     network; with no pretrained weights here, it starts from the step-1 backbone;
  3. the backbone (the shared conv layers) frozen, the RPN head fine-tuned;
  4. the backbone and RPN frozen, the Fast R-CNN heads fine-tuned: one shared network.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from sightline.models.anchors import anchor_sizes_from_data, coco_box_sizes
from sightline.models.backbones import SmallConvNet
from sightline.models.local_weights import load_local_weights
from sightline.models.targets import check_rcnn_inputs

RPN_LOSSES = ("loss_objectness", "loss_rpn_box_reg")
DETECTOR_LOSSES = ("loss_classifier", "loss_box_reg")
# Step -> (the losses it trains on, the parts it trains); the rest is frozen.
ALTERNATING_STEPS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    1: (RPN_LOSSES, ("backbone", "rpn")),
    2: (DETECTOR_LOSSES, ("backbone", "roi_heads")),
    3: (RPN_LOSSES, ("rpn",)),
    4: (DETECTOR_LOSSES, ("roi_heads",)),
}
Schedule = Literal["end_to_end", "alternating"]


def training_steps(hparams: dict[str, Any]) -> list[tuple[int, int | None]]:
    """The consecutive trainings the schedule asks for: (step, epochs or None for `train`'s)."""
    if hparams.get("schedule", "end_to_end") == "end_to_end":
        return []
    epochs = hparams.get("alternating_epochs") or [None] * 4
    if len(epochs) != 4:
        raise ValueError(f"alternating_epochs must give 4 epoch counts, got {epochs}")
    return [(step, epochs[step - 1]) for step in ALTERNATING_STEPS]


def use_alternating_step(model: nn.Module, step: int) -> None:
    """Freeze what step `step` does not train and keep only its losses in train mode."""
    if step not in ALTERNATING_STEPS:
        raise ValueError(f"training_step must be one of {sorted(ALTERNATING_STEPS)}, got {step}")
    losses, trained = ALTERNATING_STEPS[step]
    for name, part in model.named_children():
        for parameter in part.parameters():
            parameter.requires_grad_(name in trained)

    def keep_step_losses(module: nn.Module, args: Any, output: Any) -> Any:
        if module.training and isinstance(output, dict):
            return {name: output[name] for name in losses}
        return output

    model.register_forward_hook(keep_step_losses)


def build(
    num_classes: int,
    *,
    image_size: int = 128,
    width: int = 32,
    stages: int = 3,
    anchor_sizes: Sequence[int] = (16, 32, 64),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 300,
    box_batch_size_per_image: int = 512,
    representation_size: int = 256,
    box_detections_per_img: int = 100,
    schedule: Schedule = "end_to_end",
    alternating_epochs: Sequence[int] | None = None,
    training_step: int | None = None,
    weights: str | None = None,
) -> FasterRCNN:
    """Build a Faster R-CNN; `num_classes` counts the background class (label 0).

    `schedule` and `alternating_epochs` are read by the platform (`training_steps`);
    `training_step` builds the model for one step of the alternating schedule.
    """
    if schedule not in ("end_to_end", "alternating"):
        raise ValueError(f"schedule must be 'end_to_end' or 'alternating', got {schedule!r}")
    del alternating_epochs  # the platform's business: how long each step trains
    backbone = SmallConvNet(width=width, stages=stages)
    # One feature map, k = len(sizes) * len(ratios) anchors per location, as in the paper.
    anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, representation_size)
    model = FasterRCNN(
        backbone,
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=box_detections_per_img,
    )
    # Mask/keypoint variants attach their branch to this model; the hook reads the heads at
    # call time, so it checks masks and keypoints for them too.
    model.register_forward_pre_hook(check_rcnn_inputs, with_kwargs=True)
    load_local_weights(model, weights)
    if training_step is not None:
        use_alternating_step(model, training_step)
    return model


ANCHOR_SIZES_FROM_DATA = 4  # how many sizes `anchor_sizes: null` gives (the demo's count)


def anchor_sizes_from_train_boxes(
    params: dict[str, Any], train_coco: dict[str, Any]
) -> dict[str, Any]:
    """Fill `anchor_sizes: null` from the training boxes as the model sees them (at its
    image_size): sizes spanning their 5th-95th percentile (models.anchors); the R-CNN family
    (Faster, Mask, Keypoint) shares it."""
    if params.get("anchor_sizes") is not None:
        return params
    image_size = (
        params.get("image_size") or inspect.signature(build).parameters["image_size"].default
    )
    sizes = coco_box_sizes(train_coco, image_size)
    if len(sizes) == 0:
        return {k: v for k, v in params.items() if k != "anchor_sizes"}  # the builder's default
    return {**params, "anchor_sizes": anchor_sizes_from_data(sizes, ANCHOR_SIZES_FROM_DATA)}
