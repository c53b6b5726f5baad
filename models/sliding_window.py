"""Sliding window: the oldest detector. A CNN classifier with a background class, run on windows.

Train mode samples the classifier's examples from the images and targets it is given: positives
are jittered truth boxes, negatives windows of the grid's shapes overlapping every truth by
IoU < 0.3 (some anywhere, some around a truth); each is warped with a `context` margin to a
fixed `crop_size` square (RoIAlign on the image) and the loss is one cross-entropy.

Eval mode slides square and oblong windows of several sizes over the image with a stride of a
fraction of the window, classifies every warped window, scores it by the softmax probability of
its best non-background class and keeps the best per class with NMS. The box is the window
itself: no regression, which is what separates this baseline from R-CNN and its successors.

Images are first scaled so their longer side is `image_size` (as the R-CNN families do), so
window sizes are in those pixels; boxes come back in each input image's own pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from sightline.models.backbones import SmallConvNet
from sightline.models.crops import to_model_scale, warp_with_context
from sightline.models.local_weights import load_local_weights
from sightline.models.targets import IMAGE_MEAN, IMAGE_STD, check_images, check_targets

NEAR_MISS_SPREAD = 0.75  # near-miss centres: within this fraction of the truth's size of its own
MIN_WINDOW_SIDE = 4.0  # px; negatives clipped to the image below this are dropped


@dataclass(frozen=True)
class WindowGrid:
    """Window shapes (sizes x ratios, ratio = height / width) and the stride between them."""

    sizes: tuple[float, ...]
    aspect_ratios: tuple[float, ...]
    stride_fraction: float

    def shapes(self) -> Tensor:
        """(S * R, 2) window widths and heights in model pixels."""
        sizes = torch.tensor(self.sizes, dtype=torch.float32)
        ratios = torch.tensor(self.aspect_ratios, dtype=torch.float32)
        heights = (sizes[:, None] * ratios.sqrt()[None, :]).flatten()
        widths = (sizes[:, None] / ratios.sqrt()[None, :]).flatten()
        return torch.stack([widths, heights], dim=1)

    def windows(self, height: int, width: int) -> Tensor:
        """(W, 4) xyxy windows covering a height x width image, every shape at every stride."""
        boxes = []
        for window_w, window_h in self.shapes().tolist():
            xs = _positions(width, window_w, self.stride_fraction)
            ys = _positions(height, window_h, self.stride_fraction)
            y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
            x0, y0 = x0.flatten(), y0.flatten()
            boxes.append(torch.stack([x0, y0, x0 + window_w, y0 + window_h], dim=1))
        return torch.cat(boxes)


def _positions(length: int, window: float, stride_fraction: float) -> Tensor:
    """Window starts along one axis: every stride, plus one flush with the far edge."""
    last = length - window
    if last <= 0:  # the window is longer than the image: one window, centred
        return torch.tensor([last / 2])
    starts = torch.arange(0.0, last, max(1.0, stride_fraction * window))
    return torch.cat([starts, torch.tensor([last])])


@dataclass(frozen=True)
class CropSampler:
    """How train mode draws classifier examples from an image and its truth boxes."""

    positives_per_box: int
    jitter: float  # max shift (fraction of the box side) and log-scale change of a positive
    negative_ratio: float  # negatives per positive
    min_negatives: int  # per image, so images without objects still teach "background"
    negative_max_iou: float
    near_miss_fraction: float  # of the negatives: windows drawn around a truth

    def positives(self, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        boxes = boxes.repeat_interleave(self.positives_per_box, dim=0)
        labels = labels.repeat_interleave(self.positives_per_box)
        return _perturbed(boxes, self.jitter), labels

    def negatives(
        self, truths: Tensor, shapes: Tensor, count: int, height: int, width: int
    ) -> Tensor:
        """Up to `count` grid-shaped windows clear of every truth (IoU < negative_max_iou).

        Some anywhere in the image, some near a truth (a part of an object, an object with too
        much around it): the grid always holds those, random windows seldom do.
        """
        near_count = round(self.near_miss_fraction * count) if len(truths) else 0
        near = self._clear_of(self._near(truths, shapes, 4 * near_count, height, width), truths)
        near = near[:near_count]
        anywhere = self._clear_of(self._anywhere(shapes, 4 * count, height, width), truths)
        return torch.cat([near, anywhere[: count - len(near)]])

    @staticmethod
    def _anywhere(shapes: Tensor, count: int, height: int, width: int) -> Tensor:
        wh = shapes[torch.randint(len(shapes), (count,))]
        top_left = torch.rand(count, 2) * (torch.tensor([width, height]) - wh).clamp(min=0)
        return torch.cat([top_left, top_left + wh], dim=1)

    @staticmethod
    def _near(truths: Tensor, shapes: Tensor, count: int, height: int, width: int) -> Tensor:
        if not count:
            return torch.zeros((0, 4))
        wh = shapes[torch.randint(len(shapes), (count,))]
        picked = truths[torch.randint(len(truths), (count,))]
        sizes = picked[:, 2:] - picked[:, :2]
        offsets = sizes * _uniform(sizes.shape, NEAR_MISS_SPREAD)
        centres = (picked[:, :2] + picked[:, 2:]) / 2 + offsets
        windows = torch.cat([centres - wh / 2, centres + wh / 2], dim=1)
        return clip_boxes_to_image(windows, (height, width))

    def _clear_of(self, windows: Tensor, truths: Tensor) -> Tensor:
        windows = windows[((windows[:, 2:] - windows[:, :2]) >= MIN_WINDOW_SIDE).all(dim=1)]
        if len(truths):
            windows = windows[box_iou(windows, truths).amax(dim=1) < self.negative_max_iou]
        return windows

    def negative_count(self, num_positives: int) -> int:
        return max(self.min_negatives, round(self.negative_ratio * num_positives))


def _perturbed(boxes: Tensor, amount: float) -> Tensor:
    """Boxes moved by up to `amount` of their sides and rescaled by up to exp(+-amount)."""
    sizes = boxes[:, 2:] - boxes[:, :2]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + sizes * _uniform(sizes.shape, amount)
    sizes = sizes * _uniform(sizes.shape, amount).exp()
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def _uniform(shape: torch.Size, limit: float) -> Tensor:
    return (torch.rand(shape) * 2 - 1) * limit


@dataclass(frozen=True)
class Postprocess:
    """Which scored windows become detections."""

    score_thresh: float
    nms_thresh: float
    detections_per_img: int


class WindowClassifier(nn.Module):
    """SmallConvNet on a crop_size square, then an MLP to num_classes logits (0 = background)."""

    def __init__(
        self, num_classes: int, crop_size: int, width: int, stages: int, hidden: int
    ) -> None:
        super().__init__()
        self.features = SmallConvNet(width=width, stages=stages)
        side = crop_size
        for _ in range(stages):  # each stage's 3x3 stride-2 conv (padding 1) halves, rounding up
            side = math.ceil(side / 2)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.features.out_channels * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, crops: Tensor) -> Tensor:
        return self.head(self.features(crops))


class SlidingWindowDetector(nn.Module):
    """The detection contract around a window classifier (see the module docstring)."""

    def __init__(
        self,
        classifier: nn.Module,
        num_classes: int,
        *,
        image_size: int,
        crop_size: int,
        context: float,
        grid: WindowGrid,
        sampler: CropSampler,
        postprocess: Postprocess,
        window_batch_size: int,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_classes = num_classes
        self.image_size = image_size
        self.crop_size = crop_size
        self.context = context
        self.grid = grid
        self.sampler = sampler
        self.postprocess = postprocess
        self.window_batch_size = window_batch_size
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD)[:, None, None], persistent=False)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_images(images)
        if self.training:
            check_targets(images, targets, self.num_classes)
            return {"loss_classifier": self._classifier_loss(images, targets)}
        return [self._detect(image) for image in images]

    def _to_model_scale(self, image: Tensor) -> tuple[Tensor, float]:
        return to_model_scale(image, self.image_size, self.mean, self.std)

    def _crops(self, image: Tensor, windows: Tensor) -> Tensor:
        # Warp each window with a margin of context around it (as R-CNN does): without it a
        # window inside a uniform object looks exactly like the object's own box.
        return warp_with_context(image, windows, self.crop_size, self.context)

    def _classifier_loss(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        shapes = self.grid.shapes()
        crops, labels = [], []
        for image, target in zip(images, targets, strict=True):
            scaled, scale = self._to_model_scale(image)
            height, width = scaled.shape[-2:]
            truths = target["boxes"].detach().float().cpu() * scale
            positives, positive_labels = self.sampler.positives(truths, target["labels"].cpu())
            count = self.sampler.negative_count(len(positives))
            negatives = self.sampler.negatives(truths, shapes, count, height, width)
            crops.append(self._crops(scaled, torch.cat([positives, negatives])))
            labels += [positive_labels, torch.zeros(len(negatives), dtype=torch.int64)]
        logits = self.classifier(torch.cat(crops))
        return F.cross_entropy(logits, torch.cat(labels).to(logits.device))

    def _detect(self, image: Tensor) -> dict[str, Tensor]:
        scaled, scale = self._to_model_scale(image)
        windows = self.grid.windows(*scaled.shape[-2:])
        probabilities = torch.cat(
            [
                self.classifier(self._crops(scaled, chunk)).softmax(dim=1)
                for chunk in windows.split(self.window_batch_size)
            ]
        )
        scores, labels = probabilities[:, 1:].max(dim=1)
        labels = labels + 1
        keep = scores > self.postprocess.score_thresh
        boxes = clip_boxes_to_image(windows.to(image)[keep] / scale, image.shape[-2:])
        scores, labels = scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.postprocess.nms_thresh)
        keep = keep[: self.postprocess.detections_per_img]
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


def build(
    num_classes: int,
    *,
    image_size: int = 128,
    crop_size: int = 32,
    context: float = 0.125,
    width: int = 16,
    stages: int = 3,
    hidden: int = 128,
    window_sizes: Sequence[float] = (16, 32, 48, 64, 96),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    stride_fraction: float = 0.25,
    positives_per_box: int = 2,
    jitter: float = 0.1,
    negative_ratio: float = 3.0,
    min_negatives_per_image: int = 16,
    negative_max_iou: float = 0.3,
    near_miss_fraction: float = 0.5,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.3,
    box_detections_per_img: int = 100,
    window_batch_size: int = 1024,
    weights: str | None = None,
) -> SlidingWindowDetector:
    """Build a sliding-window detector; `num_classes` counts the background class (label 0)."""
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    if not window_sizes or not aspect_ratios:
        raise ValueError("window_sizes and aspect_ratios must each hold at least one value")
    if not 0 < stride_fraction <= 1:
        raise ValueError(f"stride_fraction must lie in (0, 1], got {stride_fraction}")
    model = SlidingWindowDetector(
        WindowClassifier(num_classes, crop_size, width, stages, hidden),
        num_classes,
        image_size=image_size,
        crop_size=crop_size,
        context=context,
        grid=WindowGrid(tuple(window_sizes), tuple(aspect_ratios), stride_fraction),
        sampler=CropSampler(
            positives_per_box,
            jitter,
            negative_ratio,
            min_negatives_per_image,
            negative_max_iou,
            near_miss_fraction,
        ),
        postprocess=Postprocess(box_score_thresh, box_nms_thresh, box_detections_per_img),
        window_batch_size=window_batch_size,
    )
    load_local_weights(model, weights)
    return model
