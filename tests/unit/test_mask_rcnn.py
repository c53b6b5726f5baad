"""The detection contract for mask_rcnn: five losses in train mode, boxes + masks in eval."""

from __future__ import annotations

import pytest
import torch

from sightline.models.mask_rcnn import build
from tests.detection_contract import TINY_RCNN, sgd_steps, total_loss

TINY = {**TINY_RCNN, "mask_layers": (8, 8), "mask_dim_reduced": 8}


LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"}


def _object(height: int, width: int, box: tuple[int, int, int, int], label: int) -> dict:
    """A target with one filled-rectangle object, and the image it is painted on."""
    x0, y0, x1, y1 = box
    mask = torch.zeros((1, height, width), dtype=torch.uint8)
    mask[0, y0:y1, x0:x1] = 1
    image = torch.rand(3, height, width) * 0.3
    image[:, mask[0].bool()] = torch.tensor([0.9, 0.2, 0.1])[:, None]
    target = {
        "boxes": torch.tensor([box], dtype=torch.float32),
        "labels": torch.tensor([label]),
        "masks": mask,
    }
    return {"image": image, "target": target}


def _empty(height: int, width: int) -> dict:
    target = {
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "masks": torch.zeros((0, height, width), dtype=torch.uint8),
    }
    return {"image": torch.rand(3, height, width), "target": target}


def _batch(*samples: dict) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [s["image"] for s in samples], [s["target"] for s in samples]


def test_train_mode_returns_five_named_losses_and_sgd_lowers_them() -> None:
    torch.manual_seed(0)
    model = build(num_classes=3, **TINY).train()
    images, targets = _batch(_object(64, 64, (4, 6, 30, 40), 1), _empty(64, 48))
    first = model(images, targets)
    assert set(first) == LOSSES
    sgd_steps(model, images, targets, steps=20)
    assert total_loss(model, images, targets).item() < sum(first.values()).item()


def test_images_without_objects_train_with_a_zero_mask_loss() -> None:
    model = build(num_classes=3, **TINY).train()
    losses = model(*_batch(_empty(64, 64), _empty(48, 64)))
    assert losses["loss_mask"].item() == 0.0
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_eval_returns_boxes_and_mask_probabilities_in_input_pixels() -> None:
    torch.manual_seed(0)
    model = build(num_classes=3, **TINY).eval()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection to check them
    image = _object(200, 300, (120, 40, 260, 170), 2)["image"]  # resized inside, mapped back
    with torch.no_grad():
        (out,) = model([image])
    count = len(out["boxes"])
    assert count > 0
    assert out["boxes"].shape == (count, 4)
    assert out["boxes"][:, 0::2].min() >= 0 and out["boxes"][:, 2].max() <= 300
    assert out["boxes"][:, 1::2].min() >= 0 and out["boxes"][:, 3].max() <= 200
    assert out["labels"].shape == out["scores"].shape == (count,)
    assert out["labels"].min() >= 1 and out["labels"].max() <= 2
    masks = out["masks"]
    assert masks.shape == (count, 1, 200, 300) and masks.dtype == torch.float32
    assert masks.min() >= 0 and masks.max() <= 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("masks"), r"targets\[0\]\['masks'\] is missing"),
        (
            lambda t: t.update(masks=torch.zeros((1, 32, 32))),
            r"targets\[0\]\['masks'\].*\(1, 64, 64\)",
        ),
        (lambda t: t.update(labels=torch.tensor([3])), r"targets\[0\]\['labels'\].*\[1, 2\]"),
        (
            lambda t: t.update(boxes=torch.tensor([[9.0, 9, 9, 20]])),
            r"targets\[0\]\['boxes'\].*width",
        ),
    ],
)
def test_bad_targets_are_clear_errors_naming_the_field(change, message) -> None:
    images, targets = _batch(_object(64, 64, (4, 6, 30, 40), 1))
    change(targets[0])
    with pytest.raises(ValueError, match=message):
        build(num_classes=3, **TINY).train()(images, targets)


def test_bad_images_and_head_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"images\[0\] must be a 3xHxW"):
        build(num_classes=3, **TINY).eval()([torch.rand(1, 64, 64)])
    with pytest.raises(ValueError, match="mask_layers"):
        build(num_classes=3, **{**TINY, "mask_layers": ()})


def test_local_weights_restore_the_mask_branch_too(tmp_path) -> None:
    source = build(num_classes=3, **TINY)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = build(num_classes=3, weights=str(path), **TINY)
    assert any(name.startswith("roi_heads.mask_") for name in loaded.state_dict())
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
