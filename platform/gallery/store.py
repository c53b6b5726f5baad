"""The identification gallery: enrolled people, their template images and embeddings f_W(T).

Three parts, one class in front of them:
- storage.py: the durable SQLite file (identities, template images as PNG, float32 embeddings
  tagged with the model version that computed them, the model versions used);
- index.py: the in-memory faiss index over the embeddings, which proposes candidates;
- ranking.py: the pure identification rule (mean or min distance to an identity's templates,
  ties to the name that sorts first, "unknown" when the distance is not below γ), the very
  function the evaluation scores top1 and dir_at_far_1e-2 with.

Embeddings are computed once at enrollment and never per query; when a new model becomes
champion, `reembed` recomputes them from the stored images.

Concurrency: one connection per Gallery guarded by an RLock, so threads may enroll, delete and
identify at once. Every write bumps a generation counter in the same transaction; a Gallery
that sees another process's generation reloads its index before answering, so several
processes (e.g. serve replicas) can share one file.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from sightline.gallery.errors import (
    GalleryError,
    ModelVersionMismatch,
    UnknownIdentityError,
    UnknownTemplateError,
)
from sightline.gallery.index import TemplateIndex
from sightline.gallery.ranking import RULES, Rule, accepted, check_rule
from sightline.gallery.storage import GalleryStorage, ImageLike, encode_png

__all__ = [
    "RULES",
    "EmbedFn",
    "Gallery",
    "GalleryError",
    "ImageLike",
    "Match",
    "ModelVersionMismatch",
    "Person",
    "Rule",
    "UnknownIdentityError",
    "UnknownTemplateError",
    "Verification",
]

EmbedFn = Callable[[list[np.ndarray]], np.ndarray]
MAX_IDENTITY_LENGTH = 200
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Match:
    """The answer to a query: `identity` is None for unknown (distance not below γ)."""

    identity: str | None
    distance: float  # to the best identity under the rule; inf for an empty gallery
    gamma: float
    rule: str
    model_version: str | None
    candidates: list[tuple[str, float]] = field(default_factory=list)  # nearest first


@dataclass(frozen=True)
class Verification:
    identity: str
    accepted: bool
    distance: float
    gamma: float
    rule: str


@dataclass(frozen=True)
class Person:
    identity: str
    enrolled_at: float  # epoch seconds
    template_times: list[float]  # when each template was added, in enrollment order


class Gallery:
    """A durable, thread-safe template store with γ-rejecting identification.

    `Gallery(path)` opens (or creates) the SQLite file; use it as a context manager or `close()`.
    `search_threads` sets faiss's (process-wide) OpenMP threads; None leaves them alone.
    """

    def __init__(self, path: str | Path, search_threads: int | None = 1) -> None:
        if search_threads is not None:
            # faiss's OpenMP pool is process-wide. One query at a time gains nothing from it,
            # and on a busy CPU its threads spin: 1 thread searched 20k vectors 20x faster.
            faiss.omp_set_num_threads(search_threads)
        self.path = Path(path)
        self._lock = threading.RLock()
        self._storage = GalleryStorage(self.path)
        self._generation = -1
        self._index = TemplateIndex()
        with self._lock:
            self._sync()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._storage.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counts and lookups ----------------------------------------------------------------

    @property
    def model_version(self) -> str | None:
        with self._lock:
            return self._storage.model_version()

    @property
    def embedding_dim(self) -> int | None:
        with self._lock:
            return self._storage.embedding_dim()

    @property
    def identity_count(self) -> int:
        with self._lock:
            self._sync()
            return self._index.identity_count

    @property
    def template_count(self) -> int:
        with self._lock:
            self._sync()
            return self._index.template_count

    def __len__(self) -> int:
        return self.identity_count

    def __contains__(self, identity: object) -> bool:
        with self._lock:
            self._sync()
            return identity in self._index.identity_ids

    def identities(self) -> list[str]:
        with self._lock:
            self._sync()
            return sorted(self._index.identity_ids)

    def model_versions(self) -> list[tuple[str, int, float]]:
        """(version, embedding_dim, activated_at) of every model the gallery has used."""
        with self._lock:
            return self._storage.model_versions()

    def template_images(self, identity: str) -> list[np.ndarray]:
        """The stored template images of one identity, in enrollment order."""
        with self._lock:
            self._sync()
            return self._storage.images_of_identity(self._identity_id(identity))

    def person(self, identity: str) -> Person:
        """When `identity` was enrolled and when each of its templates was added."""
        with self._lock:
            self._sync()
            enrolled_at, template_times = self._storage.enrolled_at(self._identity_id(identity))
        return Person(identity, enrolled_at, template_times)

    def template_png(self, identity: str, position: int) -> bytes:
        """The stored PNG of `identity`'s template at `position` (0 = enrolled first)."""
        with self._lock:
            self._sync()
            identity_id = self._identity_id(identity)
            png = None if position < 0 else self._storage.template_png(identity_id, position)
        if png is None:
            raise UnknownTemplateError(identity, position)
        return png

    # -- writes ----------------------------------------------------------------------------

    def enroll(
        self,
        identity: str,
        images: Sequence[ImageLike],
        embeddings: np.ndarray,
        model_version: str,
    ) -> int:
        """Add templates (images and their embeddings f_W(T)) to `identity`, creating it if new.

        Returns the identity's template count afterwards. The embeddings must come from the
        gallery's model version (any version while the gallery holds no templates).
        """
        return self.enroll_many([(identity, images, embeddings)], model_version)[identity]

    def enroll_many(
        self,
        entries: Iterable[tuple[str, Sequence[ImageLike], np.ndarray]],
        model_version: str,
    ) -> dict[str, int]:
        """Several enrollments in one transaction (all or nothing); returns template counts."""
        prepared = [_prepare_entry(position, *entry) for position, entry in enumerate(entries)]
        if not prepared:
            raise GalleryError("nothing to enroll")
        version = _check_version(model_version)
        dims = {vectors.shape[1] for _, _, vectors in prepared}
        if len(dims) > 1:
            raise GalleryError(f"embeddings of one enrollment differ in size: {sorted(dims)}")
        now = time.time()
        storage = self._storage
        new_identities: list[tuple[int, str]] = []
        template_ids: list[int] = []
        owners: list[int] = []
        with self._writing() as on_commit:
            storage.check_compatible(version, dims.pop())
            for name, pngs, vectors in prepared:
                identity_id = storage.identity_id(name)
                if identity_id is None:
                    identity_id = storage.insert_identity(name, now)
                    new_identities.append((identity_id, name))
                for png, vector in zip(pngs, vectors, strict=True):
                    template_ids.append(
                        storage.insert_template(identity_id, png, vector, version, now)
                    )
                    owners.append(identity_id)
            added = np.concatenate([vectors for _, _, vectors in prepared])
            on_commit.append(lambda: self._add(new_identities, template_ids, owners, added))
            counts = {
                name: storage.template_count(self._identity_id_in_storage(name))
                for name, _, _ in prepared
            }
        return counts

    def delete(self, identity: str) -> int:
        """Remove an identity and all its templates; returns how many templates went."""
        with self._writing() as on_commit:
            identity_id = self._identity_id_in_storage(identity)
            removed = len(self._storage.template_ids(identity_id))
            self._storage.delete_identity(identity_id)
            on_commit.append(lambda: self._index.remove_identity(identity_id))
        return removed

    def reembed(self, embed_fn: EmbedFn, model_version: str, batch_size: int = 256) -> int:
        """Recompute every template's embedding with a new model from the stored images.

        `embed_fn(images)` takes a list of uint8 arrays (H x W or H x W x C, as enrolled) and
        returns an (n, D) array. The heavy work runs outside the lock, so identification goes
        on (with the old model) meanwhile; templates enrolled in the meantime are embedded in
        the final transaction, which switches every template to `model_version` at once.
        Returns the number of templates re-embedded.
        """
        version = _check_version(model_version)
        if batch_size < 1:
            raise GalleryError(f"batch_size must be >= 1, got {batch_size}")
        with self._lock:
            self._sync()
            pending = sorted(self._index.owner_of)
        vectors: dict[int, np.ndarray] = {}
        for start in range(0, len(pending), batch_size):
            vectors.update(self._embed_templates(embed_fn, pending[start : start + batch_size]))
        with self._writing() as on_commit:
            current = self._storage.template_ids()
            late = [template_id for template_id in current if template_id not in vectors]
            for start in range(0, len(late), batch_size):
                vectors.update(self._embed_templates(embed_fn, late[start : start + batch_size]))
            dims = {vectors[template_id].shape[0] for template_id in current}
            if len(dims) > 1:
                raise GalleryError(f"embed_fn returned embeddings of sizes {sorted(dims)}")
            self._storage.set_embeddings(((i, vectors[i]) for i in current), version)
            if dims:
                self._storage.activate_version(version, dims.pop())
            else:
                self._storage.activate_version_without_templates(version)
            on_commit.append(self._reload)
        return len(current)

    # -- queries ---------------------------------------------------------------------------

    def identify(
        self, embedding: np.ndarray, gamma: float, rule: Rule = "mean", k: int = 5
    ) -> Match:
        """The enrolled identity nearest to `embedding` under `rule`, or None if not < γ.

        `candidates` lists the k nearest identities with their distances, nearest first.
        """
        rule = _check_rule(rule)
        gamma = _check_gamma(gamma)
        if k < 1:
            raise GalleryError(f"k must be >= 1, got {k}")
        with self._lock:
            self._sync()
            version = self._storage.model_version()
            if not self._index.template_count:
                return Match(None, math.inf, gamma, rule, version, [])
            candidates = self._index.nearest_identities(self._query_vector(embedding), rule, k)
        best_name, best_distance = candidates[0]
        identity = best_name if accepted(best_distance, gamma) else None
        return Match(identity, best_distance, gamma, rule, version, candidates)

    def verify(
        self, identity: str, embedding: np.ndarray, gamma: float, rule: Rule = "mean"
    ) -> Verification:
        """Is `embedding` the enrolled `identity`? Accepted when its distance is below γ."""
        rule = _check_rule(rule)
        gamma = _check_gamma(gamma)
        with self._lock:
            self._sync()
            identity_id = self._identity_id(identity)
            query = self._query_vector(embedding)
            distance = self._index.identity_distance(identity_id, query, rule)
        return Verification(identity, bool(accepted(distance, gamma)), distance, gamma, rule)

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[list[Callable[[], None]]]:
        """A write transaction (storage.writing) under the lock.

        Yields a list for in-memory updates, run only after the commit. When another process
        wrote since our last load, they are skipped and the whole index is reloaded instead.
        """
        with self._lock:
            on_commit: list[Callable[[], None]] = []
            with self._storage.writing() as generation:
                yield on_commit
            if generation == self._generation:
                for update in on_commit:
                    update()
                self._generation = generation + 1
            else:
                self._sync()

    def _sync(self) -> None:
        """Reload the in-memory index when the database changed under us."""
        generation = self._storage.generation()
        if generation != self._generation:
            self._reload()
            self._generation = generation

    def _reload(self) -> None:
        self._index = TemplateIndex.from_storage(self._storage.load())

    def _add(
        self,
        new_identities: list[tuple[int, str]],
        template_ids: list[int],
        owners: list[int],
        vectors: np.ndarray,
    ) -> None:
        for identity_id, name in new_identities:
            self._index.add_identity(identity_id, name)
        self._index.add_templates(template_ids, owners, vectors)

    def _identity_id(self, identity: str) -> int:
        try:
            return self._index.identity_ids[identity]
        except KeyError:
            raise UnknownIdentityError(identity) from None

    def _identity_id_in_storage(self, identity: str) -> int:
        identity_id = self._storage.identity_id(identity)
        if identity_id is None:
            raise UnknownIdentityError(identity)
        return identity_id

    def _query_vector(self, embedding: np.ndarray) -> np.ndarray:
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        dim = self._storage.embedding_dim()
        if vector.ndim != 1 or vector.shape[0] != dim:
            raise GalleryError(
                f"query embedding must have shape ({dim},), got {tuple(np.shape(embedding))}"
            )
        if not np.isfinite(vector).all():
            raise GalleryError("query embedding contains NaN or infinity")
        return np.ascontiguousarray(vector)

    def _embed_templates(self, embed_fn: EmbedFn, template_ids: list[int]) -> dict[int, np.ndarray]:
        with self._lock:
            rows = self._storage.images(template_ids)
        if not rows:
            return {}
        vectors = np.asarray(embed_fn([image for _, image in rows]), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(rows):
            raise GalleryError(
                f"embed_fn returned shape {vectors.shape} for {len(rows)} images; expected "
                f"({len(rows)}, D)"
            )
        if not np.isfinite(vectors).all():
            raise GalleryError("embed_fn returned NaN or infinity")
        return {
            template_id: np.ascontiguousarray(vector)
            for (template_id, _), vector in zip(rows, vectors, strict=True)
        }


def _prepare_entry(
    position: int, identity: str, images: Sequence[ImageLike], embeddings: np.ndarray
) -> tuple[str, list[bytes], np.ndarray]:
    name = _check_identity(identity)
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    where = f"enrollment {position} ({name!r})"
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise GalleryError(f"{where}: embeddings must be (n, D), got {np.shape(embeddings)}")
    if len(images) == 0:
        raise GalleryError(f"{where}: at least one template image is needed")
    if len(images) != len(vectors):
        raise GalleryError(
            f"{where}: {len(images)} images but {len(vectors)} embeddings; one per image"
        )
    if not np.isfinite(vectors).all():
        raise GalleryError(f"{where}: embeddings contain NaN or infinity")
    pngs = [encode_png(image, f"{where}: images[{i}]") for i, image in enumerate(images)]
    return name, pngs, np.ascontiguousarray(vectors)


def _check_identity(identity: object) -> str:
    if not isinstance(identity, str) or not identity.strip():
        raise GalleryError(f"identity must be a non-empty string, got {identity!r}")
    if identity != identity.strip():
        raise GalleryError(f"identity {identity!r} has leading or trailing white space")
    if len(identity) > MAX_IDENTITY_LENGTH or _CONTROL_CHARACTERS.search(identity):
        raise GalleryError(
            f"identity {identity[:40]!r} must be at most {MAX_IDENTITY_LENGTH} printable characters"
        )
    return identity


def _check_version(version: object) -> str:
    if not isinstance(version, str) or not version.strip():
        raise GalleryError(f"model_version must be a non-empty string, got {version!r}")
    return version.strip()


def _check_rule(rule: object) -> Rule:
    try:
        return check_rule(rule)
    except ValueError as exc:
        raise GalleryError(str(exc)) from None


def _check_gamma(gamma: float) -> float:
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise GalleryError(f"gamma must be a number, got {gamma!r}") from None
    if math.isnan(value) or value <= 0:
        raise GalleryError(f"gamma must be > 0, got {gamma!r}")
    return value
