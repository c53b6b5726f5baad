"""The 1-D event evaluator on hand-made cases: AP at IoU 0.5, localisation error, false alarms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sightline.data.otdr import EVENT_TYPES
from sightline.evaluate.events1d import evaluate_events

FACE_PLATE, PASS_THROUGH, FIBER_CUT, FIBER_END = 1, 2, 3, 4
RESOLUTION = 0.5  # metres per sample
LENGTH_M = 1000.0  # each trace is 1 km


def truth(segments: list[list[float]], labels: list[int]) -> dict[str, np.ndarray]:
    return {"segments": np.array(segments, dtype=float).reshape(-1, 2), "labels": np.array(labels)}


def prediction(
    segments: list[list[float]], labels: list[int], scores: list[float]
) -> dict[str, np.ndarray]:
    return {**truth(segments, labels), "scores": np.array(scores, dtype=float)}


def evaluate(truths: list[dict], predictions: list[dict], **kwargs: float) -> dict[str, float]:
    n = len(truths)
    return evaluate_events(truths, predictions, [RESOLUTION] * n, [LENGTH_M] * n, **kwargs)


TRUTHS = [
    truth([[100, 120], [400, 430], [900, 960]], [FACE_PLATE, PASS_THROUGH, FIBER_END]),
    truth([[50, 70], [700, 740]], [PASS_THROUGH, FIBER_CUT]),
]


def perfect() -> list[dict[str, np.ndarray]]:
    return [{**t, "scores": np.full(len(t["labels"]), 0.9)} for t in TRUTHS]


def test_perfect_predictions_score_one_with_no_error_or_false_alarm() -> None:
    metrics = evaluate(TRUTHS, perfect())
    assert metrics["map_50"] == 1.0
    assert all(metrics[f"ap_50_{name}"] == 1.0 for name in EVENT_TYPES)
    assert metrics["loc_err_m_median"] == 0.0 and metrics["loc_err_m_rmse"] == 0.0
    assert metrics["false_alarms_per_km"] == 0.0


@pytest.mark.parametrize("shift", [1, 3])
def test_a_shift_of_k_samples_is_a_localisation_error_of_k_resolutions(shift: int) -> None:
    shifted = [{**p, "segments": p["segments"] + shift} for p in perfect()]
    metrics = evaluate(TRUTHS, shifted)
    assert metrics["map_50"] == 1.0  # still IoU >= 0.5 for 20-60 sample events
    assert metrics["loc_err_m_median"] == pytest.approx(shift * RESOLUTION)
    assert metrics["loc_err_m_rmse"] == pytest.approx(shift * RESOLUTION)


def test_rmse_and_median_differ_on_mixed_errors() -> None:
    predictions = perfect()
    predictions[0]["segments"] = predictions[0]["segments"] + np.array([[0], [2], [4]])
    metrics = evaluate(TRUTHS, predictions)
    errors = np.array([0, 2, 4, 0, 0]) * RESOLUTION
    assert metrics["loc_err_m_median"] == pytest.approx(np.median(errors))
    assert metrics["loc_err_m_rmse"] == pytest.approx(math.sqrt(np.mean(errors**2)))


def test_average_precision_uses_all_point_interpolation() -> None:
    truths = [truth([[0, 10], [100, 110]], [FACE_PLATE, FACE_PLATE])]
    # By score: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    predictions = [prediction([[0, 10], [50, 60], [100, 110]], [FACE_PLATE] * 3, [0.9, 0.8, 0.7])]
    metrics = evaluate(truths, predictions)
    assert metrics["ap_50_face_plate"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert metrics["map_50"] == pytest.approx(metrics["ap_50_face_plate"])


def test_types_without_truths_are_undefined_and_left_out_of_the_mean() -> None:
    truths = [truth([[0, 10]], [PASS_THROUGH])]
    metrics = evaluate(truths, [prediction([[0, 10]], [PASS_THROUGH], [0.9])])
    assert metrics["ap_50_pass_through"] == 1.0
    assert metrics["ap_50_face_plate"] == metrics["ap_50_fiber_end"] == -1.0
    assert metrics["map_50"] == 1.0


def test_the_wrong_type_or_too_little_overlap_is_no_match() -> None:
    truths = [truth([[0, 20], [100, 120]], [FACE_PLATE, PASS_THROUGH])]
    predictions = [
        prediction([[0, 20], [111, 131]], [PASS_THROUGH, PASS_THROUGH], [0.9, 0.8])
    ]  # wrong type; IoU 9/31 < 0.5
    metrics = evaluate(truths, predictions)
    assert metrics["map_50"] == 0.0
    assert math.isnan(metrics["loc_err_m_median"]) and math.isnan(metrics["loc_err_m_rmse"])
    assert metrics["false_alarms_per_km"] == pytest.approx(2.0)


def test_duplicates_and_spurious_events_are_false_alarms_per_km() -> None:
    predictions = perfect()
    predictions[1] = prediction(
        [[50, 70], [51, 71], [700, 740], [300, 320]],
        [PASS_THROUGH, PASS_THROUGH, FIBER_CUT, FACE_PLATE],
        [0.9, 0.8, 0.9, 0.7],
    )
    metrics = evaluate(TRUTHS, predictions)
    assert metrics["false_alarms_per_km"] == pytest.approx(2 / 2.0)  # two over 2 km
    assert metrics["ap_50_pass_through"] == 1.0  # the duplicate ranks after the true positive


def test_the_score_threshold_sets_the_operating_point() -> None:
    predictions = perfect()
    predictions[0]["scores"] = np.array([0.9, 0.3, 0.9])
    predictions[1] = prediction([[50, 70], [700, 740], [300, 320]], [2, 3, 1], [0.9, 0.9, 0.2])
    metrics = evaluate(TRUTHS, predictions, score_threshold=0.5)
    assert metrics["false_alarms_per_km"] == 0.0  # the spurious event scores 0.2
    assert metrics["map_50"] == 1.0  # AP ranks it below every true face_plate
    assert evaluate(TRUTHS, predictions, score_threshold=0.1)["false_alarms_per_km"] == 0.5


def test_tensors_are_accepted() -> None:
    truths = [{k: torch.as_tensor(v) for k, v in t.items()} for t in TRUTHS]
    predictions = [{k: torch.as_tensor(v) for k, v in p.items()} for p in perfect()]
    assert evaluate(truths, predictions)["map_50"] == 1.0


def test_missing_fields_and_mismatched_lengths_are_reported() -> None:
    with pytest.raises(ValueError, match=r"predictions\[0\] has no 'scores'"):
        evaluate(TRUTHS[:1], [truth([[0, 1]], [1])])
    with pytest.raises(ValueError, match="one entry per trace"):
        evaluate_events(TRUTHS, perfect(), [RESOLUTION], [LENGTH_M, LENGTH_M])
    with pytest.raises(ValueError, match=r"predictions\[0\]: 1 segments, 2 labels"):
        evaluate(TRUTHS[:1], [prediction([[0, 1]], [1, 2], [0.5, 0.5])])
