"""R-CNN (Girshick et al. 2014): warped proposals, CNN features, post-hoc SVMs and regressors.

Not end-to-end. Every selective-search proposal is dilated so that the warp shows `context` of
its side in surrounding pixels (the paper: 16 of 227 px), warped to a `crop_size` square
(RoIAlign on the image) and run through a small CNN; its second FC layer's output is the
region's feature vector (the paper's fc7).

- Stage 1, `model(images, targets)` in the platform's training loop: the CNN is fine-tuned with
  a (C+1)-way softmax (`loss_classifier`) on warps sampled per image from proposals and truth
  boxes: foreground at IoU >= 0.5 with a truth (its class), the rest background, 25% foreground.
- Stage 2, after the loop: `extract_features` on the training proposals (cacheable on disk, as
  the paper did), then `fit_svms_and_regressors`: one linear SVM per class with the hinge loss
  (positives: truth boxes; negatives: regions with IoU < 0.3 with every truth of the class),
  solved together by subgradient descent (Adam) with the paper's hard negative mining over
  all cached rows; and per-class closed-form ridge regression from features to the paper's
  (tx, ty, tw, th) for regions with IoU >= 0.6. The weights are buffers, so state_dict and
  pickling keep them.

Eval scores each proposal with the SVMs (the score is sigmoid(margin): 0.5 on the SVM's
decision boundary) and moves it by the class's regressor; before stage 2 it scores with the
fine-tuned softmax and keeps the proposal as the box. Then per-class NMS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from sightline.models.backbones import SmallConvNet
from sightline.models.crops import to_model_scale, warp_with_context
from sightline.models.local_weights import load_local_weights
from sightline.models.selective_search import Mode, SelectiveSearch, resolve_proposals
from sightline.models.targets import check_images, check_targets

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
PAPER_CONTEXT = 16 / 227  # 16 px of context on each side of a 227 px warp
MIN_REGION_SIDE = 1.0  # px at model scale
MINING_INTERVAL = 10  # SVM steps between two hard-negative mining passes over all rows
MINING_SLACK = 0.5  # rows this far past their margin stay in, in case the next steps cross it
TRUTH_IOU = 1.0 - 1e-4  # a region this close to a truth box is that truth box (an SVM positive)
# The paper's (tx, ty, tw, th): centre offsets in units of the proposal's size, log size ratios.
PAPER_BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


@dataclass(frozen=True)
class FineTuneSampling:
    """Stage 1: which warps the softmax is fine-tuned on, per image."""

    rois_per_image: int
    positive_fraction: float
    fg_iou_thresh: float


@dataclass(frozen=True)
class PostHocFit:
    """Stage 2 settings (the paper's thresholds; our solver)."""

    svm_negative_iou: float  # negatives: IoU below this with every truth of the class
    svm_positive_weight: float  # the released code weighted positives x2
    svm_l2: float
    svm_steps: int
    svm_lr: float
    regression_iou: float  # regressors learn from regions at least this close to a truth
    ridge_lambda: float
    feature_norm: float  # features are scaled to this mean L2 norm first (the paper: 20)


@dataclass(frozen=True)
class Postprocess:
    score_thresh: float
    nms_thresh: float
    detections_per_img: int


class RegionCNN(nn.Module):
    """SmallConvNet on a warped region, two FC layers (the features), a (C+1)-way classifier."""

    def __init__(
        self, num_classes: int, crop_size: int, width: int, stages: int, feature_dim: int
    ) -> None:
        super().__init__()
        self.body = SmallConvNet(width=width, stages=stages)
        side = crop_size
        for _ in range(stages):  # each stage's 3x3 stride-2 conv (padding 1) halves, rounding up
            side = math.ceil(side / 2)
        self.fc = TwoMLPHead(self.body.out_channels * side * side, feature_dim)
        self.classifier = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, crops: Tensor) -> Tensor:
        return self.fc(self.body(crops))

    def forward(self, crops: Tensor) -> Tensor:
        return self.classifier(self.features(crops))


class RCNN(nn.Module):
    """The detection contract around a region CNN and its post-hoc SVMs (module docstring)."""

    def __init__(
        self,
        cnn: RegionCNN,
        num_classes: int,
        *,
        image_size: int,
        crop_size: int,
        context: float,
        search: SelectiveSearch,
        sampling: FineTuneSampling,
        post_hoc: PostHocFit,
        postprocess: Postprocess,
        region_batch_size: int,
    ) -> None:
        super().__init__()
        self.cnn = cnn
        self.num_classes = num_classes
        self.image_size = image_size
        self.crop_size = crop_size
        self.context = context
        self.search = search
        self.sampling = sampling
        self.post_hoc = post_hoc
        self.postprocess = postprocess
        self.region_batch_size = region_batch_size
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD)[:, None, None], persistent=False)
        classes, dim = num_classes - 1, cnn.feature_dim
        self.register_buffer("svm_weight", torch.zeros(classes, dim))
        self.register_buffer("svm_bias", torch.zeros(classes))
        self.register_buffer("box_regression", torch.zeros(classes, dim + 1, 4))
        self.register_buffer("feature_scale", torch.tensor(1.0))
        self.register_buffer("post_hoc_fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.post_hoc_fitted)

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        proposals: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        check_images(images)
        if self.training:
            check_targets(images, targets, self.num_classes)
            given = resolve_proposals(images, targets, proposals, self.search)
            return {"loss_classifier": self._fine_tune_loss(images, targets, given)}
        given = resolve_proposals(images, None, proposals, self.search)
        return [self._detect(image, boxes) for image, boxes in zip(images, given, strict=True)]

    # --- regions ---------------------------------------------------------------------------

    def to_model_scale(self, image: Tensor) -> tuple[Tensor, float]:
        """The image normalised, its longer side scaled to image_size; and that scale."""
        return to_model_scale(image, self.image_size, self.mean, self.std)

    def region_features(self, scaled: Tensor, regions: Tensor) -> Tensor:
        """(R, D) features of regions (model-scale xyxy) of one normalised, scaled image."""
        if not len(regions):
            return scaled.new_zeros((0, self.cnn.feature_dim))
        return torch.cat(
            [
                self.cnn.features(self._warps(scaled, chunk))
                for chunk in regions.split(self.region_batch_size)
            ]
        )

    def _warps(self, scaled: Tensor, regions: Tensor) -> Tensor:
        # `context` is the share of each side of the warp that shows pixels around the region.
        margin = self.context / (1 - 2 * self.context)
        return warp_with_context(scaled, regions, self.crop_size, margin)

    def _model_scale_regions(self, boxes: Tensor, scale: float, size: tuple[int, int]) -> Tensor:
        boxes = clip_boxes_to_image(boxes * scale, size)
        return boxes[remove_small_boxes(boxes, MIN_REGION_SIDE)]

    # --- stage 1 ---------------------------------------------------------------------------

    def _fine_tune_loss(
        self, images: list[Tensor], targets: list[dict[str, Tensor]], proposals: list[Tensor]
    ) -> Tensor:
        matcher = Matcher(self.sampling.fg_iou_thresh, self.sampling.fg_iou_thresh)
        sampler = BalancedPositiveNegativeSampler(
            self.sampling.rois_per_image, self.sampling.positive_fraction
        )
        crops, labels = [], []
        for image, target, boxes in zip(images, targets, proposals, strict=True):
            scaled, scale = self.to_model_scale(image)
            truths = target["boxes"].to(scaled) * scale
            regions = torch.cat(
                [truths, self._model_scale_regions(boxes, scale, scaled.shape[-2:])]
            )
            region_labels = _fine_tune_labels(matcher, truths, target["labels"], regions)
            (positive,), (negative,) = sampler([region_labels])
            keep = (positive | negative).nonzero().squeeze(1)
            crops.append(self._warps(scaled, regions[keep]))
            labels.append(region_labels[keep])
        logits = self.cnn(torch.cat(crops))
        return F.cross_entropy(logits, torch.cat(labels))

    # --- eval ------------------------------------------------------------------------------

    def _detect(self, image: Tensor, proposals: Tensor) -> dict[str, Tensor]:
        scaled, scale = self.to_model_scale(image)
        regions = self._model_scale_regions(proposals, scale, scaled.shape[-2:])
        features = self.region_features(scaled, regions)
        if self.is_fitted:
            scores, boxes = self._svm_scores_and_boxes(features, regions)
        else:
            scores = self.cnn.classifier(features).softmax(dim=1)[:, 1:]
            boxes = regions[:, None, :].expand(-1, scores.shape[1], -1)
        return self._select(scores, boxes / scale, image.shape[-2:])

    def _svm_scores_and_boxes(self, features: Tensor, regions: Tensor) -> tuple[Tensor, Tensor]:
        scaled = features * self.feature_scale
        scores = torch.sigmoid(scaled @ self.svm_weight.T + self.svm_bias)
        with_bias = torch.cat([scaled, scaled.new_ones((len(scaled), 1))], dim=1)
        deltas = torch.einsum("nd,cdk->nck", with_bias, self.box_regression)
        boxes = PAPER_BOX_CODER.decode_single(deltas.flatten(1), regions)
        return scores, boxes.reshape(len(regions), scores.shape[1], 4)  # R may be 0

    def _select(
        self, scores: Tensor, boxes: Tensor, image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Per-class candidates above the score threshold, per-class NMS, the best kept."""
        classes = scores.shape[1]
        labels = torch.arange(1, classes + 1, device=scores.device).expand_as(scores)
        boxes = clip_boxes_to_image(boxes.reshape(-1, 4), image_size)
        scores, labels = scores.reshape(-1), labels.reshape(-1)
        keep = scores > self.postprocess.score_thresh
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.postprocess.nms_thresh)
        keep = keep[: self.postprocess.detections_per_img]
        return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


def _fine_tune_labels(matcher: Matcher, truths: Tensor, labels: Tensor, regions: Tensor) -> Tensor:
    """A region's label: its best truth's class at IoU >= the foreground threshold, else 0."""
    if not len(truths):
        return torch.zeros(len(regions), dtype=torch.int64, device=regions.device)
    matches = matcher(box_iou(truths, regions))
    region_labels = labels.to(regions.device)[matches.clamp(min=0)]
    region_labels[matches < 0] = 0
    return region_labels


# --- stage 2 ---------------------------------------------------------------------------------


@dataclass
class LabelledRegions:
    """Regions of one image (its truths first, then its proposals) with their best truth.

    `labels` is the class of the truth each region overlaps most (0 when it overlaps none);
    `truth_boxes` that truth (zeros when none). All boxes in the image's own pixels.
    """

    boxes: Tensor
    labels: Tensor
    truth_boxes: Tensor


def label_regions(proposals: Tensor, truth_boxes: Tensor, truth_labels: Tensor) -> LabelledRegions:
    """The stage-2 rows of one image: its truth boxes and proposals, each with its best truth."""
    boxes = torch.cat([truth_boxes.float(), proposals.float()])
    if not len(truth_boxes):
        return LabelledRegions(
            boxes, torch.zeros(len(boxes), dtype=torch.int64), torch.zeros_like(boxes)
        )
    overlaps = box_iou(boxes, truth_boxes.float())
    best, index = overlaps.max(dim=1)
    labels = truth_labels.to(torch.int64)[index]
    labels[best <= 0] = 0
    matched = truth_boxes.float()[index]
    matched[best <= 0] = 0
    return LabelledRegions(boxes, labels, matched)


@torch.no_grad()
def extract_features(model: RCNN, images: Sequence[Tensor], proposals: Sequence[Tensor]) -> Tensor:
    """(sum M_i, D) CNN features of each image's regions (xyxy in its own pixels), in order.

    Runs the CNN in eval mode and restores the model's mode afterwards.
    """
    if len(images) != len(proposals):
        raise ValueError(f"got {len(images)} images but {len(proposals)} region sets")
    was_training = model.training
    model.eval()
    try:
        features = []
        for image, boxes in zip(images, proposals, strict=True):
            scaled, scale = model.to_model_scale(image)
            regions = clip_boxes_to_image(boxes.to(scaled) * scale, scaled.shape[-2:])
            features.append(model.region_features(scaled, regions))
        return torch.cat(features) if features else torch.zeros((0, model.cnn.feature_dim))
    finally:
        model.train(was_training)


@dataclass
class RegionSet:
    """Stage-2 training data: one row per region, ready for `fit_svms_and_regressors`."""

    features: Tensor
    labels: Tensor
    proposal_boxes: Tensor
    truth_boxes: Tensor


def collect_regions(model: RCNN, samples: Iterable[tuple[Tensor, dict[str, Tensor]]]) -> RegionSet:
    """Features and labels of every image's truths and proposals (target "proposals", else
    selective search), e.g. over a training DetectionDataset wrapped with its proposals."""
    rows: list[tuple[Tensor, LabelledRegions]] = []
    for image, target in samples:
        (proposals,) = resolve_proposals([image], [target], None, model.search)
        regions = label_regions(proposals.cpu(), target["boxes"].cpu(), target["labels"].cpu())
        rows.append((extract_features(model, [image], [regions.boxes]).cpu(), regions))
    if not rows:
        raise ValueError("no images to collect stage-2 regions from")
    return RegionSet(
        features=torch.cat([f for f, _ in rows]),
        labels=torch.cat([r.labels for _, r in rows]),
        proposal_boxes=torch.cat([r.boxes for _, r in rows]),
        truth_boxes=torch.cat([r.truth_boxes for _, r in rows]),
    )


@dataclass
class FitReport:
    """What stage 2 saw and reached, per class (index 0 = label 1)."""

    positives: list[int]
    negatives: list[int]
    regression_rows: list[int]
    hinge_loss: float


def fit_svms_and_regressors(
    model: RCNN,
    features: Tensor,
    labels: Tensor,
    proposal_boxes: Tensor,
    truth_boxes: Tensor,
) -> FitReport:
    """Stage 2: fit the per-class SVMs and box regressors into the model's buffers.

    Row i: `features[i]` of the region `proposal_boxes[i]`, whose best truth is `truth_boxes[i]`
    of class `labels[i]` (0: none); `label_regions` builds these rows.
    """
    _check_rows(model, features, labels, proposal_boxes, truth_boxes)
    settings = model.post_hoc
    features = features.detach().float().cpu()
    norms = features.norm(dim=1).mean()
    scale = settings.feature_norm / norms if norms > 0 else torch.tensor(1.0)
    scaled = features * scale
    proposal_boxes, truth_boxes = proposal_boxes.float().cpu(), truth_boxes.float().cpu()
    overlap = _paired_iou(proposal_boxes, truth_boxes)
    labels = labels.cpu()
    classes = torch.arange(1, model.num_classes, dtype=labels.dtype)
    is_class = labels[:, None] == classes[None, :]
    positive = is_class & (overlap[:, None] >= TRUTH_IOU)
    negative = ~is_class | (overlap[:, None] < settings.svm_negative_iou)
    weight, bias, hinge = _fit_svms(scaled, positive, negative, settings)
    regression_rows = is_class & (overlap[:, None] >= settings.regression_iou)
    regression = _fit_regressors(scaled, proposal_boxes, truth_boxes, regression_rows, settings)
    device = model.svm_weight.device
    with torch.no_grad():
        model.feature_scale.copy_(scale.to(device))
        model.svm_weight.copy_(weight.to(device))
        model.svm_bias.copy_(bias.to(device))
        model.box_regression.copy_(regression.to(device))
        model.post_hoc_fitted.fill_(True)
    return FitReport(
        positives=positive.sum(0).tolist(),
        negatives=negative.sum(0).tolist(),
        regression_rows=regression_rows.sum(0).tolist(),
        hinge_loss=hinge,
    )


def _check_rows(
    model: RCNN, features: Tensor, labels: Tensor, proposal_boxes: Tensor, truth_boxes: Tensor
) -> None:
    count = len(features)
    if features.dim() != 2 or features.shape[1] != model.cnn.feature_dim:
        raise ValueError(
            f"features must have shape (N, {model.cnn.feature_dim}), got {tuple(features.shape)}"
        )
    for name, tensor, shape in (
        ("labels", labels, (count,)),
        ("proposal_boxes", proposal_boxes, (count, 4)),
        ("truth_boxes", truth_boxes, (count, 4)),
    ):
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} for {count} rows, got {tuple(tensor.shape)}"
            )
    if count and not (int(labels.min()) >= 0 and int(labels.max()) < model.num_classes):
        raise ValueError(
            f"labels must lie in [0, {model.num_classes - 1}], got {labels.unique().tolist()}"
        )


def _paired_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """IoU of boxes[i] with others[i] (0 where either is empty)."""
    top_left = torch.maximum(boxes[:, :2], others[:, :2])
    bottom_right = torch.minimum(boxes[:, 2:], others[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    union = (
        (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
        + (others[:, 2:] - others[:, :2]).clamp(min=0).prod(dim=1)
        - inter
    )
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _fit_svms(
    features: Tensor, positive: Tensor, negative: Tensor, settings: PostHocFit
) -> tuple[Tensor, Tensor, float]:
    """One-vs-rest linear SVMs for every class at once: weighted hinge loss + L2.

    The hinge loss is not smooth, so (sub)gradient steps with Adam and a cosine-decayed rate,
    from zero (deterministic). Hard negative mining, as the paper: every MINING_INTERVAL steps
    the rows that violate (or nearly violate) a margin are picked from all rows, and the steps
    in between see only those; the others add nothing to the loss or its gradient.
    """
    targets = torch.where(positive, 1.0, torch.where(negative, -1.0, 0.0))  # 0: row not used
    weights = torch.where(positive, settings.svm_positive_weight, 1.0) * (targets != 0)
    weights = weights / weights.sum(dim=0).clamp(min=1.0)  # each class's loss is a mean
    weight = torch.zeros(features.shape[1], positive.shape[1], requires_grad=True)
    bias = torch.zeros(positive.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=settings.svm_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, settings.svm_steps))
    rows = torch.arange(len(features))
    for step in range(settings.svm_steps):
        if step % MINING_INTERVAL == 0:
            with torch.no_grad():
                hard = targets * (features @ weight + bias) < 1 + MINING_SLACK
                rows = (hard & (weights > 0)).any(dim=1).nonzero().squeeze(1)
        hinge = _hinge(features[rows], targets[rows], weights[rows], weight, bias)
        loss = hinge + 0.5 * settings.svm_l2 * weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        hinge = _hinge(features, targets, weights, weight, bias)
    return weight.detach().T.contiguous(), bias.detach(), float(hinge) / positive.shape[1]


def _hinge(
    features: Tensor, targets: Tensor, weights: Tensor, weight: Tensor, bias: Tensor
) -> Tensor:
    """Sum over classes of each class's weighted mean hinge loss."""
    return ((1 - targets * (features @ weight + bias)).clamp(min=0) * weights).sum()


def _fit_regressors(
    features: Tensor,
    proposal_boxes: Tensor,
    truth_boxes: Tensor,
    rows: Tensor,
    settings: PostHocFit,
) -> Tensor:
    """(C, D+1, 4) closed-form ridge maps from features (+ a bias, not penalised) to the
    paper's (tx, ty, tw, th); a class without rows keeps zeros (boxes stay where they are)."""
    with_bias = torch.cat([features, features.new_ones((len(features), 1))], dim=1).double()
    penalty = torch.eye(with_bias.shape[1], dtype=torch.float64) * settings.ridge_lambda
    penalty[-1, -1] = 0.0
    maps = torch.zeros(rows.shape[1], with_bias.shape[1], 4, dtype=torch.float64)
    for index in range(rows.shape[1]):
        chosen = rows[:, index]
        if not chosen.any():
            continue
        x = with_bias[chosen]
        deltas = PAPER_BOX_CODER.encode_single(truth_boxes[chosen], proposal_boxes[chosen])
        deltas = deltas.double()
        maps[index] = torch.linalg.lstsq(x.T @ x + penalty, x.T @ deltas).solution
    return maps.float()


def build(
    num_classes: int,
    *,
    image_size: int = 128,
    crop_size: int = 32,
    context: float = PAPER_CONTEXT,
    width: int = 16,
    stages: int = 3,
    feature_dim: int = 256,
    rois_per_image: int = 32,
    positive_fraction: float = 0.25,
    fg_iou_thresh: float = 0.5,
    svm_negative_iou: float = 0.3,
    svm_positive_weight: float = 2.0,
    svm_l2: float = 1e-3,
    svm_steps: int = 300,
    svm_lr: float = 0.01,
    regression_iou: float = 0.6,
    ridge_lambda: float = 100.0,
    feature_norm: float = 20.0,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.3,
    box_detections_per_img: int = 100,
    proposal_mode: Mode = "fast",
    max_proposals: int = 2000,
    min_proposal_size: int = 4,
    region_batch_size: int = 512,
    weights: str | None = None,
) -> RCNN:
    """Build an R-CNN; `num_classes` counts the background class (label 0)."""
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    if not 0 <= context < 0.5:
        raise ValueError(
            f"context (the fraction of each warp side that shows pixels around the region) "
            f"must lie in [0, 0.5), got {context}"
        )
    model = RCNN(
        RegionCNN(num_classes, crop_size, width, stages, feature_dim),
        num_classes,
        image_size=image_size,
        crop_size=crop_size,
        context=context,
        search=SelectiveSearch(proposal_mode, max_proposals, min_proposal_size, image_size),
        sampling=FineTuneSampling(rois_per_image, positive_fraction, fg_iou_thresh),
        post_hoc=PostHocFit(
            svm_negative_iou,
            svm_positive_weight,
            svm_l2,
            svm_steps,
            svm_lr,
            regression_iou,
            ridge_lambda,
            feature_norm,
        ),
        postprocess=Postprocess(box_score_thresh, box_nms_thresh, box_detections_per_img),
        region_batch_size=region_batch_size,
    )
    load_local_weights(model, weights)
    return model
