"""k-means anchor shapes (1 - IoU distance) and the COCO box-size reader behind them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sightline.models.anchors import (
    anchor_sizes_from_data,
    coco_box_sizes,
    image_size_from_data,
    kmeans_anchors,
    mean_best_iou,
    shape_iou,
)

PLANTED = np.array([[10.0, 12.0], [30.0, 15.0], [20.0, 60.0], [90.0, 80.0]])


def _planted_boxes(seed: int = 1, per_cluster: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(0.93, 1.07, size=(len(PLANTED), per_cluster, 2))
    return (PLANTED[:, None, :] * jitter).reshape(-1, 2)


def test_kmeans_recovers_planted_clusters_sorted_by_area() -> None:
    anchors = kmeans_anchors(_planted_boxes(), k=4)
    assert anchors.shape == (4, 2)
    np.testing.assert_allclose(anchors, PLANTED, rtol=0.03)
    assert mean_best_iou(_planted_boxes(), anchors) > 0.85


def test_kmeans_is_deterministic_for_a_seed() -> None:
    wh = np.random.default_rng(3).uniform(5, 100, size=(300, 2))
    np.testing.assert_array_equal(kmeans_anchors(wh, 5, seed=7), kmeans_anchors(wh, 5, seed=7))
    areas = kmeans_anchors(wh, 5).prod(axis=1)
    assert np.all(np.diff(areas) >= 0)


def test_shape_iou_aligns_boxes_at_the_origin() -> None:
    iou = shape_iou(np.array([[10.0, 10.0], [20.0, 5.0]]), np.array([[10.0, 10.0], [5.0, 20.0]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150], [50 / 150, 25 / 175]])


@pytest.mark.parametrize(
    ("wh", "k", "message"),
    [
        (np.ones((5, 3)), 2, r"shape \(N, 2\)"),
        (np.array([[4.0, 4.0], [0.0, 3.0]]), 1, r"wh row 1 .* must be > 0"),
        (np.array([[4.0, np.nan]]), 1, r"wh row 0"),
        (np.ones((3, 2)), 0, "k must be at least 1"),
        (np.ones((3, 2)), 4, "at least k=4 boxes, got 3"),
        (np.array([[4.0, 4.0]] * 5 + [[8.0, 2.0]] * 5), 3, "k=3 distinct box sizes, got 2"),
    ],
)
def test_kmeans_rejects_bad_input_clearly(wh: np.ndarray, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kmeans_anchors(wh, k)


def _coco(annotations: list[dict]) -> dict:
    images = [{"id": 1, "width": 256, "height": 128}, {"id": 2, "width": 64, "height": 64}]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1}]}


def test_coco_box_sizes_scale_to_the_model_input_and_skip_crowds() -> None:
    coco = _coco(
        [
            {"id": 1, "image_id": 1, "bbox": [0, 0, 64, 32]},
            {"id": 2, "image_id": 2, "bbox": [5, 5, 16, 8]},
            {"id": 3, "image_id": 2, "bbox": [0, 0, 60, 60], "iscrowd": 1},
        ]
    )
    np.testing.assert_allclose(coco_box_sizes(coco, 128), [[32.0, 32.0], [32.0, 16.0]])
    assert coco_box_sizes(_coco([]), 128).shape == (0, 2)


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"id": 9, "image_id": 7, "bbox": [0, 0, 4, 4]}, r"annotation id=9: image_id 7 is not"),
        ({"id": 9, "image_id": 1, "bbox": [0, 0, 4]}, r"annotation id=9: bbox must be"),
        ({"id": 9, "image_id": 1, "bbox": [0, 0, 0, 4]}, r"annotation id=9: .* must be > 0"),
    ],
)
def test_coco_box_sizes_name_the_bad_annotation(annotation: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coco_box_sizes(_coco([annotation]), 128)


def test_anchor_sizes_span_the_boxes_without_their_tails() -> None:
    rng = np.random.default_rng(0)
    side = np.exp(rng.uniform(np.log(10), np.log(80), size=2000))  # 10-80 px squares
    sizes = anchor_sizes_from_data(np.stack([side, side], axis=1), 4)
    assert len(sizes) == 4 and sizes == sorted(sizes)
    assert 10 <= sizes[0] <= 13 and 68 <= sizes[-1] <= 80  # ~5th and ~95th percentiles
    ratios = [b / a for a, b in itertools.pairwise(sizes)]
    assert max(ratios) - min(ratios) < 0.1  # geometric


def test_anchor_sizes_of_one_box_size_stay_distinct_and_at_least_4_px() -> None:
    assert anchor_sizes_from_data(np.full((5, 2), 2.0), 3) == [4, 5, 6]
    with pytest.raises(ValueError, match="row 0"):
        anchor_sizes_from_data(np.array([[0.0, 3.0]]), 2)


def test_image_size_is_the_median_longer_side_rounded_and_bounded() -> None:
    def coco(*sides: tuple[int, int]) -> dict:
        return {"images": [{"id": i, "width": w, "height": h} for i, (w, h) in enumerate(sides)]}

    assert image_size_from_data(coco((640, 480), (600, 800), (500, 500))) == 640
    assert image_size_from_data(coco((20, 30))) == 64
    assert image_size_from_data(coco((4000, 3000))) == 1024
    with pytest.raises(ValueError, match="no images"):
        image_size_from_data({"images": []})
