"""1-D detection operations for OTDR event detectors: intervals instead of boxes.

Segments are (start, end) in samples, end exclusive, like xyxy boxes in pixels. NMS and
RoIAlign lift a segment to a box one unit high so torchvision's kernels do the work: the IoU of
two such boxes equals the IoU of their intervals.

The 1-D contract (DESIGN.md): a trace is a float tensor (L,) or (1, L) of dB samples; a target
is {"segments": (N, 2) float samples, "labels": (N,) int64 in 1..num_classes-1}; label 0 is
"no event". `check_traces` / `check_event_targets` turn contract violations into ValueErrors
that name `traces[i]` or `targets[i][field]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms, roi_align

DEFAULT_DELTA_CLAMP = math.log(1000.0 / 16)  # as torchvision's BoxCoder: no exp overflow


def interval_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every segment in `a` (N, 2) with every segment in `b` (M, 2) -> (N, M)."""
    inter = torch.min(a[:, None, 1], b[None, :, 1]) - torch.max(a[:, None, 0], b[None, :, 0])
    inter = inter.clamp(min=0)
    widths_a = (a[:, 1] - a[:, 0]).clamp(min=0)
    widths_b = (b[:, 1] - b[:, 0]).clamp(min=0)
    union = widths_a[:, None] + widths_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def segments_as_boxes(segments: Tensor) -> Tensor:
    """(N, 2) segments -> (N, 4) xyxy boxes one unit high."""
    zeros, ones = torch.zeros_like(segments[:, :1]), torch.ones_like(segments[:, :1])
    return torch.cat([segments[:, :1], zeros, segments[:, 1:], ones], dim=1)


def nms_1d(segments: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices of the segments kept by greedy NMS, highest score first."""
    return nms(segments_as_boxes(segments.float()), scores.float(), iou_threshold)


def batched_nms_1d(
    segments: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float
) -> Tensor:
    """NMS within each group (class or trace) separately; indices sorted by score."""
    return batched_nms(segments_as_boxes(segments.float()), scores.float(), groups, iou_threshold)


def anchors_1d(length: int, stride: float, widths: Sequence[float]) -> Tensor:
    """(length * A, 2) anchors: A widths centred on each of `length` feature positions.

    Position i covers samples [i * stride, (i + 1) * stride) and its anchors are centred at
    (i + 0.5) * stride; rows are position-major (all widths of position 0, then position 1...).
    """
    centres = (torch.arange(length, dtype=torch.float32) + 0.5) * stride
    half = torch.as_tensor(widths, dtype=torch.float32) / 2
    return torch.stack([centres[:, None] - half, centres[:, None] + half], dim=2).reshape(-1, 2)


def roi_align_1d(
    features: Tensor,
    rois: Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 2,
) -> Tensor:
    """Pool `features` (B, C, L) over `rois` (K, 3) [batch index, start, end] -> (K, C, out).

    Sample coordinates are continuous (aligned=True): feature i covers [i, i + 1) at
    `spatial_scale` times the segment's units, like torchvision's RoIAlign.
    """
    height = 1.0 / spatial_scale  # a box exactly one feature row high
    boxes = torch.stack(
        [
            rois[:, 0],
            rois[:, 1],
            torch.zeros_like(rois[:, 0]),
            rois[:, 2],
            torch.full_like(rois[:, 0], height),
        ],
        dim=1,
    )
    pooled = roi_align(
        features[:, :, None, :],
        boxes.to(features.dtype),
        output_size=(1, output_size),
        spatial_scale=spatial_scale,
        sampling_ratio=sampling_ratio,
        aligned=True,
    )
    return pooled[:, :, 0, :]


class SegmentCoder:
    """Encodes segments as (centre, width) deltas against reference segments, and back.

    dx = wx * (c - c_ref) / w_ref, dw = ww * log(w / w_ref), as Faster R-CNN's box coder in 1-D.
    """

    def __init__(
        self, weights: tuple[float, float] = (1.0, 1.0), clamp: float = DEFAULT_DELTA_CLAMP
    ) -> None:
        self.weights = weights
        self.clamp = clamp

    def encode(self, targets: Tensor, references: Tensor) -> Tensor:
        ref_centre, ref_width = _centre_width(references)
        centre, width = _centre_width(targets)
        wx, ww = self.weights
        return torch.stack(
            [wx * (centre - ref_centre) / ref_width, ww * torch.log(width / ref_width)], dim=1
        )

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """`deltas` (N, 2) or (N, 2 * K) for K classes -> segments of the same shape."""
        ref_centre, ref_width = _centre_width(references)
        wx, ww = self.weights
        dx = deltas[:, 0::2] / wx
        dw = (deltas[:, 1::2] / ww).clamp(max=self.clamp)
        centre = dx * ref_width[:, None] + ref_centre[:, None]
        width = torch.exp(dw) * ref_width[:, None]
        segments = torch.stack([centre - width / 2, centre + width / 2], dim=2)
        return segments.reshape(deltas.shape)


def _centre_width(segments: Tensor) -> tuple[Tensor, Tensor]:
    width = (segments[:, 1] - segments[:, 0]).clamp(min=1e-6)
    return segments[:, 0] + width / 2, width


def trace_features(trace: Tensor) -> Tensor:
    """(L,) dB -> (2, L): the per-trace standardised level and its compressed derivative.

    The derivative is scaled by its median absolute deviation (the backscatter's noise, since
    most samples lie on plain fibre) and squashed with asinh, so a 0.05 dB splice and a 30 dB
    drop into the noise floor both stay in a range a small network can use.
    """
    level = (trace - trace.mean()) / trace.std().clamp(min=1e-6)
    slope = torch.diff(trace, prepend=trace[:1])
    spread = (slope - slope.median()).abs().median().clamp(min=1e-4)
    return torch.stack([level, torch.asinh(slope / (1.4826 * spread))])


def as_trace(trace: Any, index: int) -> Tensor:
    """A contract trace ((L,) or (1, L) float tensor) as (L,) float32."""
    if not isinstance(trace, Tensor) or trace.dim() not in (1, 2):
        shape = tuple(trace.shape) if isinstance(trace, Tensor) else type(trace).__name__
        raise ValueError(f"traces[{index}] must be a float tensor (L,) or (1, L), got {shape}")
    if trace.dim() == 2 and trace.shape[0] != 1:
        raise ValueError(f"traces[{index}] must be (L,) or (1, L), got {tuple(trace.shape)}")
    flat = trace.reshape(-1).float()
    if flat.numel() < 2:
        raise ValueError(f"traces[{index}] needs at least 2 samples, got {flat.numel()}")
    if not torch.isfinite(flat).all():
        raise ValueError(f"traces[{index}] holds NaN or infinite samples")
    return flat


def check_traces(traces: Any) -> list[Tensor]:
    """The traces of a call as (L,) float32 tensors; bad ones raise naming traces[i]."""
    if not isinstance(traces, list | tuple) or not traces:
        raise ValueError("traces must be a non-empty list of (L,) or (1, L) float tensors")
    return [as_trace(trace, index) for index, trace in enumerate(traces)]


def check_event_targets(
    traces: Sequence[Tensor], targets: Any, num_classes: int
) -> list[dict[str, Tensor]]:
    """Check training targets against the 1-D contract; errors name targets[i][field]."""
    if targets is None:
        raise ValueError("in training mode the model needs targets (segments and labels)")
    if len(targets) != len(traces):
        raise ValueError(f"got {len(traces)} traces but {len(targets)} targets")
    checked = []
    for index, (trace, target) in enumerate(zip(traces, targets, strict=True)):
        where = f"targets[{index}]"
        for field in ("segments", "labels"):
            if not isinstance(target.get(field) if isinstance(target, dict) else None, Tensor):
                raise ValueError(f"{where}[{field!r}] is missing or not a tensor")
        segments, labels = target["segments"].float(), target["labels"].long()
        if segments.dim() != 2 or segments.shape[1] != 2 or labels.shape != (len(segments),):
            raise ValueError(
                f"{where}: segments must be (N, 2) and labels (N,), got "
                f"{tuple(segments.shape)} and {tuple(labels.shape)}"
            )
        if len(segments) and not bool((segments[:, 1] > segments[:, 0]).all()):
            raise ValueError(f"{where}['segments'] holds a segment with end <= start")
        if len(segments) and not bool(
            (segments[:, 0] >= 0).all() and (segments[:, 1] <= len(trace)).all()
        ):
            raise ValueError(
                f"{where}['segments'] reaches outside the trace's {len(trace)} samples"
            )
        if len(labels) and not (int(labels.min()) >= 1 and int(labels.max()) < num_classes):
            raise ValueError(
                f"{where}['labels'] must lie in [1, {num_classes - 1}] (0 is no event), "
                f"got {labels.tolist()}"
            )
        checked.append({"segments": segments, "labels": labels})
    return checked
