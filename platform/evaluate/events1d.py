"""Metrics for 1-D event detectors (OTDR): AP at interval IoU 0.5, localisation, false alarms.

* `ap_50_<type>`: VOC-style average precision of one event type at 1-D IoU >= 0.5, all-point
  interpolated. Predictions of the type, over all traces, are taken by falling score; each is a
  true positive when it overlaps a not-yet-matched truth of its type in its trace at IoU >= 0.5
  (the best such truth), else a false positive. A type with no truths gets -1 (undefined, as
  pycocotools marks it) and is left out of `map_50`, the mean over types.
* At the operating point (score >= `score_threshold`):
  `loc_err_m_median`, `loc_err_m_rmse`: |predicted start - true start| in metres over the true
  positives (NaN when there are none: no error to report, and no number that looks good);
  `false_alarms_per_km`: the other predictions (wrong place, wrong type or a duplicate) per km
  of trace.
Segments are (start, end) in samples; each trace's resolution turns samples into metres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sightline.data.otdr import EVENT_TYPES, LABEL_OF_TYPE

UNDEFINED_AP = -1.0


@dataclass(frozen=True)
class _Events:
    segments: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,)
    scores: np.ndarray  # (N,), ones for truths


@dataclass(frozen=True)
class _Matches:
    """Per trace, per prediction: the matched truth index, or -1 for a false positive."""

    truth_of_prediction: list[np.ndarray]


def evaluate_events(
    truths: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
    resolutions_m: Sequence[float],
    trace_lengths_m: Sequence[float],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> dict[str, float]:
    """Metrics over a set of traces; the i-th truth, prediction, resolution and length match."""
    counts = {len(truths), len(predictions), len(resolutions_m), len(trace_lengths_m)}
    if len(counts) != 1:
        raise ValueError(
            f"evaluate_events needs one entry per trace in each argument, got {len(truths)} "
            f"truths, {len(predictions)} predictions, {len(resolutions_m)} resolutions and "
            f"{len(trace_lengths_m)} lengths"
        )
    truth_events = [_events(t, "truths", i, with_scores=False) for i, t in enumerate(truths)]
    predicted = [_events(p, "predictions", i, with_scores=True) for i, p in enumerate(predictions)]
    matches = _match(truth_events, predicted, iou_threshold)
    metrics: dict[str, float] = {}
    defined = []
    for name in EVENT_TYPES:
        ap = _average_precision(truth_events, predicted, matches, LABEL_OF_TYPE[name])
        metrics[f"ap_50_{name}"] = ap
        if ap != UNDEFINED_AP:
            defined.append(ap)
    metrics["map_50"] = float(np.mean(defined)) if defined else UNDEFINED_AP
    metrics.update(
        _operating_point(
            truth_events, predicted, matches, resolutions_m, trace_lengths_m, score_threshold
        )
    )
    return metrics


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _events(raw: Mapping[str, Any], name: str, index: int, *, with_scores: bool) -> _Events:
    fields = ("segments", "labels", "scores") if with_scores else ("segments", "labels")
    for field in fields:
        if field not in raw:
            raise ValueError(f"{name}[{index}] has no {field!r}")
    segments = _array(raw["segments"]).astype(np.float64).reshape(-1, 2)
    labels = _array(raw["labels"]).astype(np.int64).reshape(-1)
    scores = (
        _array(raw["scores"]).astype(np.float64).reshape(-1)
        if with_scores
        else np.ones(len(labels))
    )
    if not len(segments) == len(labels) == len(scores):
        raise ValueError(
            f"{name}[{index}]: {len(segments)} segments, {len(labels)} labels and "
            f"{len(scores)} scores do not match"
        )
    return _Events(segments, labels, scores)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])
    inter = np.clip(inter, 0, None)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(truths: list[_Events], predictions: list[_Events], iou_threshold: float) -> _Matches:
    """Greedy by falling score within each trace and type; truths match at most once."""
    result = []
    for truth, predicted in zip(truths, predictions, strict=True):
        matched = np.full(len(predicted.labels), -1, dtype=np.int64)
        taken = np.zeros(len(truth.labels), dtype=bool)
        ious = _iou(predicted.segments, truth.segments)
        for p in np.argsort(-predicted.scores, kind="stable"):
            candidates = (truth.labels == predicted.labels[p]) & ~taken
            candidates &= ious[p] >= iou_threshold
            if candidates.any():
                best = int(np.argmax(np.where(candidates, ious[p], -1.0)))
                matched[p], taken[best] = best, True
        result.append(matched)
    return _Matches(result)


def _average_precision(
    truths: list[_Events], predictions: list[_Events], matches: _Matches, label: int
) -> float:
    total = sum(int((t.labels == label).sum()) for t in truths)
    if total == 0:
        return UNDEFINED_AP
    scores, hits = [], []
    for predicted, matched in zip(predictions, matches.truth_of_prediction, strict=True):
        of_type = predicted.labels == label
        scores.append(predicted.scores[of_type])
        hits.append(matched[of_type] >= 0)
    order = np.argsort(-np.concatenate(scores), kind="stable")
    hit = np.concatenate(hits)[order]
    true_positives, false_positives = np.cumsum(hit), np.cumsum(~hit)
    recall = true_positives / total
    precision = true_positives / np.maximum(true_positives + false_positives, 1)
    return _all_point_ap(recall, precision)


def _all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC 2010+ all-point interpolation)."""
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _operating_point(
    truths: list[_Events],
    predictions: list[_Events],
    matches: _Matches,
    resolutions_m: Sequence[float],
    trace_lengths_m: Sequence[float],
    score_threshold: float,
) -> dict[str, float]:
    errors_m: list[np.ndarray] = []
    false_alarms = 0
    for truth, predicted, matched, resolution in zip(
        truths, predictions, matches.truth_of_prediction, resolutions_m, strict=True
    ):
        reported = predicted.scores >= score_threshold
        hit = reported & (matched >= 0)
        false_alarms += int((reported & (matched < 0)).sum())
        shift = predicted.segments[hit, 0] - truth.segments[matched[hit], 0]
        errors_m.append(np.abs(shift) * float(resolution))
    errors = np.concatenate(errors_m) if errors_m else np.zeros(0)
    total_km = float(np.sum(trace_lengths_m)) / 1000
    return {
        "loc_err_m_median": float(np.median(errors)) if errors.size else float("nan"),
        "loc_err_m_rmse": float(np.sqrt(np.mean(errors**2))) if errors.size else float("nan"),
        "false_alarms_per_km": false_alarms / total_km if total_km > 0 else float("nan"),
    }
