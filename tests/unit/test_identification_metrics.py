"""Verification and identification metrics (platform/evaluate/identification.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sightline.evaluate.identification import (
    METRIC_NAMES,
    calibrate_gamma,
    dir_at_far,
    eer,
    embed_batches,
    identification_metrics,
    pair_distances,
    roc_auc,
    split_enroll_query,
    tar_at_far,
    top1_accuracy,
)
from sightline.models.embedders import build_pixel_template


def test_roc_auc_counts_genuine_below_impostor_pairs() -> None:
    # 1<2, 1<4, 3<4 hold; 3<2 does not: 3 of 4.
    assert roc_auc([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)
    assert roc_auc([0.1, 0.2], [0.5, 0.9]) == 1.0
    assert roc_auc([0.5, 0.9], [0.1, 0.2]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5  # ties count half


def test_eer_by_hand() -> None:
    assert eer([0.1, 0.2], [0.5, 0.9]) == 0.0
    assert eer([0.5, 0.9], [0.1, 0.2]) == 1.0
    assert eer([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.5)
    # FRR is 0.25 until t = 5, where FAR jumps from 0 to 1: they cross at 0.25.
    assert eer([0.0, 0.0, 0.0, 10.0], [5.0, 5.0, 5.0, 5.0]) == pytest.approx(0.25)


def test_calibrate_gamma_takes_the_largest_threshold_within_the_target_far() -> None:
    impostor = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    genuine = [0.05, 0.25, 0.35]
    threshold = calibrate_gamma(genuine, impostor, target_far=0.2)
    assert threshold.gamma == pytest.approx(0.3)  # 0.1 and 0.2 lie below it: FAR 0.2
    assert (threshold.far, threshold.tar) == (pytest.approx(0.2), pytest.approx(2 / 3))
    assert calibrate_gamma(genuine, impostor, 0.05).gamma == pytest.approx(0.1)  # FAR 0
    everything = calibrate_gamma(genuine, impostor, 1.0)
    assert everything.gamma > 1.0 and everything.far == 1.0
    assert tar_at_far(genuine, impostor, 0.2) == pytest.approx(2 / 3)


def test_calibrated_far_never_exceeds_the_target_even_with_ties() -> None:
    threshold = calibrate_gamma([0.1], [0.5] * 10, target_far=0.5)
    assert threshold.gamma == 0.5 and threshold.far == 0.0
    rng = np.random.default_rng(0)
    impostor = rng.normal(1.0, 0.2, size=5000)
    for target in (1e-3, 1e-2, 0.1):
        assert calibrate_gamma([0.5], impostor, target).far <= target


@pytest.mark.parametrize(
    ("genuine", "impostor", "target", "message"),
    [
        ([0.1], [0.2], 0.0, "target FAR must be in"),
        ([0.1], [0.2], 1.5, "target FAR must be in"),
        ([], [0.2], 0.1, "genuine distances are empty"),
        ([0.1], [np.nan], 0.1, "impostor distances contain NaN"),
    ],
)
def test_calibration_errors_name_the_problem(
    genuine: list[float], impostor: list[float], target: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate_gamma(genuine, impostor, target)


def test_pair_distances_split_genuine_and_impostor_pairs() -> None:
    embeddings = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    genuine, impostor = pair_distances(embeddings, np.array([7, 7, 8]))
    assert genuine.tolist() == pytest.approx([5.0])
    assert sorted(impostor.tolist()) == pytest.approx([1.0, np.sqrt(18.0)])
    _, capped = pair_distances(embeddings, np.array([1, 2, 3]), max_impostor_pairs=2)
    assert len(capped) == 2


def test_split_enroll_query_keeps_k_templates_per_identity() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    enroll, query = split_enroll_query(labels, k=2, seed=3)
    assert sorted(np.concatenate([enroll, query]).tolist()) == list(range(7))
    assert np.bincount(labels[enroll]).tolist() == [2, 2]
    again, _ = split_enroll_query(labels, k=2, seed=3)
    assert again.tolist() == enroll.tolist()
    with pytest.raises(ValueError, match="identity 0 has 3 images"):
        split_enroll_query(labels, k=3)


def test_top1_and_dir_at_far_by_hand() -> None:
    templates = np.array([[0.0, 0.0], [10.0, 0.0]])
    template_labels = np.array([0, 1])
    # Two correct queries (distances 0.5 and 2) and one nearer to the wrong identity.
    queries = np.array([[0.5, 0.0], [10.0, 2.0], [6.0, 0.0]])
    query_labels = np.array([0, 1, 0])
    impostors = np.array([[0.0, 1.0], [0.0, 3.0]])  # best distances 1 and 3
    assert top1_accuracy(templates, template_labels, queries, query_labels) == pytest.approx(2 / 3)
    # FAR 0.5 of two impostors: γ = 3 admits both correct queries.
    assert dir_at_far(
        templates, template_labels, queries, query_labels, impostors, far=0.5
    ) == pytest.approx(2 / 3)
    # FAR 1%: γ = 1 (no impostor accepted) admits only the query at 0.5.
    assert dir_at_far(
        templates, template_labels, queries, query_labels, impostors, far=0.01
    ) == pytest.approx(1 / 3)


def test_identification_metrics_reports_the_six_names_and_is_perfect_when_separable() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 8)) * 10
    labels = np.repeat(np.arange(8), 5)
    embeddings = centres[labels] + 0.01 * rng.normal(size=(40, 8))
    impostor_labels = np.repeat(np.arange(4), 3)
    impostors = centres[8 + impostor_labels] + 0.01 * rng.normal(size=(12, 8))
    metrics = identification_metrics(embeddings, labels, impostors, impostor_labels, k=2)
    assert tuple(metrics) == METRIC_NAMES
    assert metrics == {
        "roc_auc": 1.0,
        "eer": 0.0,
        "tar_at_far_1e-2": 1.0,
        "tar_at_far_1e-3": 1.0,
        "top1": 1.0,
        "dir_at_far_1e-2": 1.0,
    }


def test_identification_metrics_on_random_embeddings_are_at_chance() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), 6)
    impostor_labels = np.repeat(np.arange(10), 6)
    metrics = identification_metrics(
        rng.normal(size=(120, 16)), labels, rng.normal(size=(60, 16)), impostor_labels, k=3
    )
    assert 0.4 < metrics["roc_auc"] < 0.6 and 0.4 < metrics["eer"] < 0.6
    assert metrics["top1"] < 0.25


def test_embed_batches_runs_in_eval_mode_and_restores_the_mode() -> None:
    model = build_pixel_template(num_classes=0, image_size=4, channels=1).train()
    images = torch.rand(5, 1, 4, 4)
    batches = [(images[:3], torch.tensor([0, 0, 1])), (images[3:], torch.tensor([1, 2]))]
    embeddings, labels = embed_batches(model, batches)
    assert embeddings.shape == (5, 16) and labels.tolist() == [0, 0, 1, 1, 2]
    assert np.linalg.norm(embeddings, axis=1) == pytest.approx(np.ones(5), abs=1e-6)
    assert model.training
