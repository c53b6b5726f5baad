"""yolo: the S x S x B x (5 + C) grid output and the detection contract (DESIGN.md)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from sightline.models.yolo import YOLO, build, default_anchors
from tests.detection_contract import empty_target, sgd_steps, total_loss, two_image_batch

TINY = {"image_size": 64, "width": 8, "grid_stride": 16, "num_anchors": 3}
ANCHORS = [[8.0, 8.0], [20.0, 16.0], [40.0, 44.0]]


def _model(num_classes: int = 3, **overrides: object) -> YOLO:
    torch.manual_seed(0)
    return build(num_classes, **{**TINY, "anchors": ANCHORS, **overrides})


def test_raw_output_is_s_by_s_by_b_by_5_plus_c() -> None:
    model = _model(num_classes=4).eval()
    raw = model.raw_outputs([torch.rand(3, 64, 64), torch.rand(3, 50, 70)])
    # S = 64 / 16 = 4, B = 3 anchors, C = 3 object classes (num_classes counts background).
    assert raw.shape == (2, 4, 4, 3, 5 + 3)
    assert (model.grid_size, model.num_anchors) == (4, 3)


def test_zero_offsets_decode_to_the_anchor_centred_in_its_cell() -> None:
    model = _model()
    raw = torch.zeros(1, 4, 4, 3, 7)
    boxes = model.decode_boxes(raw)
    # Row 1, column 2 -> centre ((2 + 0.5) * 16, (1 + 0.5) * 16); anchor 1 is 20 x 16.
    torch.testing.assert_close(boxes[0, 1, 2, 1], torch.tensor([30.0, 16.0, 50.0, 32.0]))


def test_train_mode_returns_named_losses_and_sgd_lowers_them() -> None:
    model = _model().train()
    images, targets = two_image_batch()
    first = model(images, targets)
    assert set(first) == {"loss_box", "loss_obj", "loss_cls"}
    sgd_steps(model, images, targets, steps=20, lr=0.02)
    assert total_loss(model, images, targets).item() < 0.7 * sum(first.values()).item()


def test_images_without_boxes_train_on_objectness_alone() -> None:
    model = _model().train()
    images, _ = two_image_batch()
    losses = model(images, [empty_target(), empty_target()])
    assert losses["loss_box"].item() == 0.0 and losses["loss_cls"].item() == 0.0
    assert losses["loss_obj"].item() > 0.0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


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
        assert torch.all(out["scores"][:-1] >= out["scores"][1:])


def test_overfitting_one_image_finds_the_box_with_its_label() -> None:
    model = _model().train()
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    truth = {"boxes": torch.tensor([[12.0, 8.0, 44.0, 50.0]]), "labels": torch.tensor([2])}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        loss = sum(model([image], [truth]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        (out,) = model.eval()([image])
    assert out["labels"][0].item() == 2
    assert box_iou(out["boxes"][:1], truth["boxes"]).item() > 0.5


def test_anchors_travel_with_the_state_dict(tmp_path) -> None:
    trained = _model()
    path = tmp_path / "yolo.pt"
    torch.save(trained.state_dict(), path)
    rebuilt = build(3, **TINY, weights=str(path))  # default anchors, then the saved ones load
    torch.testing.assert_close(rebuilt.anchors, torch.tensor(ANCHORS))


def test_default_anchors_span_small_to_large_squares() -> None:
    shapes = default_anchors(128, 5)
    assert shapes[0] == [8.0, 8.0] and shapes[-1] == pytest.approx([96.0, 96.0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"anchors": [[8.0, 8.0]]}, "anchors has 1 shapes but num_anchors=3"),
        ({"anchors": [[8.0, 8.0], [0.0, 4.0], [9.0, 9.0]]}, r"anchors\[1\] must be"),
        ({"grid_stride": 12}, "grid_stride must be a power of two"),
        ({"image_size": 72}, "image_size 72 must be a multiple of grid_stride 16"),
        ({"num_classes": 1}, "num_classes counts the background"),
    ],
)
def test_bad_settings_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _model(**overrides)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([3])},
         r"targets\[1\]\['labels'\] must lie in \[1, 2\]"),
        ({"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([0])},
         r"targets\[1\]\['labels'\] must lie in \[1, 2\]"),
        ({"boxes": torch.tensor([[5.0, 1.0, 5.0, 9.0]]), "labels": torch.tensor([1])},
         "no width or height"),
        ({"boxes": torch.tensor([1.0, 1.0, 9.0, 9.0]), "labels": torch.tensor([1])},
         r"targets\[1\]\['boxes'\] must have shape \(N, 4\)"),
        ({"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([1, 2])},
         r"targets\[1\]\['labels'\] must have shape \(1,\)"),
    ],
)  # fmt: skip
def test_bad_targets_are_named(target: dict, message: str) -> None:
    model = _model().train()
    images, targets = two_image_batch()
    with pytest.raises(ValueError, match=message):
        model(images, [targets[0], target])


def test_training_without_targets_or_with_a_bad_image_is_refused() -> None:
    model = _model().train()
    with pytest.raises(ValueError, match="needs targets"):
        model([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match=r"images\[0\] must be a 3xHxW"):
        model.eval()([torch.rand(64, 64)])


def test_missing_local_weights_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        _model(weights=str(tmp_path / "missing.pt"))


def test_anchors_come_from_the_training_boxes_when_not_given() -> None:
    from sightline.models import family
    from sightline.models.yolo import anchors_from_data

    coco = {
        "images": [{"id": 1, "width": 128, "height": 128}],
        "annotations": [
            {"id": i, "image_id": 1, "bbox": [0, 0, w, h], "iscrowd": 0}
            for i, (w, h) in enumerate(
                [(10, 10), (11, 9), (60, 30), (62, 28), (100, 100), (98, 96)]
            )
        ],
    }
    params = family("yolo").params_from_data(
        {"image_size": 128, "num_anchors": 3, "anchors": None}, coco
    )
    small, middle, large = params["anchors"]
    assert small == pytest.approx([10.5, 9.5], abs=1) and large == pytest.approx([99, 98], abs=2)
    assert middle == pytest.approx([61, 29], abs=2)
    given = {"anchors": [[1.0, 1.0]], "num_anchors": 1}
    assert anchors_from_data(given, coco) == given  # explicit anchors are kept
