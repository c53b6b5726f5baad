"""ssd: default boxes on several feature maps and the detection contract (DESIGN.md)."""

from __future__ import annotations

import pytest
import torch

from sightline.models.ssd import SSDDetector, build
from tests.detection_contract import empty_target, sgd_steps, total_loss, two_image_batch

TINY = {"image_size": 64, "width": 8, "stages": 2, "aspect_ratios": [[2], [2, 3], [2]]}


def _model(num_classes: int = 3, **overrides: object) -> SSDDetector:
    torch.manual_seed(0)
    return build(num_classes, **{**TINY, **overrides})


def test_feature_maps_halve_and_default_boxes_follow_the_aspect_ratios() -> None:
    model = _model()
    maps = model.backbone(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in maps.values()] == [(16, 16), (8, 8), (4, 4)]
    assert model.anchor_generator.num_anchors_per_location() == [4, 6, 4]
    scales = _model(scales=[0.1, 0.3, 0.6, 1.0]).anchor_generator.scales
    assert scales == [0.1, 0.3, 0.6, 1.0]


def test_train_mode_returns_named_losses_and_sgd_lowers_them() -> None:
    model = _model().train()
    images, targets = two_image_batch()
    first = model(images, targets)
    assert set(first) == {"bbox_regression", "classification"}
    sgd_steps(model, images, targets, steps=20, lr=0.01)
    assert total_loss(model, images, targets).item() < 0.7 * sum(first.values()).item()


def test_images_without_boxes_give_finite_losses() -> None:
    model = _model().train()
    images, targets = two_image_batch()
    losses = model(images, [targets[0], empty_target()])
    assert all(torch.isfinite(v) for v in losses.values())
    only_empty = model(images, [empty_target(), empty_target()])
    assert all(v.item() == 0.0 for v in only_empty.values())


def test_eval_boxes_are_in_each_input_images_own_pixels() -> None:
    model = _model(score_thresh=0.0, detections_per_img=7).eval()
    with torch.no_grad():
        outputs = model([torch.rand(3, 200, 300), torch.rand(3, 64, 64)])
    for out, (height, width) in zip(outputs, [(200, 300), (64, 64)], strict=True):
        assert set(out) == {"boxes", "labels", "scores"}
        assert 0 < len(out["boxes"]) <= 7
        boxes = out["boxes"]
        assert boxes.min() >= 0 and boxes[:, 2].max() <= width and boxes[:, 3].max() <= height
        assert out["labels"].dtype == torch.int64
        assert out["labels"].min() >= 1 and out["labels"].max() <= 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aspect_ratios": []}, "one list of ratios per feature map"),
        ({"aspect_ratios": [[2], [0]]}, r"aspect_ratios\[1\] must be positive"),
        ({"scales": [0.1, 0.5]}, r"scales needs one value per feature map plus one \(4\), got 2"),
        ({"image_size": 8}, "image_size 8 is smaller than the coarsest map's stride 16"),
        ({"num_classes": 1}, "num_classes counts the background"),
    ],
)
def test_bad_settings_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _model(**overrides)


def test_bad_targets_are_named() -> None:
    model = _model().train()
    images, targets = two_image_batch()
    bad = {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([3])}
    with pytest.raises(ValueError, match=r"targets\[1\]\['labels'\] must lie in \[1, 2\]"):
        model(images, [targets[0], bad])


def test_local_weights_are_loaded_and_a_missing_file_is_a_clear_error(tmp_path) -> None:
    source = _model()
    path = tmp_path / "ssd.pt"
    torch.save(source.state_dict(), path)
    loaded = _model(weights=str(path))
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        _model(weights=str(tmp_path / "missing.pt"))
