"""Fast R-CNN: one multitask loss on external proposals; boxes in input pixels at eval."""

from __future__ import annotations

import pytest
import torch

from sightline.models.fast_rcnn import BackgroundBandMatcher, FastRCNN, build

TINY = {"image_size": 64, "width": 8, "stages": 3, "representation_size": 32}


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 64, 64, generator=generator),
        torch.rand(3, 64, 48, generator=generator),
    ]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [36.0, 30.0, 60.0, 60.0]]),
            "labels": torch.tensor([1, 2]),
            "proposals": torch.tensor(
                [[2.0, 4.0, 28.0, 42.0], [30.0, 30.0, 60.0, 62.0], [0, 0, 64, 64], [40, 2, 60, 20]]
            ),
        },
        {
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "proposals": torch.tensor([[1.0, 1.0, 20.0, 20.0], [10.0, 30.0, 40.0, 60.0]]),
        },
    ]
    return images, targets


def _scoring_every_proposal_as_class_1(model: FastRCNN) -> FastRCNN:
    """Predictor weights that keep each proposal as it is and score it 0.99 for class 1."""
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.zero_()
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.copy_(torch.tensor([0.0, 6.0, 0.0]))
    return model.eval()


def test_multitask_loss_on_given_proposals_decreases() -> None:
    torch.manual_seed(0)
    model = build(3, box_batch_size_per_image=16, **TINY).train()
    images, targets = _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    first = {name: loss.item() for name, loss in model(images, targets).items()}
    assert set(first) == {"loss_classifier", "loss_box_reg"}
    for _ in range(20):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = model(images, targets)
    assert sum(v.item() for v in last.values()) < 0.5 * sum(first.values())


def test_eval_keeps_given_proposals_in_input_pixels_of_a_non_square_image() -> None:
    model = _scoring_every_proposal_as_class_1(build(3, **TINY))
    proposals = torch.tensor([[10.0, 20.0, 60.0, 80.0], [90.0, 5.0, 140.0, 45.0]])
    with torch.no_grad():
        (out,) = model([torch.rand(3, 100, 150)], proposals=[proposals])
    assert out["labels"].tolist() == [1, 1]
    order = out["boxes"][:, 0].argsort()
    torch.testing.assert_close(out["boxes"][order], proposals, atol=1e-3, rtol=0)
    assert (out["scores"] > 0.99).all()


def test_eval_without_proposals_runs_selective_search_and_keeps_boxes_inside() -> None:
    model = _scoring_every_proposal_as_class_1(build(3, box_nms_thresh=0.3, **TINY))
    with torch.no_grad():
        (out,) = model([torch.rand(3, 90, 130)])
    assert len(out["boxes"]) > 0
    assert out["boxes"][:, 0::2].max() <= 130 and out["boxes"][:, 1::2].max() <= 90
    assert out["boxes"].min() >= 0


def test_images_without_proposals_give_no_detections() -> None:
    model = build(3, **TINY).eval()
    with torch.no_grad():
        outputs = model(
            [torch.rand(3, 64, 64), torch.rand(3, 40, 64)],
            proposals=[torch.zeros((0, 4)), torch.tensor([[0.0, 0.0, 30.0, 30.0]])],
        )
    assert outputs[0]["boxes"].shape == (0, 4)
    assert outputs[1]["boxes"].shape[1] == 4


def test_training_without_given_proposals_searches_for_them() -> None:
    model = build(3, max_proposals=40, **TINY).train()
    images, targets = _batch()
    for target in targets:
        del target["proposals"]
    losses = model(images, targets)
    assert torch.isfinite(sum(losses.values()))


def test_background_band_ignores_proposals_far_from_every_truth() -> None:
    matcher = BackgroundBandMatcher(0.5, 0.5, 0.1)
    overlaps = torch.tensor([[0.7, 0.3, 0.05, 0.0], [0.2, 0.05, 0.08, 0.6]])  # truths x proposals
    matches = matcher(overlaps)
    assert matches.tolist() == [0, matcher.BELOW_LOW_THRESHOLD, matcher.BETWEEN_THRESHOLDS, 1]
    everything = BackgroundBandMatcher(0.5, 0.5, 0.0)(overlaps)
    assert everything.tolist() == [0, -1, -1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "num_classes counts the background"),
        ({"num_classes": 3, "bg_iou_low": 0.6}, "bg_iou_low <= bg_iou_thresh"),
        ({"num_classes": 3, "proposal_mode": "slow"}, "proposal mode"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(**kwargs, **TINY)


def test_bad_inputs_name_the_field() -> None:
    model = build(3, **TINY).train()
    images, targets = _batch()
    targets[1]["proposals"] = torch.zeros(4)
    with pytest.raises(ValueError, match=r"targets\[1\]\['proposals'\]"):
        model(images, targets)
    targets[0]["labels"] = torch.tensor([1, 3])
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]"):
        model(images, targets)
    with pytest.raises(ValueError, match=r"proposals\[0\]"):
        model.eval()([torch.rand(3, 32, 32)], proposals=[torch.zeros((3, 2))])


def test_local_weights_are_loaded(tmp_path) -> None:
    source = build(3, **TINY)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = build(3, weights=str(path), **TINY)
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
