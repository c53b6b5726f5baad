"""Checks of the detection contract's inputs, shared by every 2-D family.

Bad images or targets become ValueErrors that name `images[i]` or `targets[i][field]`, instead
of an assert or an index error deep inside torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

Target = dict[str, Tensor]

# The normalisation torchvision's detection transform uses; every family uses the same.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


def check_rcnn_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Forward pre-hook for torchvision R-CNNs: clear errors before their asserts and index errors.

    Reads what the model needs (classes, masks, keypoint count) from its heads, so one hook
    serves Faster, Mask and Keypoint R-CNN.
    """
    images = kwargs["images"] if "images" in kwargs else args[0]
    check_images(images)
    if not model.training:
        return
    targets = kwargs["targets"] if "targets" in kwargs else (args[1] if len(args) > 1 else None)
    heads = model.roi_heads
    check_targets(
        images,
        targets,
        heads.box_predictor.cls_score.out_features,
        with_masks=heads.has_mask(),
        num_keypoints=heads.keypoint_predictor.kps_score_lowres.out_channels
        if heads.has_keypoint()
        else 0,
    )


def check_images(images: Any) -> None:
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"images must be a list of 3xHxW tensors, got {type(images).__name__}")
    for index, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"images[{index}] must be a 3xHxW float tensor, got {shape}")


def check_targets(
    images: Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]] | None,
    num_classes: int,
    *,
    with_masks: bool = False,
    num_keypoints: int = 0,
) -> None:
    """Check training targets against the detection contract; errors name targets[i][field]."""
    if targets is None:
        raise ValueError("in training mode the model needs targets (boxes and labels per image)")
    if len(targets) != len(images):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets")
    for index, (image, target) in enumerate(zip(images, targets, strict=True)):
        _check_target(
            index, target, num_classes, tuple(image.shape[-2:]), with_masks, num_keypoints
        )


def _check_target(
    index: int,
    target: dict[str, Tensor],
    num_classes: int,
    image_hw: tuple[int, int],
    with_masks: bool,
    num_keypoints: int,
) -> None:
    where = f"targets[{index}]"
    needed = ["boxes", "labels"] + ["masks"] * with_masks + ["keypoints"] * (num_keypoints > 0)
    for field in needed:
        if not isinstance(target.get(field), Tensor):
            raise ValueError(f"{where}[{field!r}] is missing or not a tensor (needs {needed})")
    boxes, labels = target["boxes"], target["labels"]
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}['boxes'] must have shape (N, 4), got {tuple(boxes.shape)}")
    count = len(boxes)
    expected = {"labels": (count,)}
    if with_masks:
        expected["masks"] = (count, *image_hw)  # one mask per box, at the image's own size
    if num_keypoints:
        expected["keypoints"] = (count, num_keypoints, 3)
    for field, shape in expected.items():
        if tuple(target[field].shape) != shape:
            raise ValueError(
                f"{where}[{field!r}] must have shape {shape} for {count} boxes, "
                f"got {tuple(target[field].shape)}"
            )
    if count and not bool((boxes[:, 2:] > boxes[:, :2]).all()):
        raise ValueError(f"{where}['boxes'] holds a box with no width or height: {boxes.tolist()}")
    if count and not (int(labels.min()) >= 1 and int(labels.max()) < num_classes):
        raise ValueError(
            f"{where}['labels'] must lie in [1, {num_classes - 1}] (0 is background, "
            f"num_classes={num_classes}), got {labels.tolist()}"
        )
