"""bench/eval_speed.py's comparison on small cases: pycocotools and faster-coco-eval give the
same twelve numbers (to the last bits of a float) on our synthetic data and on a crowd / RLE
case, so the benchmark's adopt-or-keep decision is about exactness, never about a real gap."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bench_scripts import bench_fixture

FLOAT_NOISE = 1e-12  # the largest gap the benchmark has seen is 5.6e-17


eval_speed = bench_fixture("eval_speed")


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_both_libraries_agree_on_a_crowd_rle_case(eval_speed, iou_type: str) -> None:
    crowd = eval_speed.crowd_case()
    assert any(a["iscrowd"] for a in crowd["annotations"])
    make = eval_speed.detections_for if iou_type == "bbox" else eval_speed.segm_detections
    case = eval_speed.Case("crowd", iou_type, crowd, make(crowd, 9))
    ours, theirs = eval_speed.pycocotools_stats(case), eval_speed.faster_stats(case)
    assert ours.shape == theirs.shape == (12,)
    assert 0 < ours[0] < 1  # a real score, not an empty evaluation
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=FLOAT_NOISE)


def test_both_libraries_agree_on_our_synthetic_polygons(eval_speed) -> None:
    ours_set = eval_speed.synthetic_set(12, seed=7)
    for iou_type, make in (
        ("bbox", eval_speed.detections_for),
        ("segm", eval_speed.segm_detections),
    ):
        case = eval_speed.Case("synthetic", iou_type, ours_set, make(ours_set, 8))
        ours, theirs = eval_speed.pycocotools_stats(case), eval_speed.faster_stats(case)
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=FLOAT_NOISE)


def test_the_decision_rule_is_exact_agreement(eval_speed) -> None:
    case = eval_speed.Case("x", "bbox", {"annotations": []}, [])
    assert eval_speed.Timing(case, 1.0, 0.5, 0.0).exact
    assert not eval_speed.Timing(case, 1.0, 0.5, 5.6e-17).exact
    assert eval_speed.Timing(case, 1.0, 0.5, 0.0).speedup == 2.0
