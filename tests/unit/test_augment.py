"""Detection augmentation (sightline.data.augment): every pixel-space field moves with the
pixels, objects pushed off the image go with everything that describes them."""

from __future__ import annotations

import pytest
import torch

from sightline.config import Train
from sightline.data.augment import (
    AugmentedDataset,
    DetectionAugmentation,
    UntilEpoch,
    face_augmentation,
    for_training,
    keypoint_flip_order,
)
from sightline.data.augment_params import Augment

SIZE = 64
NAMES = ["head", "left_hand", "right_hand"]
NONE = {"hflip": 0.0, "scale": (1.0, 1.0), "translate": 0.0, "colour": 0.0}


def sample() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two objects: one in the top-left corner, one in the middle; three keypoints each."""
    image = torch.rand(3, SIZE, SIZE)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [28.0, 28.0, 36.0, 36.0]])
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
    masks[0, :10, :10] = 1
    masks[1, 28:36, 28:36] = 1
    keypoints = torch.tensor(
        [
            [[5.0, 2.0, 2.0], [1.0, 5.0, 2.0], [9.0, 5.0, 1.0]],
            [[32.0, 29.0, 2.0], [29.0, 32.0, 2.0], [35.0, 32.0, 2.0]],
        ]
    )
    target = {
        "boxes": boxes,
        "labels": torch.tensor([1, 2]),
        "image_id": torch.tensor(7),
        "area": torch.tensor([100.0, 64.0]),
        "iscrowd": torch.zeros(2, dtype=torch.int64),
        "masks": masks,
        "keypoints": keypoints,
        "proposals": torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 40.0, 50.0]]),
    }
    return image, target


def test_a_flip_mirrors_boxes_masks_keypoints_and_proposals_and_swaps_left_and_right() -> None:
    image, target = sample()
    flip = DetectionAugmentation(Augment(**{**NONE, "hflip": 1.0}), NAMES)
    flipped, moved = flip(image, target)
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(
        moved["boxes"], torch.tensor([[54.0, 0.0, 64.0, 10.0], [28.0, 28.0, 36.0, 36.0]])
    )
    assert torch.equal(moved["masks"], target["masks"].flip(-1))
    assert torch.equal(moved["proposals"][0], torch.tensor([44.0, 0.0, 64.0, 20.0]))
    # the left hand (index 1) of the mirrored object is where its right hand was, mirrored
    head, left, right = moved["keypoints"][0]
    assert head[0] == pytest.approx(SIZE - 5.0) and left[0] == pytest.approx(SIZE - 9.0)
    assert left[2] == 1.0 and right[2] == 2.0  # visibility travels with the point
    assert torch.equal(moved["labels"], target["labels"]) and int(moved["image_id"]) == 7


def test_an_object_zoomed_off_the_image_is_dropped_with_its_fields() -> None:
    image, target = sample()
    zoom = DetectionAugmentation(Augment(**{**NONE, "scale": (2.0, 2.0)}), NAMES)
    zoomed, moved = zoom(image, target)
    assert zoomed.shape == image.shape  # the image keeps its size
    assert torch.allclose(moved["boxes"], torch.tensor([[24.0, 24.0, 40.0, 40.0]]), atol=1.0)
    assert moved["labels"].tolist() == [2] and moved["iscrowd"].tolist() == [0]
    assert moved["masks"].shape == (1, SIZE, SIZE) and moved["keypoints"].shape == (1, 3, 3)
    assert moved["area"].item() == moved["masks"][0].sum().item()
    # the corner proposal is clipped to what is left on the image, not dropped
    assert (moved["proposals"] >= 0).all() and (moved["proposals"] <= SIZE).all()


def test_a_keypoint_pushed_off_the_image_becomes_invisible() -> None:
    image, target = sample()
    target["keypoints"][1, 2] = torch.tensor([60.0, 32.0, 2.0])  # near the right edge
    zoom = DetectionAugmentation(Augment(**{**NONE, "scale": (2.0, 2.0)}), NAMES)
    _, moved = zoom(image, target)
    assert moved["keypoints"][0, 2, 2] == 0.0 and moved["keypoints"][0, 0, 2] == 2.0


def test_draws_follow_the_torch_seed() -> None:
    image, target = sample()
    augmentation = DetectionAugmentation(Augment(), NAMES)
    torch.manual_seed(3)
    first = augmentation(image, target)
    torch.manual_seed(3)
    again = augmentation(image, target)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])


def test_keypoint_flip_order_swaps_coco_left_right_pairs_only() -> None:
    names = ["nose", "left_eye", "right_eye", "left_foot", "right_foot", "left_tail"]
    assert keypoint_flip_order(names) == [0, 2, 1, 4, 3, 5]


def test_the_recipe_is_configurable_and_checked() -> None:
    assert Train.model_validate({"augment": None}).augment is None
    with pytest.raises(ValueError, match="scale must be"):
        Augment(scale=(1.2, 0.8))


def test_a_face_keeps_its_shape_and_range_and_none_leaves_it_alone() -> None:
    face = torch.rand(1, 48, 48)
    torch.manual_seed(0)
    moved = face_augmentation(Augment(hflip=1.0, colour=0.3), channels=1)(face)
    assert moved.shape == face.shape and moved.min() >= 0 and moved.max() <= 1
    assert not torch.equal(moved, face)
    assert torch.equal(face_augmentation(Augment(**NONE), channels=1)(face), face)


@pytest.mark.parametrize(
    ("off_for_final", "epochs", "first_plain"),
    [(0.2, 6, 5), (0.2, 3, 2), (0.2, 200, 160), (0.5, 1, 1), (0.0, 6, None)],
)
def test_the_final_epochs_are_plain_and_never_the_first(
    off_for_final: float, epochs: int, first_plain: int | None
) -> None:
    assert Augment(off_for_final=off_for_final).first_plain_epoch(epochs) == first_plain


def test_the_dataset_serves_plain_samples_from_the_first_plain_epoch() -> None:
    image, target = sample()
    mirror = DetectionAugmentation(Augment(**{**NONE, "hflip": 1.0}))
    dataset = AugmentedDataset([(image, target)], UntilEpoch(mirror, stop=2))
    for epoch, plain in [(0, False), (1, False), (2, True), (3, True)]:
        dataset.set_epoch(epoch)
        served, _ = dataset[0]
        assert torch.equal(served, image) is plain, epoch
    dataset.set_epoch(0)  # a resumed run that starts over
    assert torch.equal(dataset[0][0], image.flip(-1))


def test_face_augmentation_stops_for_the_final_epochs_of_its_training() -> None:
    face = torch.rand(1, 48, 48)
    mirror = Augment(**{**NONE, "hflip": 1.0, "off_for_final": 0.2})
    transform = for_training(face_augmentation(mirror, channels=1), mirror, epochs=5)
    transform.set_epoch(3)
    assert torch.equal(transform(face), face.flip(-1))
    transform.set_epoch(4)
    assert torch.equal(transform(face), face)
