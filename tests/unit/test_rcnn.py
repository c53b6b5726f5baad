"""R-CNN: softmax fine-tuning on warped proposals, then post-hoc SVMs and ridge box regression."""

from __future__ import annotations

import io

import pytest
import torch

from sightline.models.rcnn import (
    PAPER_BOX_CODER,
    RCNN,
    build,
    collect_regions,
    extract_features,
    fit_svms_and_regressors,
    label_regions,
)

TINY = {"image_size": 64, "crop_size": 16, "width": 8, "stages": 2, "feature_dim": 16}


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 64, 64, generator=generator),
        torch.rand(3, 64, 48, generator=generator),
    ]
    images[0][:, 6:40, 4:30] = torch.tensor([1.0, 0.1, 0.1])[:, None, None]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]),
            "labels": torch.tensor([2]),
            "proposals": torch.tensor([[2.0, 4.0, 28.0, 42.0], [30, 30, 60, 62], [0, 0, 64, 64]]),
        },
        {
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "proposals": torch.tensor([[1.0, 1.0, 20.0, 20.0], [10.0, 30.0, 40.0, 60.0]]),
        },
    ]
    return images, targets


def test_fine_tuning_lowers_the_softmax_loss() -> None:
    torch.manual_seed(0)
    model = build(3, rois_per_image=8, **TINY).train()
    images, targets = _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    first = model(images, targets)
    assert set(first) == {"loss_classifier"}
    for _ in range(20):
        loss = model(images, targets)["loss_classifier"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model(images, targets)["loss_classifier"].item() < 0.5 * first["loss_classifier"].item()


def test_warps_show_the_papers_context_around_the_region() -> None:
    model = build(3, **{**TINY, "crop_size": 227})
    image = torch.zeros(3, 64, 64)
    image[:, 16:48, 16:48] = 1.0
    scaled, _ = model.to_model_scale(image)
    (warp,) = model._warps(scaled, torch.tensor([[16.0, 16.0, 48.0, 48.0]]))
    inside = warp[0] > (warp[0].min() + warp[0].max()) / 2  # the bright square
    rows = inside.any(dim=1).nonzero().squeeze(1)
    columns = inside.any(dim=0).nonzero().squeeze(1)
    # 16 px of context either side of 227, as the paper: the region spans pixels 16..210.
    assert (int(rows.min()), int(rows.max())) == (16, 210)
    assert (int(columns.min()), int(columns.max())) == (16, 210)


def test_label_regions_puts_truths_first_with_their_best_truth() -> None:
    truths = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    proposals = torch.tensor([[1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    regions = label_regions(proposals, truths, torch.tensor([2, 1]))
    assert torch.equal(regions.boxes, torch.cat([truths, proposals]))
    assert regions.labels.tolist() == [2, 1, 2, 0]
    assert torch.equal(regions.truth_boxes[2], truths[0])
    assert torch.equal(regions.truth_boxes[3], torch.zeros(4))
    empty = label_regions(proposals, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64))
    assert empty.labels.tolist() == [0, 0]


def _toy_rows(count: int = 60) -> tuple[torch.Tensor, ...]:
    """Class 1 near +e0, class 2 near +e1, background near -e0-e1; truths are their own boxes."""
    generator = torch.Generator().manual_seed(0)
    noise = 0.2 * torch.randn(3 * count, 16, generator=generator)
    centres = torch.zeros(3, 16)
    centres[0, 0] = centres[1, 1] = 2.0
    centres[2, :2] = -2.0
    features = centres.repeat_interleave(count, dim=0) + noise
    labels = torch.tensor([1, 2, 0]).repeat_interleave(count)
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0]]).repeat(3 * count, 1)
    truths = torch.where((labels > 0)[:, None], boxes, torch.zeros_like(boxes))
    return features, labels, boxes, truths


def test_svms_separate_a_toy_feature_set() -> None:
    model = build(3, svm_steps=200, svm_lr=0.05, **TINY)
    features, labels, boxes, truths = _toy_rows()
    report = fit_svms_and_regressors(model, features, labels, boxes, truths)
    assert report.positives == [60, 60] and report.negatives == [120, 120]
    assert report.hinge_loss < 0.05
    margins = (features * model.feature_scale) @ model.svm_weight.T + model.svm_bias
    for column, label in enumerate((1, 2)):
        assert (margins[labels == label, column] > 0).all()
        assert (margins[labels != label, column] < 0).all()
    assert model.is_fitted


def test_ridge_regression_recovers_a_known_linear_map() -> None:
    model = build(3, ridge_lambda=1e-6, regression_iou=0.3, **TINY)
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(200, 16, generator=generator)
    true_map = 0.02 * torch.randn(17, 4, generator=generator)
    deltas = torch.cat([features, torch.ones(200, 1)], dim=1) @ true_map
    proposals = torch.tensor([[10.0, 20.0, 50.0, 80.0]]).repeat(200, 1)
    truths = PAPER_BOX_CODER.decode_single(deltas, proposals)
    labels = torch.full((200,), 2)
    report = fit_svms_and_regressors(model, features, labels, proposals, truths)
    assert report.regression_rows == [0, 200]
    assert torch.equal(model.box_regression[0], torch.zeros(17, 4))  # class 1 saw no rows
    scaled = torch.cat([features * model.feature_scale, torch.ones(200, 1)], dim=1)
    torch.testing.assert_close(scaled @ model.box_regression[1], deltas, atol=1e-4, rtol=0)


def _always_class_1(model: RCNN) -> RCNN:
    with torch.no_grad():
        model.cnn.classifier.weight.zero_()
        model.cnn.classifier.bias.copy_(torch.tensor([0.0, 6.0, 0.0]))
    return model.eval()


def test_eval_before_stage_2_scores_with_softmax_and_keeps_proposals_in_input_pixels() -> None:
    model = _always_class_1(build(3, **TINY))
    proposals = torch.tensor([[10.0, 20.0, 60.0, 80.0], [90.0, 5.0, 140.0, 45.0]])
    with torch.no_grad():
        (out,) = model([torch.rand(3, 100, 150)], proposals=[proposals])
    order = out["boxes"][:, 0].argsort()
    torch.testing.assert_close(out["boxes"][order], proposals, atol=1e-3, rtol=0)
    assert out["labels"].tolist() == [1, 1] and (out["scores"] > 0.99).all()


def test_eval_after_stage_2_uses_svm_scores_and_moves_boxes_by_the_regressor() -> None:
    model = build(3, **TINY).eval()
    image = torch.rand(3, 100, 150)
    proposal = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    with torch.no_grad():
        model.svm_bias.copy_(torch.tensor([3.0, -3.0]))
        model.box_regression[0, -1] = torch.tensor([0.25, 0.0, 0.0, 0.0])  # bias: +w/4 in x
        model.post_hoc_fitted.fill_(True)
        (out,) = model([image], proposals=[proposal])
    assert out["labels"].tolist() == [1]
    torch.testing.assert_close(out["scores"], torch.sigmoid(torch.tensor([3.0])))
    torch.testing.assert_close(out["boxes"], torch.tensor([[30.0, 20.0, 70.0, 60.0]]))


def test_eval_without_proposals_runs_selective_search() -> None:
    model = _always_class_1(build(3, **TINY))
    with torch.no_grad():
        (out,) = model([torch.rand(3, 90, 130)])
    assert len(out["boxes"]) > 0
    assert out["boxes"][:, 0::2].max() <= 130 and out["boxes"][:, 1::2].max() <= 90


def test_stage_2_from_collected_regions_survives_state_dict_and_pickling() -> None:
    model = build(3, svm_steps=20, **TINY)
    images, targets = _batch()
    regions = collect_regions(model.train(), zip(images, targets, strict=True))
    assert model.training  # collecting features does not change the mode
    assert len(regions.features) == 1 + 3 + 0 + 2  # truths first, then proposals
    assert regions.labels.tolist() == [2, 2, 0, 2, 0, 0]
    fit_svms_and_regressors(model, **vars(regions))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    restored = build(3, **TINY)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert restored.is_fitted
    pickled = io.BytesIO()
    torch.save(model, pickled)
    unpickled = torch.load(io.BytesIO(pickled.getvalue()), weights_only=False)
    with torch.no_grad():
        expected = model.eval()(images[:1], proposals=[targets[0]["proposals"]])
        for other in (restored.eval(), unpickled.eval()):
            got = other(images[:1], proposals=[targets[0]["proposals"]])
            torch.testing.assert_close(got[0]["scores"], expected[0]["scores"])


def test_extract_features_returns_one_row_per_region_in_order() -> None:
    model = build(3, **TINY)
    images, targets = _batch()
    boxes = [t["proposals"] for t in targets]
    features = extract_features(model, images, boxes)
    assert features.shape == (5, 16)
    alone = extract_features(model, images[1:], boxes[1:])
    torch.testing.assert_close(features[3:], alone)
    with pytest.raises(ValueError, match="2 images but 1 region sets"):
        extract_features(model, images, boxes[:1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": torch.zeros(6, 5)}, r"features must have shape \(N, 16\)"),
        ({"labels": torch.zeros(5, dtype=torch.int64)}, r"labels must have shape \(6,\)"),
        ({"truth_boxes": torch.zeros(6, 3)}, r"truth_boxes must have shape \(6, 4\)"),
        ({"labels": torch.full((6,), 3)}, r"labels must lie in \[0, 2\]"),
    ],
)
def test_bad_stage_2_rows_are_clear_errors(change: dict, message: str) -> None:
    rows = {
        "features": torch.zeros(6, 16),
        "labels": torch.zeros(6, dtype=torch.int64),
        "proposal_boxes": torch.zeros(6, 4),
        "truth_boxes": torch.zeros(6, 4),
    }
    model = build(3, **TINY)
    with pytest.raises(ValueError, match=message):
        fit_svms_and_regressors(model, **{**rows, **change})
    assert not model.is_fitted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_classes": 1}, "num_classes counts"), ({"num_classes": 3, "context": 0.5}, "context")],
)
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(**{**TINY, **kwargs})
