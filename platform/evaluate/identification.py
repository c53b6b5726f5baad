"""Verification and identification metrics from embedding distances (DESIGN.md names).

Conventions: distances are L2 between embeddings; a pair / query is accepted when its distance
is strictly below the threshold γ (the gallery's rule). FAR(γ) = share of impostor distances
< γ, TAR(γ) = share of genuine distances < γ, FRR = 1 - TAR.

- roc_auc: P(genuine distance < impostor distance), ties counting 1/2 (Mann-Whitney).
- eer: the rate where FAR = FRR, linearly interpolated between the ROC's points.
- tar_at_far_1e-2 / 1e-3: TAR at γ = calibrate_gamma(…, target FAR).
- top1: closed set; each unseen identity enrolled with k templates, each remaining image
  queried; correct when the identity ranked first is its own.
- dir_at_far_1e-2: open set (detection and identification rate); γ set so that 1% of the
  impostor queries (identities never enrolled) are accepted; DIR = share of enrolled-identity
  queries that are ranked first on their own identity AND accepted (below γ).

Ranking and acceptance are the server's own rule, sightline.gallery.ranking (mean or min
distance, ties to the identity that sorts first, strictly below γ), not a copy of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sightline.gallery.ranking import Rule, accepted, rank_identities

METRIC_NAMES = (
    "roc_auc",
    "eer",
    "tar_at_far_1e-2",
    "tar_at_far_1e-3",
    "top1",
    "dir_at_far_1e-2",
)


def _distances(values: object, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} distances are empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} distances contain NaN or infinity")
    return array


@dataclass(frozen=True)
class Threshold:
    """γ and the rates it gives on the data it was calibrated on."""

    gamma: float
    target_far: float
    far: float
    tar: float


def calibrate_gamma(genuine: object, impostor: object, target_far: float) -> Threshold:
    """The largest γ whose FAR (impostor distances < γ) does not exceed `target_far`.

    With n impostor distances sorted ascending s_0 <= … <= s_{n-1} and j = floor(target_far·n),
    γ = s_j (at most j impostors lie strictly below it); γ just above s_{n-1} when j = n. When
    target_far < 1/n the estimate is γ = s_0 (FAR 0): add impostor pairs to resolve it.
    """
    if not 0.0 < target_far <= 1.0:
        raise ValueError(f"target FAR must be in (0, 1], got {target_far}")
    genuine_d = _distances(genuine, "genuine")
    impostor_d = np.sort(_distances(impostor, "impostor"))
    allowed = math.floor(target_far * impostor_d.size + 1e-9)
    if allowed >= impostor_d.size:
        gamma = float(np.nextafter(impostor_d[-1], np.inf))
    else:
        gamma = float(impostor_d[allowed])
    return Threshold(
        gamma=gamma,
        target_far=target_far,
        far=float(np.mean(impostor_d < gamma)),
        tar=float(np.mean(genuine_d < gamma)),
    )


def tar_at_far(genuine: object, impostor: object, far: float) -> float:
    return calibrate_gamma(genuine, impostor, far).tar


def roc_auc(genuine: object, impostor: object) -> float:
    """P(a genuine distance < an impostor distance) + 1/2 P(equal)."""
    genuine_d = _distances(genuine, "genuine")
    impostor_d = np.sort(_distances(impostor, "impostor"))
    below = np.searchsorted(impostor_d, genuine_d, side="left")
    at_most = np.searchsorted(impostor_d, genuine_d, side="right")
    greater = impostor_d.size - at_most
    ties = at_most - below
    return float(np.mean((greater + 0.5 * ties) / impostor_d.size))


def eer(genuine: object, impostor: object) -> float:
    """Equal error rate: FAR = FRR, interpolated between consecutive thresholds."""
    genuine_d = np.sort(_distances(genuine, "genuine"))
    impostor_d = np.sort(_distances(impostor, "impostor"))
    thresholds = np.unique(np.concatenate([genuine_d, impostor_d]))
    # Accepting d <= t at each observed distance t, starting from "accept nothing".
    far = np.concatenate(
        [[0.0], np.searchsorted(impostor_d, thresholds, "right") / impostor_d.size]
    )
    frr = np.concatenate(
        [[1.0], 1.0 - np.searchsorted(genuine_d, thresholds, "right") / genuine_d.size]
    )
    gap = frr - far  # decreases from 1 to <= 0
    crossing = int(np.argmax(gap <= 0.0))
    before, after = gap[crossing - 1], gap[crossing]
    weight = before / (before - after)
    return float(far[crossing - 1] + weight * (far[crossing] - far[crossing - 1]))


def pairwise_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(A, D) x (B, D) -> (A, B) L2 distances."""
    first = np.asarray(first, dtype=np.float32)
    second = np.asarray(second, dtype=np.float32)
    squared = (
        (first**2).sum(axis=1)[:, None] + (second**2).sum(axis=1)[None, :] - 2.0 * first @ second.T
    )
    return np.sqrt(np.clip(squared, 0.0, None))


def pair_distances(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    max_impostor_pairs: int = 1_000_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor distances over every unordered pair of images.

    Impostor pairs beyond `max_impostor_pairs` are subsampled uniformly (seeded).
    """
    labels = np.asarray(labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(labels)} labels for {len(embeddings)} embeddings")
    distances = pairwise_distances(embeddings, embeddings)
    rows, cols = np.triu_indices(len(labels), k=1)
    same = labels[rows] == labels[cols]
    genuine = distances[rows[same], cols[same]]
    impostor = distances[rows[~same], cols[~same]]
    if impostor.size > max_impostor_pairs:
        keep = np.random.default_rng(seed).choice(impostor.size, max_impostor_pairs, replace=False)
        impostor = impostor[keep]
    return genuine.astype(np.float64), impostor.astype(np.float64)


def split_enroll_query(labels: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of k enrolled templates per identity and of the remaining (query) images.

    Every identity needs more than k images, so that it is also queried.
    """
    if k < 1:
        raise ValueError(f"k (templates per identity) must be >= 1, got {k}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    enroll: list[np.ndarray] = []
    query: list[np.ndarray] = []
    for identity in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == identity))
        if len(members) <= k:
            raise ValueError(
                f"identity {identity} has {len(members)} images; enrolling k={k} templates and "
                "querying at least one needs more"
            )
        enroll.append(members[:k])
        query.append(members[k:])
    return np.sort(np.concatenate(enroll)), np.sort(np.concatenate(query))


def _best_identity(
    queries: np.ndarray, templates: np.ndarray, template_labels: np.ndarray, rule: Rule
) -> tuple[np.ndarray, np.ndarray]:
    ranking = rank_identities(queries, templates, template_labels, rule, top=1)
    return ranking.identities[:, 0], ranking.distances[:, 0]


def top1_accuracy(
    templates: np.ndarray,
    template_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    rule: Rule = "mean",
) -> float:
    """Closed set: share of queries whose first-ranked identity (mean/min rule) is their own."""
    predicted, _ = _best_identity(queries, templates, template_labels, rule)
    return float(np.mean(predicted == np.asarray(query_labels)))


def dir_at_far(
    templates: np.ndarray,
    template_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    impostor_queries: np.ndarray,
    far: float = 1e-2,
    rule: Rule = "mean",
) -> float:
    """Open set: DIR at the γ that accepts a share `far` of the impostor queries."""
    predicted, best = _best_identity(queries, templates, template_labels, rule)
    _, impostor_best = _best_identity(impostor_queries, templates, template_labels, rule)
    gamma = calibrate_gamma(best, impostor_best, far).gamma
    return float(np.mean((predicted == np.asarray(query_labels)) & accepted(best, gamma)))


def identification_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray,
    impostor_embeddings: np.ndarray,
    impostor_labels: np.ndarray,
    *,
    k: int = 3,
    rule: Rule = "mean",
    seed: int = 0,
) -> dict[str, float]:
    """All six metrics for unseen identities (enrolled) and impostor identities (never enrolled).

    Verification (roc_auc, eer, tar_at_far_*) uses every pair of images of the unseen and
    impostor identities together; top1 and dir_at_far_1e-2 enroll k templates per unseen
    identity and query with the rest, plus every impostor image for the open set.
    """
    all_embeddings = np.concatenate([embeddings, impostor_embeddings])
    all_labels = np.concatenate(
        [
            np.asarray(labels).astype(str),
            np.char.add("impostor:", np.asarray(impostor_labels).astype(str)),
        ]
    )
    genuine, impostor = pair_distances(all_embeddings, all_labels, seed=seed)
    enroll, query = split_enroll_query(np.asarray(labels), k, seed)
    templates, template_labels = embeddings[enroll], np.asarray(labels)[enroll]
    queries, query_labels = embeddings[query], np.asarray(labels)[query]
    return {
        "roc_auc": roc_auc(genuine, impostor),
        "eer": eer(genuine, impostor),
        "tar_at_far_1e-2": tar_at_far(genuine, impostor, 1e-2),
        "tar_at_far_1e-3": tar_at_far(genuine, impostor, 1e-3),
        "top1": top1_accuracy(templates, template_labels, queries, query_labels, rule),
        "dir_at_far_1e-2": dir_at_far(
            templates, template_labels, queries, query_labels, impostor_embeddings, 1e-2, rule
        ),
    }


@torch.no_grad()
def embed_batches(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Run an embedder in eval mode over (images, labels) batches -> (N, D) float32, (N,)."""
    was_training = model.training
    model.eval()
    embeddings: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    try:
        for images, batch_labels in batches:
            embeddings.append(model(images.to(device)).float().cpu().numpy())
            labels.append(np.asarray(batch_labels))
    finally:
        model.train(was_training)
    if not embeddings:
        raise ValueError("no batches to embed")
    return np.concatenate(embeddings), np.concatenate(labels)
