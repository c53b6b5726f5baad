"""The detection contract for sliding_window: a classifier loss in train mode, windows in eval."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from sightline.models.sliding_window import WindowGrid, build
from tests.detection_contract import sgd_steps

TINY = {
    "width": 8,
    "hidden": 32,
    "window_sizes": (16, 32, 64),
    "aspect_ratios": (0.5, 1.0, 2.0),
    "stride_fraction": 0.5,
}


def _scene(height: int, width: int, box: tuple[int, int, int, int], label: int) -> dict:
    """A dark noisy image with one bright square object."""
    x0, y0, x1, y1 = box
    image = torch.rand(3, height, width) * 0.3
    image[:, y0:y1, x0:x1] = torch.tensor([0.9, 0.8, 0.1])[:, None, None]
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([label])}
    return {"image": image, "target": target}


def _empty(height: int, width: int) -> dict:
    target = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
    return {"image": torch.rand(3, height, width) * 0.3, "target": target}


def _batch(*samples: dict) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [s["image"] for s in samples], [s["target"] for s in samples]


def _loss_on_fixed_crops(model, images, targets) -> float:
    torch.manual_seed(123)  # train mode samples its crops: the same seed, the same crops
    return model(images, targets)["loss_classifier"].item()


def test_train_mode_returns_the_classifier_loss_and_sgd_lowers_it() -> None:
    torch.manual_seed(0)
    model = build(num_classes=3, **TINY).train()
    images, targets = _batch(_scene(128, 128, (30, 40, 70, 80), 2), _empty(96, 128))
    first = model(images, targets)
    assert set(first) == {"loss_classifier"}
    before = _loss_on_fixed_crops(model, images, targets)
    sgd_steps(model, images, targets, steps=20, lr=0.05)
    assert _loss_on_fixed_crops(model, images, targets) < 0.7 * before


def test_images_without_objects_train_on_background_windows_only() -> None:
    model = build(num_classes=3, min_negatives_per_image=5, **TINY).train()
    losses = model(*_batch(_empty(128, 128), _empty(64, 100)))
    assert torch.isfinite(losses["loss_classifier"])
    losses["loss_classifier"].backward()


def test_eval_returns_windows_as_boxes_in_input_pixels() -> None:
    model = build(num_classes=3, box_score_thresh=0.0, **TINY).eval()
    image = _scene(200, 300, (150, 60, 250, 160), 1)["image"]  # scaled by 128 / 300 inside
    with torch.no_grad():
        (out,) = model([image])
    count = len(out["boxes"])
    assert 0 < count <= 100
    assert out["boxes"][:, 0::2].min() >= 0 and out["boxes"][:, 2].max() <= 300
    assert out["boxes"][:, 1::2].min() >= 0 and out["boxes"][:, 3].max() <= 200
    assert out["labels"].shape == out["scores"].shape == (count,)
    assert out["labels"].min() >= 1 and out["labels"].max() <= 2
    assert out["scores"].min() >= 0 and out["scores"].max() <= 1
    # No regression: every box is a grid window, scaled back to the input and clipped to it.
    windows = WindowGrid((16, 32, 64), (0.5, 1.0, 2.0), 0.5).windows(85, 128) * (300 / 128)
    windows[:, 0::2] = windows[:, 0::2].clamp(0, 300)
    windows[:, 1::2] = windows[:, 1::2].clamp(0, 200)
    assert torch.allclose(box_iou(out["boxes"], windows).amax(dim=1), torch.ones(count))


def test_a_trained_classifier_finds_the_object_and_rejects_the_background() -> None:
    torch.manual_seed(0)
    model = build(num_classes=3, **{**TINY, "stride_fraction": 0.25}).train()
    scene = _scene(128, 128, (40, 40, 72, 72), 2)
    sgd_steps(model, *_batch(scene, _empty(128, 128)), steps=80, lr=0.05)
    with torch.no_grad():
        (out,) = model.eval()([scene["image"]])
    overlap = box_iou(out["boxes"], scene["target"]["boxes"])[:, 0]
    assert (overlap[out["scores"] > 0.5] > 0).all()  # background windows are rejected
    assert out["labels"][0] == 2
    # Parts of the object may outscore it (no regression to fix them up), but it is found.
    assert ((overlap > 0.5) & (out["labels"] == 2)).any()


def test_the_grid_covers_the_image_edge_to_edge() -> None:
    grid = WindowGrid(sizes=(32,), aspect_ratios=(1.0,), stride_fraction=0.5)
    windows = grid.windows(100, 80)  # height 100, width 80
    assert windows[:, 0].min() == 0 and windows[:, 2].max() == 80
    assert windows[:, 1].min() == 0 and windows[:, 3].max() == 100
    assert len(windows) == 4 * 6  # x starts 0, 16, 32, 48; y starts 0, 16, ..., 64, 68
    oblong = WindowGrid(sizes=(32,), aspect_ratios=(2.0,), stride_fraction=0.5).shapes()
    assert torch.allclose(oblong, torch.tensor([[32 / 2**0.5, 32 * 2**0.5]]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("labels"), r"targets\[0\]\['labels'\] is missing"),
        (lambda t: t.update(labels=torch.tensor([0])), r"targets\[0\]\['labels'\].*\[1, 2\]"),
        (lambda t: t.update(boxes=torch.zeros((1, 5))), r"targets\[0\]\['boxes'\].*\(N, 4\)"),
    ],
)
def test_bad_targets_are_clear_errors_naming_the_field(change, message) -> None:
    images, targets = _batch(_scene(64, 64, (4, 6, 30, 40), 1))
    change(targets[0])
    with pytest.raises(ValueError, match=message):
        build(num_classes=3, **TINY).train()(images, targets)


def test_bad_inputs_and_settings_are_clear_errors() -> None:
    model = build(num_classes=3, **TINY)
    with pytest.raises(ValueError, match="targets"):
        model.train()([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match=r"images\[0\] must be a 3xHxW"):
        model.eval()([torch.rand(64, 64)])
    with pytest.raises(ValueError, match="stride_fraction"):
        build(num_classes=3, stride_fraction=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        build(num_classes=1)


def test_local_weights_are_loaded(tmp_path) -> None:
    source = build(num_classes=3, **TINY)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = build(num_classes=3, weights=str(path), **TINY)
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
