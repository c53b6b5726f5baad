"""Training-time augmentation (params.yaml `train.augment`): detection samples and face crops.

A small real dataset is learnt by heart in a few epochs; drawing a new flip, zoom, shift and
colour for every sample of every epoch makes it look larger. Everything that lives in pixel
coordinates moves with the pixels: boxes, instance masks, keypoints (left and right swapped on
a flip, points pushed off the image marked invisible) and the selective-search proposals of
R-CNN and Fast R-CNN. Boxes are clipped to the image and those left under a pixel dropped with
their labels, masks and keypoints. torchvision's v2 transforms do the geometry; only the
training datasets are wrapped, so evaluation, validation and serving never see it. Faces get
the same flip, zoom, shift and brightness / contrast (a face's identity survives a mirror).
The last epochs (`off_for_final`) see the plain samples: `for_training` gates either transform
and the training loop sets the epoch through the dataset's `set_epoch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import clip_boxes_to_image, remove_small_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from sightline.data.augment_params import Augment
from sightline.data.detection import Target

# Per-object fields that do not move with the pixels, dropped with their box.
_PER_OBJECT = ("labels", "iscrowd")


def keypoint_flip_order(names: Sequence[str]) -> list[int]:
    """Where each keypoint goes when the image is mirrored: COCO's `left_*` / `right_*` pairs
    swap, the others (head, neck...) stay."""
    index = {name: i for i, name in enumerate(names)}
    order = []
    for i, name in enumerate(names):
        side, _, part = name.partition("_")
        other = {"left": "right", "right": "left"}.get(side)
        order.append(index.get(f"{other}_{part}", i) if other else i)
    return order


class UntilEpoch:
    """`transform` in the epochs before `stop` (None: in every epoch), the sample unchanged
    from then on. Starts in epoch 0; `set_epoch` moves it."""

    def __init__(self, transform: Callable[..., Any], stop: int | None) -> None:
        self.transform = transform
        self.stop = stop
        self.active = True

    def set_epoch(self, epoch: int) -> None:
        self.active = self.stop is None or epoch < self.stop

    def __call__(self, *sample: Any) -> Any:
        if self.active:
            return self.transform(*sample)
        return sample if len(sample) > 1 else sample[0]


class DetectionAugmentation:
    """(image, target) -> (image, target), drawn anew at each call (torch's global RNG, which
    the training loop seeds)."""

    def __init__(self, augment: Augment, keypoint_names: Sequence[str] = ()) -> None:
        self.hflip = augment.hflip
        self.flip_order = keypoint_flip_order(keypoint_names)
        self.geometry = _zoom_and_shift(augment)
        self.colour = _colour_jitter(augment, saturation=True)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        size = tuple(image.shape[-2:])
        sample = _pixel_fields(image, target, size)
        flipped = bool(torch.rand(()) < self.hflip)
        if flipped:
            sample = {name: _mirrored(name, value, size[1]) for name, value in sample.items()}
        if self.geometry is not None:
            sample = self.geometry(sample)
        if self.colour is not None:
            sample["image"] = self.colour(sample["image"])
        return sample["image"].as_subclass(Tensor), self._target(sample, target, size, flipped)

    def _target(
        self, sample: dict[str, Tensor], target: Target, size: tuple[int, int], flipped: bool
    ) -> Target:
        boxes = clip_boxes_to_image(sample["boxes"].as_subclass(Tensor), size)
        keep = remove_small_boxes(boxes, 1.0)
        moved = {**target, "boxes": boxes[keep]}
        for name in _PER_OBJECT:
            if name in target:
                moved[name] = target[name][keep]
        if "masks" in sample:
            moved["masks"] = sample["masks"].as_subclass(Tensor)[keep]
        if "keypoints" in sample:
            moved["keypoints"] = self._keypoints(sample, target, size, flipped)[keep]
        widths, heights = (boxes[keep, 2:] - boxes[keep, :2]).unbind(1)
        moved["area"] = (
            moved["masks"].flatten(1).sum(1).float() if "masks" in moved else widths * heights
        )
        if "proposals" in sample:
            proposals = clip_boxes_to_image(sample["proposals"].as_subclass(Tensor), size)
            moved["proposals"] = proposals[remove_small_boxes(proposals, 1.0)]
        return moved

    def _keypoints(
        self, sample: dict[str, Tensor], target: Target, size: tuple[int, int], flipped: bool
    ) -> Tensor:
        xy = sample["keypoints"].as_subclass(Tensor)
        visible = target["keypoints"][..., 2]
        height, width = size
        inside = (
            (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
        )
        points = torch.cat([xy, torch.where(inside, visible, 0.0)[..., None]], dim=-1)
        return points[:, self.flip_order] if flipped else points


def _mirrored(name: str, value: Tensor, width: int) -> Tensor:
    """Left-right mirror; keypoints as COCO's continuous coordinates (x -> width - x, like
    the boxes' edges), where torchvision mirrors them as pixel indices (width - 1 - x)."""
    if name != "keypoints":
        return F.horizontal_flip(value)
    xy = value.as_subclass(Tensor).clone()
    xy[..., 0] = width - xy[..., 0]
    return tv_tensors.wrap(xy, like=value)


def _pixel_fields(image: Tensor, target: Target, size: tuple[int, int]) -> dict[str, Tensor]:
    """The sample's pixel-space fields as the tv_tensors that v2 transforms know how to move."""
    fields: dict[str, Tensor] = {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=size),
    }
    if "masks" in target:
        fields["masks"] = tv_tensors.Mask(target["masks"])
    if "keypoints" in target:
        fields["keypoints"] = tv_tensors.KeyPoints(target["keypoints"][..., :2], canvas_size=size)
    if "proposals" in target:
        fields["proposals"] = tv_tensors.BoundingBoxes(
            target["proposals"], format="XYXY", canvas_size=size
        )
    return fields


def for_training(transform: Callable[..., Any], augment: Augment, epochs: int) -> UntilEpoch:
    """`transform` gated off for the final epochs of a training of `epochs` epochs."""
    return UntilEpoch(transform, augment.first_plain_epoch(epochs))


class AugmentedDataset(Dataset[tuple[Tensor, Target]]):
    """A detection training dataset whose samples pass through `augmentation` (a
    `DetectionAugmentation`, gated by `for_training`)."""

    def __init__(self, dataset: Dataset[tuple[Tensor, Target]], augmentation: UntilEpoch) -> None:
        self.dataset = dataset
        self.augmentation = augmentation

    def set_epoch(self, epoch: int) -> None:
        self.augmentation.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        return self.augmentation(*self.dataset[index])


def face_augmentation(augment: Augment, channels: int) -> v2.Transform:
    """The transform an identity training dataset applies to each prepared face (CxHxW)."""
    flip = v2.RandomHorizontalFlip(augment.hflip) if augment.hflip > 0 else None
    candidates = (flip, _zoom_and_shift(augment), _colour_jitter(augment, channels == 3))
    steps = [step for step in candidates if step is not None]
    return v2.Compose(steps) if steps else v2.Identity()


def _zoom_and_shift(augment: Augment) -> v2.Transform | None:
    """One affine draw (zoom, shift; no rotation) for the whole sample; None if both are off."""
    if tuple(augment.scale) == (1.0, 1.0) and augment.translate == 0:
        return None
    shift = (augment.translate, augment.translate)
    return v2.RandomAffine(degrees=0, translate=shift, scale=tuple(augment.scale))


def _colour_jitter(augment: Augment, saturation: bool) -> v2.Transform | None:
    c = augment.colour
    if c == 0:
        return None
    return v2.ColorJitter(brightness=c, contrast=c, saturation=c if saturation else 0)
