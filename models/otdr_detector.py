"""A Faster-R-CNN-like 1-D detector for OTDR events.

One backbone pass over the whole trace (computation shared by every event), then:

* anchors: `anchor_widths` intervals centred on every feature position (multi-scale: a 4-sample
  splice and a 200-sample reflection tail both have a matching anchor);
* RPN: a 3-tap conv, then per position A objectness logits and A (centre, width) deltas;
  proposals are the decoded anchors, top-N by objectness, NMS, top-N again;
* RoI heads: 1-D RoIAlign of each proposal, widened by `roi_context` of its width on each side
  (what follows an event tells a fiber_end from a face_plate), two FC layers, then class logits
  and class-specific interval deltas; per-class NMS on the decoded intervals.

Training matches anchors and proposals to the truth by 1-D IoU (torchvision's Matcher and
balanced sampler) and returns the four Faster R-CNN losses: loss_objectness, loss_rpn_seg_reg,
loss_classifier, loss_seg_reg. Several events per window are natural here: every position has
its own anchors. Segments are in samples; traces are normalised inside (`trace_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher

from sightline.models.local_weights import load_local_weights
from sightline.models.otdr_ops import (
    SegmentCoder,
    anchors_1d,
    batched_nms_1d,
    check_event_targets,
    check_traces,
    interval_iou,
    nms_1d,
    roi_align_1d,
    trace_features,
)
from sightline.models.otdr_window import IN_CHANNELS, conv_block_1d

SMOOTH_L1_BETA = 1 / 9  # as torchvision's R-CNN losses
MIN_SEGMENT_WIDTH = 1.0  # samples; narrower proposals and detections are dropped


class DilatedResidual(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = conv_block_1d(channels, channels, stride=1, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Backbone1d(nn.Module):
    """Strided conv stages (output stride 2**stages), then dilated residual blocks for context."""

    def __init__(self, width: int, stages: int, dilations: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_block_1d(IN_CHANNELS, width, stride=1)]
        ch = width
        for i in range(stages):
            out = width * min(2 ** (i + 1), 4)
            layers += [conv_block_1d(ch, out, stride=2), conv_block_1d(out, out, stride=1)]
            ch = out
        layers += [DilatedResidual(ch, d) for d in dilations]
        self.body = nn.Sequential(*layers)
        self.out_channels = ch
        self.stride = 2**stages

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class RPNHead1d(nn.Module):
    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv1d(channels, num_anchors, 1)
        self.deltas = nn.Conv1d(channels, 2 * num_anchors, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """-> objectness (B, L * A) and deltas (B, L * A, 2), rows position-major."""
        hidden = F.relu(self.conv(features))
        batch, _, length = features.shape
        logits = self.objectness(hidden).permute(0, 2, 1).reshape(batch, -1)
        deltas = self.deltas(hidden).view(batch, -1, 2, length).permute(0, 3, 1, 2)
        return logits, deltas.reshape(batch, -1, 2)


class RoIHead1d(nn.Module):
    def __init__(self, channels: int, pooled: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.cls_score = nn.Linear(hidden, num_classes)
        self.seg_pred = nn.Linear(hidden, 2 * num_classes)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.mlp(pooled)
        return self.cls_score(hidden), self.seg_pred(hidden)


@dataclass(frozen=True)
class ProposalSettings:
    pre_nms_top_n: int
    post_nms_top_n: int
    nms_thresh: float


class OTDRDetector(nn.Module):
    """Backbone + 1-D RPN + 1-D RoI heads; the 1-D detection contract in and out."""

    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 16,
        stages: int = 2,
        dilations: Sequence[int] = (1, 2, 4, 8, 16),
        anchor_widths: Sequence[float] = (4, 8, 16, 32, 64, 128, 256),
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_trace: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_pre_nms_top_n_train: int = 1000,
        rpn_post_nms_top_n_train: int = 300,
        rpn_pre_nms_top_n_test: int = 600,
        rpn_post_nms_top_n_test: int = 150,
        rpn_nms_thresh: float = 0.7,
        roi_output_size: int = 16,
        roi_context: float = 1.0,
        representation_size: int = 128,
        roi_batch_size_per_trace: int = 128,
        roi_positive_fraction: float = 0.25,
        roi_fg_iou_thresh: float = 0.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_trace: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = Backbone1d(width, stages, dilations)
        self.anchor_widths = tuple(float(w) for w in anchor_widths)
        self.rpn = RPNHead1d(self.backbone.out_channels, len(self.anchor_widths))
        self.roi_head = RoIHead1d(
            self.backbone.out_channels, roi_output_size, representation_size, num_classes
        )
        self.roi_output_size = roi_output_size
        self.roi_context = roi_context
        self.rpn_coder = SegmentCoder((1.0, 1.0))
        self.roi_coder = SegmentCoder((10.0, 5.0))
        self.rpn_matcher = Matcher(rpn_fg_iou_thresh, rpn_bg_iou_thresh, True)
        self.rpn_sampler = BalancedPositiveNegativeSampler(
            rpn_batch_size_per_trace, rpn_positive_fraction
        )
        self.roi_matcher = Matcher(roi_fg_iou_thresh, roi_fg_iou_thresh, False)
        self.roi_sampler = BalancedPositiveNegativeSampler(
            roi_batch_size_per_trace, roi_positive_fraction
        )
        self.train_proposals = ProposalSettings(
            rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train, rpn_nms_thresh
        )
        self.test_proposals = ProposalSettings(
            rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test, rpn_nms_thresh
        )
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_trace = detections_per_trace

    def forward(
        self, traces: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        flats = check_traces(traces)
        checked = check_event_targets(flats, targets, self.num_classes) if self.training else []
        lengths = [len(t) for t in flats]
        features = self.backbone(self._batch(flats))
        logits, deltas = self.rpn(features)
        anchors = anchors_1d(features.shape[2], self.backbone.stride, self.anchor_widths).to(
            features.device
        )
        settings = self.train_proposals if self.training else self.test_proposals
        proposals = [
            self._proposals(anchors, logits[b].detach(), deltas[b].detach(), lengths[b], settings)
            for b in range(len(flats))
        ]
        if not self.training:
            return self._detect(features, proposals, lengths)
        losses = self._rpn_losses(anchors, logits, deltas, checked, lengths)
        losses.update(self._roi_losses(features, proposals, checked))
        return losses

    def _batch(self, traces: list[Tensor]) -> Tensor:
        """(B, 2, L) features, zero-padded to a common length that is a multiple of the stride."""
        stride = self.backbone.stride
        padded = -(-max(len(t) for t in traces) // stride) * stride
        return torch.stack([F.pad(trace_features(t), (0, padded - len(t))) for t in traces])

    def _proposals(
        self,
        anchors: Tensor,
        logits: Tensor,
        deltas: Tensor,
        length: int,
        settings: ProposalSettings,
    ) -> Tensor:
        inside = anchors.mean(dim=1) < length
        logits, deltas, anchors = logits[inside], deltas[inside], anchors[inside]
        top = logits.topk(min(settings.pre_nms_top_n, len(logits))).indices
        segments = self.rpn_coder.decode(deltas[top], anchors[top]).clamp(0, length)
        scores = logits[top]
        wide = (segments[:, 1] - segments[:, 0]) >= MIN_SEGMENT_WIDTH
        segments, scores = segments[wide], scores[wide]
        keep = nms_1d(segments, scores, settings.nms_thresh)[: settings.post_nms_top_n]
        return segments[keep]

    def _match(
        self, matcher: Matcher, candidates: Tensor, target: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Per candidate: matched truth index (clamped) and label (>0 fg, 0 bg, -1 ignore)."""
        if len(target["segments"]) == 0:
            zeros = torch.zeros(len(candidates), dtype=torch.long, device=candidates.device)
            return zeros, zeros
        matched = matcher(interval_iou(target["segments"], candidates))
        labels = target["labels"][matched.clamp(min=0)].clone()
        labels[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
        labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1
        return matched.clamp(min=0), labels

    def _rpn_losses(
        self,
        anchors: Tensor,
        logits: Tensor,
        deltas: Tensor,
        targets: list[dict[str, Tensor]],
        lengths: list[int],
    ) -> dict[str, Tensor]:
        labels, regression = [], []
        for target, length in zip(targets, lengths, strict=True):
            matched, anchor_labels = self._match(self.rpn_matcher, anchors, target)
            anchor_labels = (anchor_labels > 0).long() - (anchor_labels < 0).long()
            anchor_labels[anchors.mean(dim=1) >= length] = -1  # padding: neither fg nor bg
            labels.append(anchor_labels)
            truth = target["segments"][matched] if len(target["segments"]) else anchors
            regression.append(self.rpn_coder.encode(truth, anchors))
        positive, negative = self.rpn_sampler(labels)
        positive_mask, negative_mask = torch.stack(positive).bool(), torch.stack(negative).bool()
        sampled = positive_mask | negative_mask
        objectness = F.binary_cross_entropy_with_logits(
            logits[sampled], positive_mask[sampled].float()
        )
        seg_reg = F.smooth_l1_loss(
            deltas[positive_mask],
            torch.stack(regression)[positive_mask],
            beta=SMOOTH_L1_BETA,
            reduction="sum",
        ) / sampled.sum().clamp(min=1)
        return {"loss_objectness": objectness, "loss_rpn_seg_reg": seg_reg}

    def _roi_losses(
        self,
        features: Tensor,
        proposals: list[Tensor],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        rois, labels, regression = [], [], []
        for candidates, target in zip(proposals, targets, strict=True):
            candidates = torch.cat([candidates, target["segments"]])
            matched, roi_labels = self._match(self.roi_matcher, candidates, target)
            positive, negative = self.roi_sampler([roi_labels])
            keep = (positive[0] | negative[0]).bool().nonzero().squeeze(1)
            rois.append(candidates[keep])
            labels.append(roi_labels[keep])
            truth = target["segments"][matched[keep]] if len(target["segments"]) else rois[-1]
            regression.append(self.roi_coder.encode(truth, candidates[keep]))
        class_logits, seg_deltas = self._classify(features, rois)
        roi_labels = torch.cat(labels)
        classifier = F.cross_entropy(class_logits, roi_labels)
        foreground = (roi_labels > 0).nonzero().squeeze(1)
        class_deltas = seg_deltas.view(len(seg_deltas), -1, 2)[foreground, roi_labels[foreground]]
        seg_reg = F.smooth_l1_loss(
            class_deltas,
            torch.cat(regression)[foreground],
            beta=SMOOTH_L1_BETA,
            reduction="sum",
        ) / max(1, len(roi_labels))
        return {"loss_classifier": classifier, "loss_seg_reg": seg_reg}

    def _classify(self, features: Tensor, rois: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits (K, C) and deltas (K, 2C) for the RoIs of every trace, in order."""
        batch_index = torch.cat(
            [torch.full((len(r), 1), float(b), device=features.device) for b, r in enumerate(rois)]
        )
        segments = torch.cat(rois)
        margin = self.roi_context * (segments[:, 1:] - segments[:, :1])
        widened = torch.cat([segments[:, :1] - margin, segments[:, 1:] + margin], dim=1)
        pooled = roi_align_1d(
            features,
            torch.cat([batch_index, widened], dim=1),
            self.roi_output_size,
            1.0 / self.backbone.stride,
        )
        return self.roi_head(pooled)

    def _detect(
        self, features: Tensor, proposals: list[Tensor], lengths: list[int]
    ) -> list[dict[str, Tensor]]:
        class_logits, seg_deltas = self._classify(features, proposals)
        scores = class_logits.softmax(dim=1)
        counts = [len(p) for p in proposals]
        results = []
        for b, (trace_scores, trace_deltas) in enumerate(
            zip(scores.split(counts), seg_deltas.split(counts), strict=True)
        ):
            results.append(self._postprocess(trace_scores, trace_deltas, proposals[b], lengths[b]))
        return results

    def _postprocess(
        self, scores: Tensor, deltas: Tensor, proposals: Tensor, length: int
    ) -> dict[str, Tensor]:
        segments = self.roi_coder.decode(deltas, proposals).view(len(proposals), scores.shape[1], 2)
        segments = segments.clamp(0, length)[:, 1:].reshape(-1, 2)
        classes = torch.arange(1, self.num_classes, device=scores.device)
        labels = classes.repeat(len(proposals))
        scores = scores[:, 1:].reshape(-1)
        keep = (scores > self.score_thresh) & (
            (segments[:, 1] - segments[:, 0]) >= MIN_SEGMENT_WIDTH
        )
        segments, scores, labels = segments[keep], scores[keep], labels[keep]
        kept = batched_nms_1d(segments, scores, labels, self.nms_thresh)
        kept = kept[: self.detections_per_trace]
        return {"segments": segments[kept], "labels": labels[kept], "scores": scores[kept]}


def build(num_classes: int, *, weights: str | None = None, **hparams: Any) -> OTDRDetector:
    """Build the 1-D detector; `num_classes` counts "no event" (label 0).

    `hparams` are OTDRDetector's keyword arguments (params.yaml `models.otdr_detector`).
    """
    model = OTDRDetector(num_classes, **hparams)
    load_local_weights(model, weights)
    return model
