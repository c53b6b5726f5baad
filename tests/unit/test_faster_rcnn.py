"""The detection contract (DESIGN.md) for faster_rcnn: loss dict in train mode, boxes in eval."""

from __future__ import annotations

import pytest
import torch

from sightline.models import FAMILIES, build_model, family
from tests.detection_contract import TINY_RCNN, sgd_steps, total_loss

TINY = TINY_RCNN


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 48)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    return images, targets


def test_registry_knows_the_family_and_its_task() -> None:
    assert family("faster_rcnn").task == "detect"
    assert set(FAMILIES) >= {"faster_rcnn"}
    with pytest.raises(KeyError, match=r"unknown model family 'nope'.*faster_rcnn"):
        family("nope")


def test_train_mode_returns_the_four_named_losses_and_a_step_lowers_them() -> None:
    torch.manual_seed(0)
    model = build_model("faster_rcnn", num_classes=3, **TINY).train()
    images, targets = _batch()
    first = model(images, targets)
    assert set(first) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sgd_steps(model, images, targets, steps=15)
    assert total_loss(model, images, targets).item() < sum(first.values()).item()


def test_eval_mode_returns_boxes_in_input_pixels() -> None:
    model = build_model("faster_rcnn", num_classes=3, **TINY).eval()
    big = torch.rand(3, 200, 300)  # resized inside the model, mapped back to these pixels
    with torch.no_grad():
        (out,) = model([big])
    assert set(out) >= {"boxes", "labels", "scores"}
    assert out["boxes"].shape[1] == 4
    if len(out["boxes"]):
        assert out["boxes"][:, 2].max() <= 300 and out["boxes"][:, 3].max() <= 200
        assert out["labels"].min() >= 1


def test_missing_local_weights_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_model("faster_rcnn", num_classes=3, weights=str(tmp_path / "missing.pt"), **TINY)


def test_local_weights_are_loaded(tmp_path) -> None:
    source = build_model("faster_rcnn", num_classes=3, **TINY)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model("faster_rcnn", num_classes=3, weights=str(path), **TINY)
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([0])},
            r"targets\[0\]\['labels'\]",
        ),
        (
            {"boxes": torch.tensor([[4.0, 6.0, 4.0, 40.0]]), "labels": torch.tensor([1])},
            "no width or height",
        ),
        (
            {"boxes": torch.tensor([4.0, 6.0, 30.0, 40.0]), "labels": torch.tensor([1])},
            r"shape \(N, 4\)",
        ),
        ({"labels": torch.tensor([1])}, r"targets\[0\]\['boxes'\] is missing"),
    ],
)
def test_bad_targets_name_the_field(target: dict, message: str) -> None:
    model = build_model("faster_rcnn", num_classes=3, **TINY).train()
    with pytest.raises(ValueError, match=message):
        model([torch.rand(3, 64, 64)], [target])


def test_alternating_schedule_is_four_steps_with_their_epochs() -> None:
    fam = family("faster_rcnn")
    assert fam.training_steps({}) == []  # end to end by default
    assert fam.training_steps({"schedule": "alternating", "alternating_epochs": [2, 3, 1, 1]}) == [
        (1, 2),
        (2, 3),
        (3, 1),
        (4, 1),
    ]
    assert [e for _, e in fam.training_steps({"schedule": "alternating"})] == [None] * 4
    with pytest.raises(ValueError, match="4 epoch counts"):
        fam.training_steps({"schedule": "alternating", "alternating_epochs": [1, 2]})
    with pytest.raises(ValueError, match="schedule must be"):
        build_model("faster_rcnn", num_classes=3, schedule="sometimes", **TINY)


@pytest.mark.parametrize(
    ("step", "losses", "trained"),
    [
        (1, {"loss_objectness", "loss_rpn_box_reg"}, {"backbone", "rpn"}),
        (2, {"loss_classifier", "loss_box_reg"}, {"backbone", "roi_heads"}),
        (3, {"loss_objectness", "loss_rpn_box_reg"}, {"rpn"}),
        (4, {"loss_classifier", "loss_box_reg"}, {"roi_heads"}),
    ],
)
def test_each_alternating_step_trains_only_its_part_on_its_losses(
    step: int, losses: set[str], trained: set[str]
) -> None:
    torch.manual_seed(0)
    model = build_model("faster_rcnn", num_classes=3, training_step=step, **TINY).train()
    images, targets = _batch()
    assert set(model(images, targets)) == losses
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sgd_steps(model, images, targets, steps=2)
    changed = {
        name.split(".")[0]
        for name, p in model.named_parameters()
        if not torch.equal(p.detach(), before[name])
    }
    assert changed == trained
    assert len(model.eval()([images[0]])) == 1  # eval mode is untouched by the step
