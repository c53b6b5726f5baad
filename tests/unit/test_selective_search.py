"""Selective search proposals: inside the image, deterministic, high recall on obvious shapes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from sightline.models.selective_search import (
    SelectiveSearch,
    proposals_for_image,
    resolve_proposals,
    selective_search,
)

# Four saturated shapes on a muted, slightly noisy background; xyxy boxes of each.
SHAPES = torch.tensor(
    [[8.0, 10.0, 40.0, 34.0], [56.0, 6.0, 88.0, 46.0], [10.0, 52.0, 38.0, 88.0], [52, 56, 90, 90]]
)


def shapes_image(height: int = 96, width: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = (rng.normal(110, 6, (height, width, 3))).clip(0, 255).astype(np.uint8)
    x0, y0, x1, y1 = SHAPES[0].int().tolist()
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (220, 40, 40), -1)
    x0, y0, x1, y1 = SHAPES[1].int().tolist()
    ellipse = (((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0, y1 - y0), 0)
    cv2.ellipse(image, ellipse, (40, 200, 60), -1)
    x0, y0, x1, y1 = SHAPES[2].int().tolist()
    triangle = np.array([[x0, y1 - 1], [x1 - 1, y1 - 1], [(x0 + x1) // 2, y0]], np.int32)
    cv2.fillPoly(image, [triangle], (40, 60, 220))
    x0, y0, x1, y1 = SHAPES[3].int().tolist()
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (240, 220, 30), -1)
    return image


def test_boxes_lie_inside_the_image_are_unique_and_not_tiny() -> None:
    image = shapes_image(96, 80)
    boxes = selective_search(image, min_size=6)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) > 10
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 96).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 6).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)


def test_proposals_are_deterministic_and_max_proposals_keeps_the_ranking() -> None:
    image = shapes_image()
    first = selective_search(image)
    selective_search(shapes_image(64, 64))  # another call in between must not change the ranking
    assert np.array_equal(first, selective_search(image))
    assert np.array_equal(selective_search(image, max_proposals=7), first[:7])


def test_recall_of_obvious_shapes_is_high() -> None:
    boxes = torch.from_numpy(selective_search(shapes_image()))
    best = box_iou(SHAPES, boxes).amax(dim=1)
    assert (best >= 0.5).float().mean() == 1.0
    assert (best >= 0.7).float().mean() >= 0.75


def test_float_tensor_entry_point_scales_boxes_back_to_the_input() -> None:
    big = torch.from_numpy(cv2.resize(shapes_image(), (192, 192))).permute(2, 0, 1) / 255.0
    boxes = proposals_for_image(big, max_side=96)
    small = proposals_for_image(
        torch.nn.functional.interpolate(big[None], size=(96, 96), mode="bilinear", antialias=True)[
            0
        ]
    )
    assert boxes.max() <= 192 and boxes.min() >= 0
    assert torch.equal(boxes, small * 2)
    best = box_iou(SHAPES * 2, boxes).amax(dim=1)
    assert (best >= 0.5).all()


@pytest.mark.parametrize(
    ("image", "options", "message"),
    [
        (np.zeros((32, 32, 3), np.float32), {}, "uint8"),
        (np.zeros((32, 32), np.uint8), {}, "HxWx3"),
        (np.zeros((32, 32, 3), np.uint8), {"mode": "slow"}, "mode must be one of"),
        (np.zeros((32, 32, 3), np.uint8), {"max_proposals": 0}, "max_proposals"),
        (np.zeros((32, 32, 3), np.uint8), {"min_size": -1}, "min_size"),
    ],
)
def test_bad_input_is_a_clear_error(image: np.ndarray, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        selective_search(image, **options)


def test_bad_settings_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="proposal mode"):
        SelectiveSearch(mode="slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_side"):
        SelectiveSearch(max_side=0)
    with pytest.raises(ValueError, match="3xHxW"):
        proposals_for_image(torch.rand(1, 32, 32))


def test_resolve_proposals_prefers_the_argument_then_targets_then_search() -> None:
    images = [torch.rand(3, 40, 40), torch.rand(3, 40, 40)]
    given = torch.tensor([[1.0, 2.0, 10.0, 12.0]], dtype=torch.float64)
    targets = [{"proposals": given}, {}]
    search = SelectiveSearch(max_proposals=5)
    explicit = resolve_proposals(images, targets, [given * 2, given * 3], search)
    assert torch.equal(explicit[1], (given * 3).float())
    mixed = resolve_proposals(images, targets, None, search)
    assert torch.equal(mixed[0], given.float()) and mixed[0].dtype == torch.float32
    assert 0 < len(mixed[1]) <= 5  # no proposals in the target: selective search ran


@pytest.mark.parametrize(
    ("targets", "proposals", "message"),
    [
        ([{"proposals": torch.zeros(3)}], None, r"targets\[0\]\['proposals'\] must be an \(M, 4\)"),
        (None, [torch.zeros((2, 5))], r"proposals\[0\] must be an \(M, 4\)"),
        (None, [[1, 2, 3, 4]], r"proposals\[0\] must be an \(M, 4\) tensor"),
        (None, [torch.tensor([[0.0, 0, float("nan"), 4]])], r"proposals\[0\] .*non-finite"),
        (None, [torch.zeros((0, 4)), torch.zeros((0, 4))], "1 images but 2 proposal sets"),
    ],
)
def test_bad_proposals_name_where_they_came_from(targets, proposals, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_proposals([torch.rand(3, 16, 16)], targets, proposals, SelectiveSearch())
