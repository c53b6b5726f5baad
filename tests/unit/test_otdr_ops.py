"""1-D detection ops against hand-computed values, and the 1-D contract checks."""

from __future__ import annotations

import math

import pytest
import torch

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


def test_interval_iou_matches_hand_values() -> None:
    a = torch.tensor([[0.0, 10.0], [5.0, 5.0]])
    b = torch.tensor([[5.0, 15.0], [10.0, 20.0], [0.0, 10.0], [2.0, 4.0]])
    expected = torch.tensor([[5 / 15, 0.0, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(interval_iou(a, b), expected)
    assert interval_iou(a, torch.zeros(0, 2)).shape == (2, 0)


def test_nms_keeps_the_best_of_overlapping_segments() -> None:
    segments = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [0.0, 4.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # IoU([0,10], [1,11]) = 9/11 > 0.5 and IoU([0,10], [0,4]) = 0.4 < 0.5.
    assert nms_1d(segments, scores, 0.5).tolist() == [0, 2, 3]
    assert nms_1d(segments, scores, 0.3).tolist() == [0, 2]


def test_batched_nms_suppresses_only_within_a_group() -> None:
    segments = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms_1d(segments, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


def test_anchors_are_centred_on_each_position_position_major() -> None:
    anchors = anchors_1d(3, 4, (4, 8))
    expected = [[0, 4], [-2, 6], [4, 8], [2, 10], [8, 12], [6, 14]]
    assert anchors.tolist() == expected


def test_roi_align_interpolates_linearly_between_samples() -> None:
    ramp = torch.arange(8, dtype=torch.float32)
    features = torch.stack([ramp, 10 * ramp])[:, None, :]  # (B=2, C=1, L=8)
    rois = torch.tensor([[0.0, 2.0, 6.0], [1.0, 2.0, 6.0]])
    pooled = roi_align_1d(features, rois, output_size=4, spatial_scale=1.0)
    assert pooled.shape == (2, 1, 4)
    assert torch.allclose(pooled[0, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    assert torch.allclose(pooled[1, 0], torch.tensor([20.0, 30.0, 40.0, 50.0]))


def test_roi_align_maps_sample_coordinates_through_the_stride() -> None:
    features = torch.arange(8, dtype=torch.float32).repeat(3, 1)[None]  # (1, C=3, L=8)
    pooled = roi_align_1d(features, torch.tensor([[0.0, 4.0, 12.0]]), 4, spatial_scale=0.5)
    assert pooled.shape == (1, 3, 4)
    assert torch.allclose(pooled[0, 2], torch.tensor([2.0, 3.0, 4.0, 5.0]))


def test_segment_coder_encodes_centre_and_log_width() -> None:
    coder = SegmentCoder((10.0, 5.0))
    reference = torch.tensor([[0.0, 10.0]])
    target = torch.tensor([[5.0, 25.0]])  # centre 5 -> 15, width 10 -> 20
    deltas = coder.encode(target, reference)
    assert torch.allclose(deltas, torch.tensor([[10.0, 5 * math.log(2.0)]]))
    assert torch.allclose(coder.decode(deltas, reference), target)


def test_segment_coder_decodes_one_segment_per_class() -> None:
    coder = SegmentCoder()
    reference = torch.tensor([[10.0, 20.0]])
    deltas = torch.tensor([[0.0, 0.0, 1.0, math.log(2.0)]])
    assert coder.decode(deltas, reference)[0].tolist() == pytest.approx([10.0, 20.0, 15.0, 35.0])


def test_trace_features_standardise_the_level_and_mark_a_step() -> None:
    trace = torch.linspace(-5.0, -6.0, 400) + 0.001 * torch.randn(
        400, generator=torch.Generator().manual_seed(0)
    )
    trace[200:] -= 0.5
    features = trace_features(trace)
    assert features.shape == (2, 400)
    assert features[0].mean().abs() < 1e-5 and (features[0].std() - 1).abs() < 1e-4
    assert features[1].abs().argmax().item() == 200


def test_traces_may_be_flat_or_one_row_and_bad_ones_are_named() -> None:
    flat = check_traces([torch.zeros(5), torch.zeros(1, 7)])
    assert [t.shape for t in flat] == [(5,), (7,)]
    with pytest.raises(ValueError, match=r"traces\[1\]"):
        check_traces([torch.zeros(5), torch.zeros(2, 5)])
    with pytest.raises(ValueError, match=r"traces\[0\] holds NaN"):
        check_traces([torch.tensor([0.0, float("nan")])])
    with pytest.raises(ValueError, match="non-empty list"):
        check_traces(torch.zeros(5))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"segments": torch.tensor([[1.0, 4.0]])}, r"targets\[0\]\['labels'\] is missing"),
        ({"segments": torch.tensor([[4.0, 1.0]]), "labels": torch.tensor([1])}, "end <= start"),
        ({"segments": torch.tensor([[1.0, 40.0]]), "labels": torch.tensor([1])}, "outside"),
        ({"segments": torch.tensor([[1.0, 4.0]]), "labels": torch.tensor([5])}, r"\[1, 4\]"),
        ({"segments": torch.zeros(2, 2), "labels": torch.tensor([1])}, "must be"),
    ],
)
def test_bad_targets_name_the_field(target: dict[str, torch.Tensor], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_event_targets([torch.zeros(10)], [target], num_classes=5)


def test_an_empty_target_is_a_trace_without_events() -> None:
    empty = {"segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}
    (checked,) = check_event_targets([torch.zeros(10)], [empty], num_classes=5)
    assert checked["segments"].shape == (0, 2)
