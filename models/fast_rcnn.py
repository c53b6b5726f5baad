"""Fast R-CNN (Girshick 2015): one backbone pass per image, external proposals, RoI pooling.

The whole image goes through a from-scratch SmallConvNet once; each selective-search proposal
is projected onto the feature map and max-pooled to a fixed H x W grid (the paper's RoI pooling,
`torchvision.ops.roi_pool`); two FC layers feed a (C+1)-way softmax and class-specific box
regression, trained end-to-end with one multitask loss (cross-entropy + smooth L1).

torchvision's RoIHeads supplies the paper's training mechanics (truth boxes added to the
proposals, minibatches of RoIs per image with 25% foreground at IoU >= 0.5, box coding, the two
losses) and test mechanics (per-class box decoding, score threshold, per-class NMS). The one
change: a proposal whose best IoU is below `bg_iou_low` (0.1 in the paper) is not sampled as
background, which the paper uses as a heuristic for hard example mining.

Contract (DESIGN.md, extended for proposal-based families): train `model(images, targets)` ->
{loss_classifier, loss_box_reg}, where a target may carry "proposals" (M, 4) xyxy px; eval
`model(images, proposals=None)` -> [{boxes, labels, scores}] in input pixels. Without given
proposals the model runs selective search itself (serving one uploaded image does).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import clip_boxes_to_image, remove_small_boxes, roi_pool

from sightline.models.backbones import SmallConvNet
from sightline.models.local_weights import load_local_weights
from sightline.models.selective_search import Mode, SelectiveSearch, resolve_proposals
from sightline.models.targets import check_images, check_targets

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
MIN_PROPOSAL_SIDE = 1.0  # px at model scale; thinner RoIs pool nothing useful


class RoIPool(nn.Module):
    """The paper's RoI max pooling on the single feature map, in RoIHeads' pooler interface."""

    def __init__(self, output_size: int, spatial_scale: float) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> Tensor:
        return roi_pool(features["0"], proposals, self.output_size, self.spatial_scale)


class BackgroundBandMatcher(Matcher):
    """torchvision's Matcher, except that a proposal whose best IoU with every truth is below
    `bg_iou_low` is ignored instead of becoming a background sample (Fast R-CNN's [0.1, 0.5))."""

    def __init__(self, fg_iou_thresh: float, bg_iou_thresh: float, bg_iou_low: float) -> None:
        super().__init__(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.bg_iou_low = bg_iou_low

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        matches = super().__call__(match_quality_matrix)
        if self.bg_iou_low > 0:
            far = match_quality_matrix.amax(dim=0) < self.bg_iou_low
            matches[far] = self.BETWEEN_THRESHOLDS
        return matches


class FastRCNN(nn.Module):
    """Backbone once per image + RoI pooling of external proposals + RoIHeads (module doc)."""

    def __init__(
        self,
        backbone: nn.Module,
        roi_heads: RoIHeads,
        transform: GeneralizedRCNNTransform,
        search: SelectiveSearch,
        num_classes: int,
        max_proposals: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.transform = transform
        self.search = search
        self.num_classes = num_classes
        self.max_proposals = max_proposals

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        proposals: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_images(images)
        if self.training:
            check_targets(images, targets, self.num_classes)
        given = resolve_proposals(
            images, targets if self.training else None, proposals, self.search
        )
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        batch, scaled_targets = self.transform(images, targets if self.training else None)
        rois = [
            self._model_scale_rois(boxes, original, resized)
            for boxes, original, resized in zip(
                given, original_sizes, batch.image_sizes, strict=True
            )
        ]
        features = {"0": self.backbone(batch.tensors)}
        detections, losses = self.roi_heads(features, rois, batch.image_sizes, scaled_targets)
        if self.training:
            return losses
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def _model_scale_rois(
        self, boxes: Tensor, original: tuple[int, int], resized: tuple[int, int]
    ) -> Tensor:
        """Proposals resized like their image, clipped, thin ones dropped, the top ranked kept."""
        boxes = clip_boxes_to_image(resize_boxes(boxes, original, resized), resized)
        boxes = boxes[remove_small_boxes(boxes, MIN_PROPOSAL_SIDE)]
        return boxes[: self.max_proposals]


def build(
    num_classes: int,
    *,
    image_size: int = 128,
    width: int = 32,
    stages: int = 3,
    roi_size: int = 7,
    representation_size: int = 256,
    box_batch_size_per_image: int = 64,
    box_positive_fraction: float = 0.25,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.5,
    bg_iou_low: float = 0.1,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.3,
    box_detections_per_img: int = 100,
    proposal_mode: Mode = "fast",
    max_proposals: int = 2000,
    min_proposal_size: int = 4,
    weights: str | None = None,
) -> FastRCNN:
    """Build a Fast R-CNN; `num_classes` counts the background class (label 0).

    `box_batch_size_per_image` RoIs are sampled per image (the paper: 128 per 2-image batch);
    `max_proposals` caps the proposals used per image (selective search's top ranked).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    if not 0 <= bg_iou_low <= bg_iou_thresh <= fg_iou_thresh:
        raise ValueError(
            "need 0 <= bg_iou_low <= bg_iou_thresh <= fg_iou_thresh, got "
            f"{bg_iou_low}, {bg_iou_thresh}, {fg_iou_thresh}"
        )
    backbone = SmallConvNet(width=width, stages=stages)
    roi_heads = RoIHeads(
        box_roi_pool=RoIPool(roi_size, spatial_scale=1.0 / backbone.stride),
        box_head=TwoMLPHead(backbone.out_channels * roi_size**2, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        fg_iou_thresh=fg_iou_thresh,
        bg_iou_thresh=bg_iou_thresh,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        bbox_reg_weights=None,
        score_thresh=box_score_thresh,
        nms_thresh=box_nms_thresh,
        detections_per_img=box_detections_per_img,
    )
    roi_heads.proposal_matcher = BackgroundBandMatcher(fg_iou_thresh, bg_iou_thresh, bg_iou_low)
    # min = max = image_size: the longer side becomes image_size, as in the other R-CNNs here.
    transform = GeneralizedRCNNTransform(image_size, image_size, IMAGE_MEAN, IMAGE_STD)
    search = SelectiveSearch(proposal_mode, max_proposals, min_proposal_size, max_side=image_size)
    model = FastRCNN(backbone, roi_heads, transform, search, num_classes, max_proposals)
    load_local_weights(model, weights)
    return model
