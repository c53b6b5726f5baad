"""The detection contract for keypoint_rcnn: five losses in train mode, keypoints in eval."""

from __future__ import annotations

import pytest
import torch

from sightline.data.synth.detection import PERSON_KEYPOINTS
from sightline.models.keypoint_rcnn import build
from tests.detection_contract import TINY_RCNN, sgd_steps, total_loss

K = len(PERSON_KEYPOINTS)  # what the synthetic data names
TINY = {**TINY_RCNN, "keypoint_layers": (8, 8), "num_keypoints": K}
LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_keypoint"}


def _person(height: int, width: int, box: tuple[int, int, int, int]) -> dict:
    """One person: a box, K keypoints spread down its middle (the last one absent), an image."""
    x0, y0, x1, y1 = box
    ys = torch.linspace(y0 + 2, y1 - 2, K)
    xs = torch.full((K,), (x0 + x1) / 2) + torch.linspace(-3, 3, K)
    visibility = torch.tensor([2.0] * (K - 1) + [0.0])
    image = torch.rand(3, height, width) * 0.3
    image[:, y0:y1, x0:x1] = 0.8
    target = {
        "boxes": torch.tensor([box], dtype=torch.float32),
        "labels": torch.tensor([1]),
        "keypoints": torch.stack([xs, ys, visibility], dim=1)[None],
    }
    return {"image": image, "target": target}


def _empty(height: int, width: int) -> dict:
    target = {
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "keypoints": torch.zeros((0, K, 3)),
    }
    return {"image": torch.rand(3, height, width), "target": target}


def _batch(*samples: dict) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [s["image"] for s in samples], [s["target"] for s in samples]


def test_train_mode_returns_five_named_losses_and_sgd_lowers_them() -> None:
    torch.manual_seed(0)
    model = build(num_classes=2, **TINY).train()
    images, targets = _batch(_person(64, 64, (20, 4, 44, 60)), _empty(64, 48))
    first = model(images, targets)
    assert set(first) == LOSSES
    sgd_steps(model, images, targets, steps=20)
    assert total_loss(model, images, targets).item() < sum(first.values()).item()


def test_images_without_persons_train_with_a_zero_keypoint_loss() -> None:
    model = build(num_classes=2, **TINY).train()
    losses = model(*_batch(_empty(64, 64), _empty(48, 64)))
    assert losses["loss_keypoint"].item() == 0.0
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_eval_returns_boxes_and_keypoints_in_input_pixels() -> None:
    torch.manual_seed(0)
    model = build(num_classes=2, **TINY).eval()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection to check them
    image = _person(200, 300, (100, 20, 180, 190))["image"]  # resized inside, mapped back
    with torch.no_grad():
        (out,) = model([image])
    count = len(out["boxes"])
    assert count > 0
    assert out["boxes"][:, 0::2].min() >= 0 and out["boxes"][:, 2].max() <= 300
    assert out["boxes"][:, 1::2].min() >= 0 and out["boxes"][:, 3].max() <= 200
    assert out["labels"].shape == out["scores"].shape == (count,)
    assert (out["labels"] == 1).all()
    keypoints = out["keypoints"]
    assert keypoints.shape == (count, K, 3)
    # Each keypoint lies inside (or on the edge of) the box it belongs to.
    boxes = out["boxes"][:, None]
    assert (keypoints[..., 0] >= boxes[..., 0] - 1).all()
    assert (keypoints[..., 0] <= boxes[..., 2] + 1).all()
    assert (keypoints[..., 1] >= boxes[..., 1] - 1).all()
    assert (keypoints[..., 1] <= boxes[..., 3] + 1).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("keypoints"), r"targets\[0\]\['keypoints'\] is missing"),
        (
            lambda t: t.update(keypoints=torch.zeros((1, 17, 3))),
            rf"targets\[0\]\['keypoints'\].*\(1, {K}, 3\)",
        ),
        (lambda t: t.update(labels=torch.tensor([4])), r"targets\[0\]\['labels'\].*\[1, 1\]"),
    ],
)
def test_bad_targets_are_clear_errors_naming_the_field(change, message) -> None:
    images, targets = _batch(_person(64, 64, (20, 4, 44, 60)))
    change(targets[0])
    with pytest.raises(ValueError, match=message):
        build(num_classes=2, **TINY).train()(images, targets)


def test_bad_head_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="num_keypoints"):
        build(num_classes=2, **{**TINY, "num_keypoints": 0})
    with pytest.raises(ValueError, match="keypoint_layers"):
        build(num_classes=2, **{**TINY, "keypoint_layers": ()})


def test_local_weights_restore_the_keypoint_branch_too(tmp_path) -> None:
    source = build(num_classes=2, **TINY)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = build(num_classes=2, weights=str(path), **TINY)
    assert any(name.startswith("roi_heads.keypoint_") for name in loaded.state_dict())
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
