"""The gallery's search side: a faiss index over every template embedding, and who owns which.

An in-memory IndexFlatL2 wrapped in IndexIDMap2 (ids = the templates' row ids in storage),
built from storage on open and kept in step on enroll / delete. faiss only proposes candidates,
the identities owning the nearest templates; their distances and order come from the pure rule,
sightline.gallery.ranking, the one the evaluation measures. The search widens until that answer
is provably the rule's answer over the whole gallery: an identity with no template among the
nearest n has every template, hence its mean and its min, at least as far as the n-th nearest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import faiss
import numpy as np

from sightline.gallery.ranking import Rule, identity_distances, rank_identities
from sightline.gallery.storage import StoredTemplates

MIN_SEARCH_WIDTH = 64
# faiss and numpy round the sums of squares differently: a candidate only counts as certainly
# ahead of every identity outside the search window when clearly nearer than the window's edge.
EDGE_MARGIN = 1e-4


class TemplateIndex:
    """Template vectors by id, their owners, and the identities' names. Not thread-safe."""

    def __init__(self, dim: int | None = None) -> None:
        self._index = None if dim is None else _flat_index(dim)
        self.identity_names: dict[int, str] = {}
        self.identity_ids: dict[str, int] = {}
        self.templates_of: dict[int, list[int]] = {}
        self.owner_of: dict[int, int] = {}

    @classmethod
    def from_storage(cls, stored: StoredTemplates) -> TemplateIndex:
        index = cls(stored.dim)
        for identity_id, name in stored.identities:
            index.add_identity(identity_id, name)
        if stored.template_ids:
            index.add_templates(stored.template_ids, stored.owners, stored.vectors)
        return index

    @property
    def identity_count(self) -> int:
        return len(self.identity_ids)

    @property
    def template_count(self) -> int:
        return len(self.owner_of)

    def add_identity(self, identity_id: int, name: str) -> None:
        self.identity_names[identity_id] = name
        self.identity_ids[name] = identity_id
        self.templates_of[identity_id] = []

    def add_templates(
        self, template_ids: list[int], owners: list[int], vectors: np.ndarray
    ) -> None:
        """Templates of identities already added; a new embedding size starts a new index."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._index is None or self._index.d != vectors.shape[1]:
            self._index = _flat_index(vectors.shape[1])
        for template_id, owner in zip(template_ids, owners, strict=True):
            self.templates_of[owner].append(template_id)
            self.owner_of[template_id] = owner
        self._index.add_with_ids(vectors, np.asarray(template_ids, dtype=np.int64))

    def remove_identity(self, identity_id: int) -> None:
        """The identity and its templates."""
        template_ids = self.templates_of.pop(identity_id, [])
        if self._index is not None and template_ids:
            self._index.remove_ids(np.asarray(template_ids, dtype=np.int64))
        for template_id in template_ids:
            self.owner_of.pop(template_id, None)
        name = self.identity_names.pop(identity_id, None)
        if name is not None:
            self.identity_ids.pop(name, None)

    def nearest_identities(self, query: np.ndarray, rule: Rule, k: int) -> list[tuple[str, float]]:
        """The k identities nearest to `query` under `rule`, nearest first (the rule's order)."""
        assert self._index is not None and self.owner_of
        total = self._index.ntotal
        wanted = min(k, self.identity_count)
        width = min(total, max(MIN_SEARCH_WIDTH, 4 * k))
        while True:
            squared, found = self._index.search(query[None, :], width)
            found = found[0][found[0] >= 0]
            owners = dict.fromkeys(self.owner_of[int(t)] for t in found)
            ranked = self._rank(query, owners, rule, wanted)
            if width >= total:
                return ranked
            edge = math.sqrt(max(float(squared[0][len(found) - 1]), 0.0))
            if len(ranked) == wanted and ranked[-1][1] < edge * (1.0 - EDGE_MARGIN):
                return ranked
            width = min(total, width * 4)

    def identity_distance(self, identity_id: int, query: np.ndarray, rule: Rule) -> float:
        vectors = self._vectors(self.templates_of[identity_id])
        distances, _ = identity_distances(
            query[None, :], vectors, np.zeros(len(vectors), dtype=np.int64), rule
        )
        return float(distances[0, 0])

    def _rank(
        self, query: np.ndarray, owners: Iterable[int], rule: Rule, top: int
    ) -> list[tuple[str, float]]:
        template_ids: list[int] = []
        labels: list[str] = []
        for owner in owners:
            template_ids += self.templates_of[owner]
            labels += [self.identity_names[owner]] * len(self.templates_of[owner])
        ranking = rank_identities(
            query[None, :], self._vectors(template_ids), np.asarray(labels), rule, top
        )
        return [
            (str(name), float(distance))
            for name, distance in zip(ranking.identities[0], ranking.distances[0], strict=True)
        ]

    def _vectors(self, template_ids: list[int]) -> np.ndarray:
        assert self._index is not None
        return self._index.reconstruct_batch(np.asarray(template_ids, dtype=np.int64))


def _flat_index(dim: int) -> faiss.IndexIDMap2:
    return faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
