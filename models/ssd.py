"""SSD: single shot, default boxes on several feature maps of different scales.

torchvision supplies the mechanism (DefaultBoxGenerator, SSDHead with per-map 3x3 class and box
convs, matching at IoU 0.5, hard negative mining 3:1, the two losses `bbox_regression` and
`classification`, per-class NMS); this module adds a multi-scale backbone that trains from
scratch and exposes the default-box knobs (aspect ratios per map, scales) for anchor tuning.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead

from sightline.models.backbones import SmallConvNet, conv_block
from sightline.models.local_weights import load_local_weights
from sightline.models.targets import IMAGE_MEAN, IMAGE_STD, Target, check_images, check_targets


class MultiScaleBackbone(nn.Module):
    """SmallConvNet to stride 2**stages, then stride-2 blocks: `num_maps` maps, strides x2 each.

    At 128 px with stages=3 and num_maps=4 the maps are 16, 8, 4 and 2 cells wide (strides 8-64).
    """

    def __init__(self, width: int, stages: int, num_maps: int) -> None:
        super().__init__()
        self.body = SmallConvNet(width=width, stages=stages)
        channels = self.body.out_channels
        self.extras = nn.ModuleList(
            nn.Sequential(
                conv_block(channels, channels // 2, stride=1),
                conv_block(channels // 2, channels, stride=2),
            )
            for _ in range(num_maps - 1)
        )
        self.out_channels = [channels] * num_maps

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feature = self.body(x)
        maps = OrderedDict([("0", feature)])
        for level, extra in enumerate(self.extras, start=1):
            feature = extra(feature)
            maps[str(level)] = feature
        return maps


class SSDDetector(SSD):
    """torchvision's SSD with input checks that name the bad image or target field."""

    def forward(
        self, images: list[Tensor], targets: list[Target] | None = None
    ) -> dict[str, Tensor] | list[Target]:
        num_classes = self.head.classification_head.num_columns
        check_images(images)
        if self.training:
            check_targets(images, targets, num_classes)
        return super().forward(images, targets)


def _check_box_settings(
    image_size: int,
    stages: int,
    aspect_ratios: Sequence[Sequence[float]],
    scales: Sequence[float] | None,
) -> None:
    if not aspect_ratios:
        raise ValueError("aspect_ratios needs one list of ratios per feature map, got none")
    for level, ratios in enumerate(aspect_ratios):
        if not all(float(r) > 0 for r in ratios):
            raise ValueError(f"aspect_ratios[{level}] must be positive numbers, got {ratios}")
    if scales is not None and len(scales) != len(aspect_ratios) + 1:
        raise ValueError(
            f"scales needs one value per feature map plus one ({len(aspect_ratios) + 1}), "
            f"got {len(scales)}"
        )
    coarsest_stride = 2 ** (stages + len(aspect_ratios) - 1)
    if image_size < coarsest_stride:
        raise ValueError(
            f"image_size {image_size} is smaller than the coarsest map's stride {coarsest_stride} "
            f"(stages={stages}, {len(aspect_ratios)} feature maps)"
        )


def build(
    num_classes: int,
    *,
    image_size: int = 128,
    width: int = 32,
    stages: int = 3,
    aspect_ratios: Sequence[Sequence[float]] = ((2,), (2, 3), (2, 3), (2,)),
    min_ratio: float = 0.1,
    max_ratio: float = 0.9,
    scales: Sequence[float] | None = None,
    iou_thresh: float = 0.5,
    positive_fraction: float = 0.25,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    detections_per_img: int = 100,
    topk_candidates: int = 400,
    weights: str | None = None,
) -> SSDDetector:
    """Build an SSD; `num_classes` counts the background class (label 0).

    One feature map per entry of `aspect_ratios` (the first at stride 2**stages, each next one
    at twice the stride). Each map gets 2 + 2 * len(ratios) default boxes per cell: two squares
    (scale s_k and sqrt(s_k * s_k+1)) and w:h = r and 1:r per ratio. Scales are fractions of
    image_size: explicit `scales` (one per map plus one) or linear from min_ratio to max_ratio.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    _check_box_settings(image_size, stages, aspect_ratios, scales)
    backbone = MultiScaleBackbone(width=width, stages=stages, num_maps=len(aspect_ratios))
    default_boxes = DefaultBoxGenerator(
        [[float(r) for r in ratios] for ratios in aspect_ratios],
        min_ratio=min_ratio,
        max_ratio=max_ratio,
        scales=None if scales is None else [float(s) for s in scales],
    )
    head = SSDHead(backbone.out_channels, default_boxes.num_anchors_per_location(), num_classes)
    model = SSDDetector(
        backbone,
        default_boxes,
        (image_size, image_size),
        num_classes,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        head=head,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        iou_thresh=iou_thresh,
        topk_candidates=topk_candidates,
        positive_fraction=positive_fraction,
    )
    load_local_weights(model, weights)
    return model
