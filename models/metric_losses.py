"""Metric-learning losses, pair sampling and online triplet mining (pure functions).

Notation: f(I) is an embedding, d(A, B) = ||f(A) - f(B)||_2 the L2 distance (or, with
`squared=True`, ||f(A) - f(B)||_2^2). Labels are identity indices; y = 0 marks a pair of the
same person, y = 1 a pair of different people (the seed's convention).

- contrastive: L = (1 - y)/2 * d + y/2 * max(0, m - d)
- triplet:     L = max(0, m + d(I, P) - d(I, N))   (I anchor, P same person, N another person)

Losses are per pair / per triplet; the embedders average them over the mined set. Written here
rather than taken from pytorch-metric-learning: its ContrastiveLoss has no 1/2 weights and both
its ContrastiveLoss and TripletMarginLoss average only the non-zero terms by default
(AvgNonZeroReducer), so neither is the seed's definition as given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Mining = Literal["batch_hard", "semi_hard"]
MINING_STRATEGIES: tuple[str, ...] = ("batch_hard", "semi_hard")
_SQRT_EPS = 1e-12  # below this squared distance sqrt's gradient is cut (it is infinite at 0)


@dataclass(frozen=True)
class Pairs:
    """Index pairs into a batch and their y (0 = same identity, 1 = different)."""

    first: Tensor
    second: Tensor
    y: Tensor


@dataclass(frozen=True)
class Triplets:
    """Index triplets into a batch: anchor I, positive P (same identity), negative N."""

    anchor: Tensor
    positive: Tensor
    negative: Tensor

    def __len__(self) -> int:
        return int(self.anchor.numel())


def pair_distance(first: Tensor, second: Tensor, squared: bool = False) -> Tensor:
    """Row-wise d(first_i, second_i) for (N, D) inputs: L2, or squared L2 with `squared`.

    The gradient is zero (not NaN) for identical rows.
    """
    squared_distance = (first - second).pow(2).sum(dim=-1)
    if squared:
        return squared_distance
    return squared_distance.clamp_min(_SQRT_EPS).sqrt()


def distance_matrix(embeddings: Tensor, squared: bool = False) -> Tensor:
    """(N, N) distances between all rows of an (N, D) batch (for mining; no gradient needed)."""
    squared_distance = torch.cdist(embeddings, embeddings).pow(2)
    if squared:
        return squared_distance
    return squared_distance.sqrt()


def contrastive_loss(distance: Tensor, y: Tensor, margin: float) -> Tensor:
    """Per-pair L = (1 - y)/2 * d + y/2 * max(0, m - d); y = 0 same person, 1 different.

    `distance` holds d for each pair (see pair_distance); returns a tensor of the same shape.
    """
    y = y.to(distance.dtype)
    return (1.0 - y) / 2.0 * distance + y / 2.0 * (margin - distance).clamp_min(0.0)


def triplet_loss(anchor_positive: Tensor, anchor_negative: Tensor, margin: float) -> Tensor:
    """Per-triplet L = max(0, m + d(I, P) - d(I, N))."""
    return (margin + anchor_positive - anchor_negative).clamp_min(0.0)


def _same_identity(labels: Tensor) -> Tensor:
    return labels[:, None] == labels[None, :]


def sample_pairs(
    labels: Tensor,
    *,
    negatives_per_positive: float = 1.0,
    generator: torch.Generator | None = None,
) -> Pairs:
    """Pairs for the contrastive loss from one batch.

    Every unordered positive pair (i < j, same label, y = 0) plus
    ceil(negatives_per_positive * max(#positives, 1)) negative pairs (i < j, different labels,
    y = 1) drawn uniformly without replacement (all of them when there are fewer).
    """
    if negatives_per_positive < 0:
        raise ValueError(f"negatives_per_positive must be >= 0, got {negatives_per_positive}")
    n = labels.numel()
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=labels.device), diagonal=1)
    same = _same_identity(labels)
    positive = (same & upper).nonzero()
    negative = (~same & upper).nonzero()
    wanted = math.ceil(negatives_per_positive * max(len(positive), 1))
    if wanted < len(negative):
        pick = torch.randperm(len(negative), generator=generator)[:wanted]
        negative = negative[pick.to(labels.device)]
    pairs = torch.cat([positive, negative])
    y = torch.cat(
        [
            torch.zeros(len(positive), dtype=torch.int64, device=labels.device),
            torch.ones(len(negative), dtype=torch.int64, device=labels.device),
        ]
    )
    return Pairs(first=pairs[:, 0], second=pairs[:, 1], y=y)


def batch_hard_triplets(distances: Tensor, labels: Tensor) -> Triplets:
    """Batch-hard mining (Hermans et al. 2017): one triplet per anchor I that has a positive
    and a negative in the batch, with P = argmax d(I, P) over I's positives (hardest positive)
    and N = argmin d(I, N) over I's negatives (hardest negative). Ties go to the lower index.
    """
    same = _same_identity(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive_mask, negative_mask = same & ~eye, ~same
    valid = positive_mask.any(dim=1) & negative_mask.any(dim=1)
    hardest_positive = distances.masked_fill(~positive_mask, -math.inf).argmax(dim=1)
    hardest_negative = distances.masked_fill(~negative_mask, math.inf).argmin(dim=1)
    anchor = valid.nonzero().flatten()
    return Triplets(anchor, hardest_positive[anchor], hardest_negative[anchor])


def semi_hard_triplets(distances: Tensor, labels: Tensor) -> Triplets:
    """Semi-hard mining (FaceNet, Schroff et al. 2015), one triplet per ordered positive pair
    (I, P), I != P, when I has a negative in the batch:

    N = argmin d(I, N) over negatives with d(I, N) > d(I, P), the closest negative that is
    farther than the positive (it violates the margin exactly when d(I, N) < d(I, P) + m);
    when every negative is closer than P, N = argmax d(I, N), the least hard of them (the
    fallback of TensorFlow Addons' triplet_semihard_loss, so early batches still train).
    """
    same = _same_identity(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    has_negative = (~same).any(dim=1)
    anchor, positive = ((same & ~eye) & has_negative[:, None]).nonzero().unbind(dim=1)
    anchor_rows = distances[anchor]  # (T, N)
    negative_mask = ~same[anchor]
    farther = negative_mask & (anchor_rows > distances[anchor, positive][:, None])
    semi_hard = anchor_rows.masked_fill(~farther, math.inf).argmin(dim=1)
    least_hard = anchor_rows.masked_fill(~negative_mask, -math.inf).argmax(dim=1)
    negative = torch.where(farther.any(dim=1), semi_hard, least_hard)
    return Triplets(anchor, positive, negative)


def mine_triplets(distances: Tensor, labels: Tensor, strategy: Mining) -> Triplets:
    """Dispatch to batch_hard_triplets or semi_hard_triplets by name."""
    if strategy == "batch_hard":
        return batch_hard_triplets(distances, labels)
    if strategy == "semi_hard":
        return semi_hard_triplets(distances, labels)
    raise ValueError(f"unknown triplet mining {strategy!r}; known: {', '.join(MINING_STRATEGIES)}")
