"""YOLO: one forward pass over an S x S grid, B anchors per cell (YOLOv2-style, our own).

Every cell predicts, for each of its B anchors, (dx, dy, dw, dh, objectness) + C class scores,
so the raw output is S x S x B x (5 + C) (`YOLO.raw_outputs`). Boxes decode as
    centre = (cell + sigmoid(dx, dy)) * stride,   size = anchor * exp(dw, dh)
with anchor shapes from k-means on the training boxes (sightline.models.anchors).

Training: a truth box is owned by the cell holding its centre and, in it, by the anchor whose
shape fits it best (IoU at the origin). Owned predictions learn the box (GIoU loss), objectness 1
and the class (cross-entropy); every other prediction learns objectness 0, except those that
already overlap a truth box by more than `ignore_thresh` (YOLOv2/v3), which are left alone.
Test: score = sigmoid(objectness) x softmax(class), threshold, per-class NMS.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, generalized_box_iou_loss

from sightline.models.anchors import coco_box_sizes, kmeans_anchors
from sightline.models.backbones import SmallConvNet, conv_block
from sightline.models.local_weights import load_local_weights
from sightline.models.targets import IMAGE_MEAN, IMAGE_STD, Target, check_images, check_targets

MAX_LOG_SCALE = math.log(1000.0 / 16)  # clamp on dw, dh before exp (as torchvision's BoxCoder)
OBJECTNESS_PRIOR = 0.01  # initial objectness, so the many empty cells do not swamp early steps


def anchors_from_data(params: dict[str, Any], train_coco: dict[str, Any]) -> dict[str, Any]:
    """Fill `anchors: null` with k-means (1 - IoU) shapes of the training boxes (YOLOv2)."""
    if params.get("anchors") is not None:
        return params
    defaults = inspect.signature(build).parameters
    image_size = params.get("image_size", defaults["image_size"].default)
    count = params.get("num_anchors", defaults["num_anchors"].default)
    sizes = coco_box_sizes(train_coco, image_size)
    if len(sizes) < count:
        return params  # too few boxes to cluster: the builder's default shapes
    shapes = kmeans_anchors(sizes, count)
    return {**params, "anchors": [[round(float(w), 2), round(float(h), 2)] for w, h in shapes]}


def default_anchors(image_size: int, num_anchors: int) -> list[list[float]]:
    """Square anchors spaced geometrically from image_size/16 to 3/4 of the image."""
    if num_anchors == 1:
        return [[image_size / 4, image_size / 4]]
    ratio = (0.75 * 16) ** (1 / (num_anchors - 1))
    return [[image_size / 16 * ratio**i] * 2 for i in range(num_anchors)]


def _anchor_tensor(anchors: Sequence[Sequence[float]], num_anchors: int) -> Tensor:
    if len(anchors) != num_anchors:
        raise ValueError(f"anchors has {len(anchors)} shapes but num_anchors={num_anchors}")
    for i, shape in enumerate(anchors):
        if len(shape) != 2 or not all(float(v) > 0 for v in shape):
            raise ValueError(f"anchors[{i}] must be [width, height] in px, both > 0, got {shape}")
    return torch.tensor([[float(w), float(h)] for w, h in anchors])


class YOLO(nn.Module):
    """Single-shot grid detector; follows torchvision's detection contract (see module doc)."""

    def __init__(
        self,
        num_classes: int,
        anchors: Tensor,
        *,
        image_size: int,
        grid_stride: int,
        width: int,
        ignore_thresh: float,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        topk_candidates: int,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = len(anchors)
        self.image_size = image_size
        self.grid_stride = grid_stride
        self.grid_size = image_size // grid_stride  # S
        self.ignore_thresh = ignore_thresh
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        # A buffer, so the k-means shapes travel with the state dict.
        self.register_buffer("anchors", anchors.clone())
        self.transform = GeneralizedRCNNTransform(
            image_size,
            image_size,
            IMAGE_MEAN,
            IMAGE_STD,
            size_divisible=grid_stride,
            fixed_size=(image_size, image_size),
        )
        self.backbone = SmallConvNet(width=width, stages=int(math.log2(grid_stride)))
        channels = self.backbone.out_channels
        self.neck = conv_block(channels, channels, stride=1)
        self.predictor = nn.Conv2d(channels, self.num_anchors * self.outputs_per_anchor, 1)
        self._init_predictor()

    @property
    def outputs_per_anchor(self) -> int:
        return 5 + self.num_classes - 1  # (dx, dy, dw, dh, objectness) + C object classes

    def _init_predictor(self) -> None:
        nn.init.normal_(self.predictor.weight, std=0.01)
        bias = self.predictor.bias.detach().view(self.num_anchors, self.outputs_per_anchor)
        bias.zero_()
        bias[:, 4] = -math.log((1 - OBJECTNESS_PRIOR) / OBJECTNESS_PRIOR)

    def predict_grid(self, batch: Tensor) -> Tensor:
        """(N, 3, image_size, image_size) normalised -> raw (N, S, S, B, 5 + C), rows first."""
        out = self.predictor(self.neck(self.backbone(batch)))
        n, _, rows, cols = out.shape
        out = out.view(n, self.num_anchors, self.outputs_per_anchor, rows, cols)
        return out.permute(0, 3, 4, 1, 2)

    def raw_outputs(self, images: list[Tensor]) -> Tensor:
        """The un-activated S x S x B x (5 + C) grid of every image, as (N, S, S, B, 5 + C)."""
        check_images(images)
        return self.predict_grid(self.transform(images)[0].tensors)

    def decode_boxes(self, raw: Tensor) -> Tensor:
        """Raw (N, S, S, B, >=4) -> xyxy boxes (N, S, S, B, 4) in resized-image pixels."""
        rows, cols = raw.shape[1:3]
        ys, xs = torch.meshgrid(
            torch.arange(rows, device=raw.device, dtype=raw.dtype),
            torch.arange(cols, device=raw.device, dtype=raw.dtype),
            indexing="ij",
        )
        cell = torch.stack((xs, ys), dim=-1)[None, :, :, None, :]
        centre = (cell + raw[..., 0:2].sigmoid()) * self.grid_stride
        size = self.anchors * raw[..., 2:4].clamp(max=MAX_LOG_SCALE).exp()
        return torch.cat((centre - size / 2, centre + size / 2), dim=-1)

    def forward(
        self, images: list[Tensor], targets: list[Target] | None = None
    ) -> dict[str, Tensor] | list[Target]:
        check_images(images)
        if self.training:
            check_targets(images, targets, self.num_classes)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, resized_targets = self.transform(images, targets if self.training else None)
        raw = self.predict_grid(batch.tensors)
        if self.training:
            return self.compute_loss(raw, resized_targets)
        detections = self.postprocess(raw, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def _assign(self, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Owner of each truth box: (row, col) of the cell holding its centre, best-shape anchor."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        cell = (centre / self.grid_stride).floor().long().clamp(0, self.grid_size - 1)
        wh = boxes[:, 2:] - boxes[:, :2]
        inter = torch.minimum(wh[:, None], self.anchors[None]).prod(dim=-1)
        union = wh.prod(dim=-1)[:, None] + self.anchors.prod(dim=-1)[None] - inter
        return cell[:, 1], cell[:, 0], (inter / union).argmax(dim=1)

    def compute_loss(self, raw: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        pred_boxes = self.decode_boxes(raw)
        objectness = raw[..., 4]
        obj_target = torch.zeros_like(objectness)
        obj_weight = torch.ones_like(objectness)
        owned_pred, owned_truth, owned_logits, owned_labels = [], [], [], []
        for i, target in enumerate(targets):
            boxes, labels = target["boxes"], target["labels"]
            if len(boxes) == 0:
                continue
            best_overlap = box_iou(pred_boxes[i].detach().reshape(-1, 4), boxes).max(dim=1).values
            obj_weight[i] = (
                (best_overlap <= self.ignore_thresh).to(obj_weight).view_as(obj_weight[i])
            )
            row, col, anchor = self._assign(boxes)
            obj_target[i, row, col, anchor] = 1.0
            obj_weight[i, row, col, anchor] = 1.0
            owned_pred.append(pred_boxes[i, row, col, anchor])
            owned_truth.append(boxes)
            owned_logits.append(raw[i, row, col, anchor, 5:])
            owned_labels.append(labels - 1)
        num_owned = sum(len(b) for b in owned_truth)
        loss_obj = F.binary_cross_entropy_with_logits(
            objectness, obj_target, weight=obj_weight, reduction="sum"
        ) / max(1, num_owned)
        if num_owned == 0:
            zero = raw[..., :4].sum() * 0.0  # keeps every output in the graph (DDP)
            return {"loss_box": zero, "loss_obj": loss_obj, "loss_cls": zero}
        loss_box = generalized_box_iou_loss(
            torch.cat(owned_pred), torch.cat(owned_truth), reduction="mean"
        )
        loss_cls = F.cross_entropy(torch.cat(owned_logits), torch.cat(owned_labels))
        return {"loss_box": loss_box, "loss_obj": loss_obj, "loss_cls": loss_cls}

    def postprocess(self, raw: Tensor, image_sizes: list[tuple[int, int]]) -> list[Target]:
        boxes = self.decode_boxes(raw).flatten(1, 3)
        scores = raw[..., 4:5].sigmoid() * raw[..., 5:].softmax(dim=-1)
        scores = scores.flatten(1, 3)  # (N, S*S*B, C)
        num_object_classes = scores.shape[-1]
        detections = []
        for image_boxes, image_scores, size in zip(boxes, scores, image_sizes, strict=True):
            flat = image_scores.flatten()
            candidates = torch.nonzero(flat > self.score_thresh).squeeze(1)
            top = flat[candidates].topk(min(self.topk_candidates, len(candidates)))
            candidates = candidates[top.indices]
            kept_boxes = clip_boxes_to_image(image_boxes[candidates // num_object_classes], size)
            labels = candidates % num_object_classes + 1
            keep = batched_nms(kept_boxes, top.values, labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            detections.append(
                {"boxes": kept_boxes[keep], "labels": labels[keep], "scores": top.values[keep]}
            )
        return detections


def build(
    num_classes: int,
    *,
    image_size: int = 128,
    width: int = 32,
    grid_stride: int = 16,
    num_anchors: int = 5,
    anchors: list[list[float]] | None = None,
    ignore_thresh: float = 0.5,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    detections_per_img: int = 100,
    topk_candidates: int = 1000,
    weights: str | None = None,
) -> YOLO:
    """Build a YOLO; `num_classes` counts the background class (label 0).

    `anchors`: B = num_anchors [width, height] pairs in px at image_size (e.g. from
    `sightline.models.anchors.kmeans_anchors`); None gives squares from image_size/16 to 3/4.
    The grid is S x S with S = image_size / grid_stride (a power of two).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    if grid_stride < 2 or grid_stride & (grid_stride - 1):
        raise ValueError(f"grid_stride must be a power of two >= 2, got {grid_stride}")
    if image_size % grid_stride:
        raise ValueError(f"image_size {image_size} must be a multiple of grid_stride {grid_stride}")
    shapes = default_anchors(image_size, num_anchors) if anchors is None else anchors
    model = YOLO(
        num_classes,
        _anchor_tensor(shapes, num_anchors),
        image_size=image_size,
        grid_stride=grid_stride,
        width=width,
        ignore_thresh=ignore_thresh,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=topk_candidates,
    )
    load_local_weights(model, weights)
    return model
