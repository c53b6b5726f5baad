"""One identification rule (sightline.gallery.ranking) for the server's gallery and the metrics.

The gallery (real SQLite + faiss in tmp_path) and the evaluation get the same templates and
queries and must give the same answers: identity or unknown, distance, candidate order, and
hence the same top1 and dir_at_far_1e-2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sightline.evaluate.identification import calibrate_gamma, dir_at_far, top1_accuracy
from sightline.gallery.ranking import accepted, identity_distances, l2_distances, rank_identities
from sightline.gallery.store import Gallery

TEMPLATES_PER_PERSON = 3
TINY = np.zeros((2, 2), dtype=np.uint8)


def _people(count: int) -> np.ndarray:
    """Zero-padded names, so that their sorted order is their number's order."""
    return np.array([f"p{i:03d}" for i in range(count)])


def _clustered(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """150 people x 3 templates (450 > faiss's first search window), queries and strangers."""
    rng = np.random.default_rng(seed)
    people = 150
    centres = rng.normal(size=(people + 40, 16)).astype(np.float32)
    labels = np.repeat(np.arange(people), TEMPLATES_PER_PERSON)
    templates = centres[labels] + 0.7 * rng.normal(size=(len(labels), 16)).astype(np.float32)
    query_labels = rng.integers(people, size=120)
    queries = centres[query_labels] + 0.7 * rng.normal(size=(120, 16)).astype(np.float32)
    strangers = centres[people + rng.integers(40, size=60)] + 0.7 * rng.normal(size=(60, 16))
    return templates, _people(people)[labels], queries, _people(people)[query_labels], strangers


def _ties(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points of a small integer grid: many queries are equally near several people."""
    rng = np.random.default_rng(seed)
    people = 30
    labels = np.repeat(np.arange(people), TEMPLATES_PER_PERSON)
    templates = rng.integers(0, 3, size=(len(labels), 4)).astype(np.float32)
    query_labels = rng.integers(people, size=100)
    queries = rng.integers(0, 3, size=(100, 4)).astype(np.float32)
    strangers = rng.integers(0, 3, size=(50, 4)) + 0.5  # off the grid: γ > 0 for the server
    return templates, _people(people)[labels], queries, _people(people)[query_labels], strangers


def _enrolled(tmp_path: Path, templates: np.ndarray, labels: np.ndarray) -> Gallery:
    # Enrolled in reverse name order, so that faiss's insertion order cannot stand in for the
    # rule's tie-break (the name that sorts first).
    gallery = Gallery(tmp_path / "gallery.sqlite")
    people = sorted(set(labels.tolist()), reverse=True)
    entries = [(name, [TINY] * TEMPLATES_PER_PERSON, templates[labels == name]) for name in people]
    gallery.enroll_many(entries, "v1")
    return gallery


@pytest.mark.parametrize("case", [_clustered, _ties], ids=["clustered", "ties"])
@pytest.mark.parametrize("rule", ["mean", "min"])
def test_the_gallery_and_the_evaluation_give_the_same_answers(
    tmp_path: Path, case, rule: str
) -> None:
    templates, labels, queries, query_labels, strangers = case(0)
    everyone = np.concatenate([queries, strangers])
    ranking = rank_identities(everyone, templates, labels, rule, top=5)
    nearest = ranking.distances[:, 0]
    gamma = float(np.median(nearest[nearest > 0]))  # ties: some queries lie exactly at γ
    with _enrolled(tmp_path, templates, labels) as gallery:
        matches = [gallery.identify(query, gamma, rule, k=5) for query in everyone]
        verified = [
            gallery.verify(str(name), query, gamma, rule)
            for name, query in zip(ranking.identities[:, 1], everyone, strict=True)
        ]
        # dir_at_far_1e-2 as the server would score it: γ from its own best distances.
        best = np.array([match.distance for match in matches])
        dir_gamma = calibrate_gamma(best[: len(queries)], best[len(queries) :], 1e-2).gamma
        served = [gallery.identify(query, dir_gamma, rule).identity for query in queries]
    for i, match in enumerate(matches):
        best_name, distance = str(ranking.identities[i, 0]), float(ranking.distances[i, 0])
        assert match.identity == (best_name if distance < gamma else None)
        assert match.distance == distance
        assert match.candidates == list(
            zip(ranking.identities[i].tolist(), ranking.distances[i].tolist(), strict=True)
        )
        assert verified[i].distance == float(ranking.distances[i, 1])
        assert verified[i].accepted == accepted(float(ranking.distances[i, 1]), gamma)
    unknown = sum(match.identity is None for match in matches)
    assert 0 < unknown < len(matches)

    first = [match.candidates[0][0] for match in matches[: len(queries)]]
    assert top1_accuracy(templates, labels, queries, query_labels, rule) == np.mean(
        np.array(first) == query_labels
    )
    assert dir_at_far(templates, labels, queries, query_labels, strangers, 1e-2, rule) == np.mean(
        np.array(served, dtype=object) == query_labels
    )


def test_mean_and_min_distances_by_hand() -> None:
    templates = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels = np.array(["b", "b", "a"])
    mean, identities = identity_distances(np.zeros((1, 2)), templates, labels, "mean")
    minimum, _ = identity_distances(np.zeros((1, 2)), templates, labels, "min")
    assert identities.tolist() == ["a", "b"]
    assert mean[0].tolist() == pytest.approx([2.0, 2.0])
    assert minimum[0].tolist() == pytest.approx([2.0, 1.0])


def test_equal_distances_rank_by_name_and_gamma_is_strict() -> None:
    templates = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    labels = np.array(["zoe", "adam", "mia"])
    ranking = rank_identities(np.zeros((1, 2)), templates, labels, "mean")
    assert ranking.identities[0].tolist() == ["adam", "mia", "zoe"]
    assert ranking.distances[0].tolist() == [1.0, 1.0, 1.0]
    assert not accepted(1.0, gamma=1.0) and accepted(1.0, gamma=1.0 + 1e-6)


def test_a_template_is_at_distance_zero_from_itself() -> None:
    # |q|² + |t|² - 2 q·t in float32 gives ~0.004 here; γ decisions live at such distances.
    templates = (np.random.default_rng(0).normal(size=(50, 128)) * 3).astype(np.float32)
    assert np.diagonal(l2_distances(templates, templates)).tolist() == [0.0] * 50


@pytest.mark.parametrize(
    ("queries", "templates", "labels", "rule", "top", "message"),
    [
        (np.zeros((1, 2)), np.zeros((2, 2)), ["a", "b"], "median", None, "unknown rule 'median'"),
        (np.zeros((1, 3)), np.zeros((2, 2)), ["a", "b"], "mean", None, r"queries must be \(Q, 2\)"),
        (np.zeros(2), np.zeros((2, 2)), ["a", "b"], "mean", None, r"queries must be \(Q, 2\)"),
        (np.zeros((1, 2)), np.zeros((0, 2)), [], "mean", None, "non-empty"),
        (np.zeros((1, 2)), np.zeros((2, 2)), ["a"], "mean", None, "1 template labels for 2"),
        (np.zeros((1, 2)), np.zeros((2, 2)), ["a", "b"], "mean", 0, "top must be >= 1"),
    ],
)
def test_bad_inputs_name_the_problem(
    queries: np.ndarray,
    templates: np.ndarray,
    labels: list[str],
    rule: str,
    top: int | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        rank_identities(queries, templates, np.asarray(labels), rule, top)  # type: ignore[arg-type]
