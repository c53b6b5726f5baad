"""Contrastive and triplet losses, pair sampling and online mining (models/metric_losses.py)."""

from __future__ import annotations

import pytest
import torch

from sightline.models.metric_losses import (
    batch_hard_triplets,
    contrastive_loss,
    distance_matrix,
    mine_triplets,
    pair_distance,
    sample_pairs,
    semi_hard_triplets,
    triplet_loss,
)


def _points(*xs: float) -> torch.Tensor:
    """1-D embeddings as (N, 1), so distances are |x_i - x_j|."""
    return torch.tensor(xs, dtype=torch.float32)[:, None]


def test_contrastive_loss_by_hand() -> None:
    # d = 5 for every pair: a 3-4-5 triangle.
    first = torch.zeros(3, 2)
    second = torch.tensor([[3.0, 4.0], [3.0, 4.0], [6.0, 8.0]])
    y = torch.tensor([0, 1, 1])  # same person, different, different (d = 10)
    distance = pair_distance(first, second)
    assert distance.tolist() == pytest.approx([5.0, 5.0, 10.0])
    loss = contrastive_loss(distance, y, margin=7.0)
    # (1-0)/2*5 = 2.5 ; 1/2*max(0, 7-5) = 1.0 ; 1/2*max(0, 7-10) = 0
    assert loss.tolist() == pytest.approx([2.5, 1.0, 0.0])


def test_contrastive_loss_with_squared_distance() -> None:
    distance = pair_distance(torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [1.0, 2.0]]), True)
    assert distance.tolist() == pytest.approx([25.0, 5.0])
    loss = contrastive_loss(distance, torch.tensor([0, 1]), margin=9.0)
    assert loss.tolist() == pytest.approx([12.5, 2.0])  # 25/2 ; (9-5)/2


def test_triplet_loss_by_hand() -> None:
    anchor_positive = torch.tensor([5.0, 1.0, 4.0])
    anchor_negative = torch.tensor([10.0, 10.0, 3.0])
    loss = triplet_loss(anchor_positive, anchor_negative, margin=7.0)
    # max(0, 7+5-10) = 2 ; max(0, 7+1-10) = 0 ; max(0, 7+4-3) = 8
    assert loss.tolist() == pytest.approx([2.0, 0.0, 8.0])


def test_distance_gradient_is_finite_for_identical_embeddings() -> None:
    first = torch.ones(2, 3, requires_grad=True)
    pair_distance(first, torch.ones(2, 3)).sum().backward()
    assert torch.isfinite(first.grad).all()


def test_distance_matrix_matches_pair_distance() -> None:
    embeddings = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    matrix = distance_matrix(embeddings)
    rows, cols = torch.triu_indices(5, 5, offset=1)
    expected = pair_distance(embeddings[rows], embeddings[cols])
    assert matrix[rows, cols].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    squared = distance_matrix(embeddings, squared=True)
    assert squared[rows, cols].tolist() == pytest.approx((expected**2).tolist(), abs=1e-4)


def test_pair_sampler_takes_every_positive_and_as_many_negatives() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1])
    pairs = sample_pairs(labels, generator=torch.Generator().manual_seed(0))
    found = {
        (int(i), int(j), int(y)) for i, j, y in zip(pairs.first, pairs.second, pairs.y, strict=True)
    }
    positives = {(i, j) for i, j, y in found if y == 0}
    assert positives == {(0, 1), (2, 3), (2, 4), (3, 4)}
    negatives = {(i, j) for i, j, y in found if y == 1}
    assert len(negatives) == 4 and all(labels[i] != labels[j] for i, j in negatives)
    assert all(i < j for i, j, _ in found)
    everything = sample_pairs(labels, negatives_per_positive=10)
    assert int(everything.y.sum()) == 6  # all 2 x 3 negative pairs


def test_pair_sampler_without_positives_still_gives_negatives() -> None:
    pairs = sample_pairs(torch.tensor([0, 1, 2]))
    assert pairs.y.tolist() == [1]


def test_batch_hard_picks_the_farthest_positive_and_nearest_negative() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # identity 2 has no positive: never an anchor
    embeddings = _points(0.0, 1.0, 3.0, 2.5, 10.0, 20.0)
    triplets = batch_hard_triplets(distance_matrix(embeddings), labels)
    assert triplets.anchor.tolist() == [0, 1, 2, 3, 4]
    assert triplets.positive.tolist() == [2, 2, 0, 4, 3]
    assert triplets.negative.tolist() == [3, 3, 3, 2, 2]


def test_semi_hard_picks_the_nearest_negative_beyond_the_positive() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1])
    embeddings = _points(0.0, 2.0, 1.0, 3.0, 5.0)
    triplets = semi_hard_triplets(distance_matrix(embeddings), labels)
    found = {
        (int(a), int(p)): int(n)
        for a, p, n in zip(triplets.anchor, triplets.positive, triplets.negative, strict=True)
    }
    # (0, 1): d(I,P) = 2; negatives at 1, 3, 5 -> the nearest beyond 2 is x=3 (index 3).
    assert found[(0, 1)] == 3
    # (1, 0): d(I,P) = 2; negatives at 1, 1, 3 -> index 4.
    assert found[(1, 0)] == 4
    # (2, 3): d(I,P) = 2; both negatives at 1 are closer -> fallback to the farthest (first).
    assert found[(2, 3)] == 0
    assert len(found) == 2 + 6  # every ordered positive pair


def test_unknown_mining_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown triplet mining 'hardest'"):
        mine_triplets(torch.zeros(2, 2), torch.tensor([0, 1]), "hardest")  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["batch_hard", "semi_hard"])
def test_a_triplet_step_lowers_d_ip_and_raises_d_in(strategy: str) -> None:
    # I at the origin, P one unit away, N closer than P: an active triplet.
    embeddings = torch.nn.Parameter(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]]))
    labels = torch.tensor([0, 0, 1])

    def distances() -> tuple[float, float]:
        with torch.no_grad():
            return (
                float(pair_distance(embeddings[:1], embeddings[1:2])),
                float(pair_distance(embeddings[:1], embeddings[2:3])),
            )

    d_ip, d_in = distances()
    triplets = mine_triplets(distance_matrix(embeddings.detach()), labels, strategy)  # type: ignore[arg-type]
    anchor = embeddings[triplets.anchor]
    loss = triplet_loss(
        pair_distance(anchor, embeddings[triplets.positive]),
        pair_distance(anchor, embeddings[triplets.negative]),
        margin=1.0,
    ).mean()
    loss.backward()
    torch.optim.SGD([embeddings], lr=0.05).step()
    new_d_ip, new_d_in = distances()
    assert new_d_ip < d_ip
    assert new_d_in > d_in


def test_a_contrastive_step_pulls_same_and_pushes_different() -> None:
    embeddings = torch.nn.Parameter(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]]))
    pairs = sample_pairs(torch.tensor([0, 0, 1]), negatives_per_positive=2)
    distance = pair_distance(embeddings[pairs.first], embeddings[pairs.second])
    contrastive_loss(distance, pairs.y, margin=2.0).mean().backward()
    torch.optim.SGD([embeddings], lr=0.05).step()
    with torch.no_grad():
        after = pair_distance(embeddings[pairs.first], embeddings[pairs.second])
    moved = (after - distance.detach()).tolist()
    for change, y in zip(moved, pairs.y.tolist(), strict=True):
        assert change < 0 if y == 0 else change > 0
