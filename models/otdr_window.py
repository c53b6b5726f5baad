"""The OTDR baseline: a 1-D CNN that classifies fixed windows of a trace.

The trace is cut into windows of `window` samples every `stride` samples (one more window is
added so the last samples are covered). Each window is classified as one of the event types or
"no event" (label 0). In training, a window takes the type of the event whose centre lies in it
(the one nearest the window's centre when several do); one cross-entropy is the loss.

In eval, every window whose most likely class is an event is reported as one event of that
class, centred on the window's centre, `reported_width` samples wide, scored by that class's
probability. This is the seed's baseline and its weaknesses are kept on purpose: a position no
better than the window grid, one event per window however many it holds, and overlapping
windows reporting the same event more than once (no NMS).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sightline.models.local_weights import load_local_weights
from sightline.models.otdr_ops import check_event_targets, check_traces, trace_features

IN_CHANNELS = 2  # trace_features: level and slope


def conv_block_1d(in_ch: int, out_ch: int, stride: int, dilation: int = 1) -> nn.Sequential:
    # GroupNorm: batches are a handful of traces (or windows of one trace).
    return nn.Sequential(
        nn.Conv1d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(min(8, out_ch), out_ch),
        nn.ReLU(inplace=True),
    )


class WindowClassifier(nn.Module):
    """(N, 2, window) -> (N, num_classes) logits: strided conv stages, max+mean pooling, MLP."""

    def __init__(self, num_classes: int, width: int, stages: int, hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = IN_CHANNELS
        for i in range(stages):
            out = width * min(2**i, 4)
            layers += [conv_block_1d(ch, out, stride=2), conv_block_1d(out, out, stride=1)]
            ch = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(2 * ch, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, windows: Tensor) -> Tensor:
        features = self.body(windows)
        pooled = torch.cat([features.amax(dim=2), features.mean(dim=2)], dim=1)
        return self.head(pooled)


class OTDRWindow(nn.Module):
    """Fixed-window classification over a trace; the 1-D detection contract in and out."""

    def __init__(
        self,
        num_classes: int,
        *,
        window: int = 300,
        stride: int = 150,
        width: int = 16,
        stages: int = 4,
        hidden: int = 128,
        reported_width: float = 32.0,
        background_weight: float = 1.0,
        windows_per_batch: int = 512,
    ) -> None:
        super().__init__()
        if window < 8 or stride < 1:
            raise ValueError(
                f"otdr_window needs window >= 8 and stride >= 1, got {window}, {stride}"
            )
        self.num_classes = num_classes
        self.window = window
        self.stride = stride
        self.reported_width = reported_width
        self.windows_per_batch = windows_per_batch
        self.classifier = WindowClassifier(num_classes, width, stages, hidden)
        class_weights = torch.ones(num_classes)
        class_weights[0] = background_weight
        self.register_buffer("class_weights", class_weights)

    def window_starts(self, length: int, device: torch.device | None = None) -> Tensor:
        """First sample of every window over a trace of `length` samples (covers the end)."""
        last = max(length - self.window, 0)
        starts = list(range(0, last + 1, self.stride))
        if starts[-1] != last:
            starts.append(last)
        return torch.tensor(starts, device=device)

    def _windows(self, trace: Tensor) -> tuple[Tensor, Tensor]:
        features = trace_features(trace)
        if features.shape[1] < self.window:  # short traces: repeat the last sample
            features = F.pad(features, (0, self.window - features.shape[1]), mode="replicate")
        starts = self.window_starts(len(trace), trace.device)
        index = starts[:, None] + torch.arange(self.window, device=trace.device)[None, :]
        return features[:, index].permute(1, 0, 2), starts  # (W, 2, window)

    def window_labels(self, starts: Tensor, segments: Tensor, labels: Tensor) -> Tensor:
        """Each window's class: the event centred in it nearest its centre, else 0."""
        if len(segments) == 0:
            return torch.zeros(len(starts), dtype=torch.long)
        event_centres = segments.mean(dim=1)[None, :]
        first = starts.float()[:, None]
        inside = (event_centres >= first) & (event_centres < first + self.window)
        distance = (event_centres - (first + self.window / 2)).abs()
        nearest = distance.masked_fill(~inside, float("inf")).argmin(dim=1)
        return torch.where(inside.any(dim=1), labels[nearest], torch.zeros_like(nearest))

    def forward(
        self, traces: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        flats = check_traces(traces)
        if self.training:
            checked = check_event_targets(flats, targets, self.num_classes)
            return self._losses(flats, checked)
        return [self._detect(trace) for trace in flats]

    def _losses(self, traces: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        windows, labels = [], []
        for trace, target in zip(traces, targets, strict=True):
            trace_windows, starts = self._windows(trace)
            windows.append(trace_windows)
            labels.append(self.window_labels(starts, target["segments"], target["labels"]))
        logits = self.classifier(torch.cat(windows))
        target_labels = torch.cat(labels).to(logits.device)
        loss = F.cross_entropy(logits, target_labels, weight=self.class_weights)
        return {"loss_classifier": loss}

    def _detect(self, trace: Tensor) -> dict[str, Tensor]:
        windows, starts = self._windows(trace)
        probs = torch.cat(
            [
                self.classifier(chunk).softmax(dim=1)
                for chunk in windows.split(self.windows_per_batch)
            ]
        )
        scores, labels = probs.max(dim=1)
        positive = labels > 0
        centres = starts[positive].float() + self.window / 2
        half = self.reported_width / 2
        segments = torch.stack([centres - half, centres + half], dim=1).clamp(0, len(trace))
        return {"segments": segments, "labels": labels[positive], "scores": scores[positive]}


def build(num_classes: int, *, weights: str | None = None, **hparams: Any) -> OTDRWindow:
    """Build the window baseline; `num_classes` counts "no event" (label 0).

    `hparams` are OTDRWindow's keyword arguments (params.yaml `models.otdr_window`).
    """
    model = OTDRWindow(num_classes, **hparams)
    load_local_weights(model, weights)
    return model
