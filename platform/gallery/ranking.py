"""The identification rule (DESIGN.md, Identification), pure: embeddings in, ranked identities out.

A query's distance to an identity is the mean L2 distance to that identity's templates (rule
"mean") or the distance to its nearest template ("min"). Identities rank by that distance,
nearest first; equal distances rank in the sorted order of the identity labels. The query is
the first-ranked identity when its distance is strictly below γ, otherwise "unknown".

The gallery (sightline.gallery.store, after faiss has proposed the candidates) and the
evaluation (top1 and dir_at_far_1e-2 in sightline.evaluate.identification) both answer with
these functions, so the reported metrics measure the rule the server applies. No SQLite and no
faiss here: numpy arrays in, numpy arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

Rule = Literal["mean", "min"]
RULES: tuple[str, ...] = ("mean", "min")
# float32 values in one (queries x templates x D) block of differences: bounds the memory.
DIFFERENCE_BLOCK = 1 << 22


@dataclass(frozen=True)
class Ranking:
    """Per query, the identities nearest first and their distances under the rule."""

    identities: np.ndarray  # (Q, n) identity labels
    distances: np.ndarray  # (Q, n) float


def check_rule(rule: object) -> Rule:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    return cast(Rule, rule)


def accepted(distance: float | np.ndarray, gamma: float) -> bool | np.ndarray:
    """Whether a distance identifies (True) or is "unknown" (False): strictly below γ."""
    return distance < gamma


def l2_distances(queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(Q, D) x (T, D) -> (Q, T) float32 L2 distances, summed from the differences themselves.

    Not |q|² + |t|² - 2 q·t: in float32 that loses small distances to rounding (a template's
    distance to itself came out as 0.004 instead of 0), and γ decisions live near them.
    """
    queries = np.asarray(queries, dtype=np.float32)
    templates = np.asarray(templates, dtype=np.float32)
    rows = max(1, DIFFERENCE_BLOCK // max(1, templates.size))
    blocks = [
        np.sqrt(((queries[start : start + rows, None, :] - templates[None, :, :]) ** 2).sum(axis=2))
        for start in range(0, len(queries), rows)
    ]
    return np.concatenate(blocks) if blocks else np.zeros((0, len(templates)), dtype=np.float32)


def identity_distances(
    queries: np.ndarray, templates: np.ndarray, template_labels: np.ndarray, rule: Rule = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, I) distance of each query to each identity under `rule`, and the I identities (sorted).

    `templates[i]` belongs to the identity `template_labels[i]`; an identity's templates are
    summed in the order they are given.
    """
    rule = check_rule(rule)
    queries, templates, template_labels = _checked(queries, templates, template_labels)
    order = np.argsort(template_labels, kind="stable")
    identities, starts, counts = np.unique(
        template_labels[order], return_index=True, return_counts=True
    )
    distances = l2_distances(queries, templates[order])
    if rule == "mean":
        by_identity = np.add.reduceat(distances, starts, axis=1) / counts
    else:
        by_identity = np.minimum.reduceat(distances, starts, axis=1)
    return by_identity, identities


def rank_identities(
    queries: np.ndarray,
    templates: np.ndarray,
    template_labels: np.ndarray,
    rule: Rule = "mean",
    top: int | None = None,
) -> Ranking:
    """The identities of `template_labels` ranked for each query (the `top` nearest, or all)."""
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    distances, identities = identity_distances(queries, templates, template_labels, rule)
    # Stable: equal distances keep the sorted order of the identities.
    order = np.argsort(distances, axis=1, kind="stable")[:, :top]
    return Ranking(identities[order], np.take_along_axis(distances, order, axis=1))


def _checked(
    queries: np.ndarray, templates: np.ndarray, template_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    queries = np.asarray(queries)
    templates = np.asarray(templates)
    template_labels = np.asarray(template_labels)
    if templates.ndim != 2 or len(templates) == 0:
        raise ValueError(f"templates must be a non-empty (T, D) array, got {templates.shape}")
    if queries.ndim != 2 or queries.shape[1] != templates.shape[1]:
        raise ValueError(
            f"queries must be (Q, {templates.shape[1]}) like the templates, got {queries.shape}"
        )
    if template_labels.shape != (len(templates),):
        raise ValueError(
            f"{template_labels.size} template labels for {len(templates)} templates; one each"
        )
    return queries, templates, template_labels
