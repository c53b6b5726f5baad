"""The identification gallery: enrolled people, their template images and embeddings f_W(T).

Storage: one SQLite file (WAL journal, synchronous=FULL) holding identities, templates (the
template image as PNG bytes and its float32 embedding, tagged with the model version that
computed it) and the history of model versions. Embeddings are computed once at enrollment and
never per query; when a new model becomes champion, `reembed` recomputes them from the stored
images. Search: an in-memory faiss IndexFlatL2 (wrapped in IndexIDMap2, ids = template row
ids), rebuilt on open and updated on enroll/delete.

Identification (DESIGN.md): the query goes to the identity with the smallest mean distance to
its templates (rule "mean"; "min" takes the nearest template); if that distance is not below γ
the answer is unknown. For the mean rule faiss proposes candidates (the identities owning the
nearest templates) and exact means are computed for them; the search widens until the result
is provably exact: an identity with no template among the nearest n has every template, hence
its mean, at least as far as the n-th nearest template.

Concurrency: one connection per Gallery guarded by an RLock, so threads may enroll, delete and
identify at once. Every write bumps a generation counter in the same transaction; a Gallery
that sees another process's generation reloads its index before answering, so several
processes (e.g. serve replicas) can share one file.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import faiss
import numpy as np
from PIL import Image

Rule = Literal["mean", "min"]
RULES: tuple[str, ...] = ("mean", "min")
ImageLike = np.ndarray | Image.Image
EmbedFn = Callable[[list[np.ndarray]], np.ndarray]
SCHEMA_VERSION = "1"
MAX_IDENTITY_LENGTH = 200
MIN_SEARCH_WIDTH = 64
PNG_MODES = ("L", "RGB", "RGBA")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    image_png BLOB NOT NULL,
    embedding BLOB NOT NULL,
    model_version TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_by_identity ON templates(identity_id);
CREATE TABLE IF NOT EXISTS model_versions (
    version TEXT PRIMARY KEY,
    embedding_dim INTEGER NOT NULL,
    activated_at REAL NOT NULL
);
"""


class GalleryError(ValueError):
    """Bad input to the gallery (identity name, images, embeddings, γ, rule)."""


class ModelVersionMismatch(GalleryError):
    """Embeddings from another model version than the one the gallery holds."""


class UnknownIdentityError(LookupError):
    """The named identity is not enrolled."""

    def __init__(self, identity: str) -> None:
        super().__init__(f"identity {identity!r} is not enrolled")
        self.identity = identity


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


@dataclass
class _Snapshot:
    """In-memory view of the database: the faiss index and who owns which template."""

    index: faiss.IndexIDMap2 | None = None
    identity_names: dict[int, str] = field(default_factory=dict)
    identity_ids: dict[str, int] = field(default_factory=dict)
    templates_of: dict[int, list[int]] = field(default_factory=dict)
    owner_of: dict[int, int] = field(default_factory=dict)


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=30000",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        with self._transaction():
            self._create_schema()
        self._generation = -1
        self._memory = _Snapshot()
        with self._lock:
            self._sync()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counts and lookups ----------------------------------------------------------------

    @property
    def model_version(self) -> str | None:
        with self._lock:
            return self._meta("model_version")

    @property
    def embedding_dim(self) -> int | None:
        with self._lock:
            value = self._meta("embedding_dim")
            return None if value is None else int(value)

    @property
    def identity_count(self) -> int:
        with self._lock:
            self._sync()
            return len(self._memory.identity_ids)

    @property
    def template_count(self) -> int:
        with self._lock:
            self._sync()
            return len(self._memory.owner_of)

    def __len__(self) -> int:
        return self.identity_count

    def __contains__(self, identity: object) -> bool:
        with self._lock:
            self._sync()
            return identity in self._memory.identity_ids

    def identities(self) -> list[str]:
        with self._lock:
            self._sync()
            return sorted(self._memory.identity_ids)

    def model_versions(self) -> list[tuple[str, int, float]]:
        """(version, embedding_dim, activated_at) of every model the gallery has used."""
        with self._lock:
            rows = self._db.execute(
                "SELECT version, embedding_dim, activated_at FROM model_versions "
                "ORDER BY activated_at"
            ).fetchall()
        return [(str(v), int(d), float(t)) for v, d, t in rows]

    def template_images(self, identity: str) -> list[np.ndarray]:
        """The stored template images of one identity, in enrollment order."""
        with self._lock:
            self._sync()
            identity_id = self._identity_id(identity)
            rows = self._db.execute(
                "SELECT image_png FROM templates WHERE identity_id = ? ORDER BY id",
                (identity_id,),
            ).fetchall()
        return [_decode_png(blob) for (blob,) in rows]

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
        prepared = [self._prepare_entry(position, *entry) for position, entry in enumerate(entries)]
        if not prepared:
            raise GalleryError("nothing to enroll")
        version = _check_version(model_version)
        dims = {vectors.shape[1] for _, _, vectors in prepared}
        if len(dims) > 1:
            raise GalleryError(f"embeddings of one enrollment differ in size: {sorted(dims)}")
        dim = dims.pop()
        now = time.time()
        added: list[tuple[int, int, np.ndarray]] = []  # (template id, identity id, vector)
        with self._lock, self._writing() as on_commit:
            self._check_compatible(version, dim)
            new_identities: dict[str, int] = {}
            for name, pngs, vectors in prepared:
                identity_id = self._ensure_identity(name, now, new_identities)
                for png, vector in zip(pngs, vectors, strict=True):
                    cursor = self._db.execute(
                        "INSERT INTO templates (identity_id, image_png, embedding, model_version,"
                        " created_at) VALUES (?, ?, ?, ?, ?)",
                        (identity_id, png, vector.tobytes(), version, now),
                    )
                    added.append((int(cursor.lastrowid or 0), identity_id, vector))
            on_commit.append(lambda: self._memory_add(added, new_identities, dim))
            counts = {
                name: self._count_templates(self._identity_id_in_db(name))
                for name, _, _ in prepared
            }
        return counts

    def delete(self, identity: str) -> int:
        """Remove an identity and all its templates; returns how many templates went."""
        with self._writing() as on_commit:
            identity_id = self._identity_id_in_db(identity)
            template_ids = [
                int(row[0])
                for row in self._db.execute(
                    "SELECT id FROM templates WHERE identity_id = ?", (identity_id,)
                )
            ]
            self._db.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
            on_commit.append(lambda: self._memory_remove(identity, identity_id, template_ids))
        return len(template_ids)

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
            pending = sorted(self._memory.owner_of)
        vectors: dict[int, np.ndarray] = {}
        for start in range(0, len(pending), batch_size):
            vectors.update(self._embed_templates(embed_fn, pending[start : start + batch_size]))
        with self._writing() as on_commit:
            current = [int(row[0]) for row in self._db.execute("SELECT id FROM templates")]
            late = [template_id for template_id in current if template_id not in vectors]
            for start in range(0, len(late), batch_size):
                vectors.update(self._embed_templates(embed_fn, late[start : start + batch_size]))
            dims = {vectors[template_id].shape[0] for template_id in current}
            if len(dims) > 1:
                raise GalleryError(f"embed_fn returned embeddings of sizes {sorted(dims)}")
            self._db.executemany(
                "UPDATE templates SET embedding = ?, model_version = ? WHERE id = ?",
                ((vectors[i].tobytes(), version, i) for i in current),
            )
            if dims:
                self._activate_version(version, dims.pop())
            else:  # empty gallery: the new model's embedding size is learnt at enrollment
                self._set_meta("model_version", version)
                self._db.execute("DELETE FROM meta WHERE key = 'embedding_dim'")
            on_commit.append(self._reload)
        return len(current)

    # -- queries ---------------------------------------------------------------------------

    def identify(
        self, embedding: np.ndarray, gamma: float, rule: Rule = "mean", k: int = 5
    ) -> Match:
        """The enrolled identity nearest to `embedding` under `rule`, or None if not < γ.

        `candidates` lists the k nearest identities with their distances, nearest first.
        """
        _check_rule(rule)
        gamma = _check_gamma(gamma)
        if k < 1:
            raise GalleryError(f"k must be >= 1, got {k}")
        with self._lock:
            self._sync()
            version = self._meta("model_version")
            if not self._memory.owner_of:
                return Match(None, math.inf, gamma, rule, version, [])
            query = self._query_vector(embedding)
            candidates = self._nearest_identities(query, rule, k)
        best_name, best_distance = candidates[0]
        identity = best_name if best_distance < gamma else None
        return Match(identity, best_distance, gamma, rule, version, candidates)

    def verify(
        self, identity: str, embedding: np.ndarray, gamma: float, rule: Rule = "mean"
    ) -> Verification:
        """Is `embedding` the enrolled `identity`? Accepted when its distance is below γ."""
        _check_rule(rule)
        gamma = _check_gamma(gamma)
        with self._lock:
            self._sync()
            identity_id = self._identity_id(identity)
            query = self._query_vector(embedding)
            distances = self._template_distances(query, self._memory.templates_of[identity_id])
        distance = float(distances.mean() if rule == "mean" else distances.min())
        return Verification(identity, distance < gamma, distance, gamma, rule)

    # -- internals: search -----------------------------------------------------------------

    def _nearest_identities(self, query: np.ndarray, rule: str, k: int) -> list[tuple[str, float]]:
        memory = self._memory
        assert memory.index is not None
        total = memory.index.ntotal
        wanted = min(k, len(memory.identity_ids))
        width = min(total, max(MIN_SEARCH_WIDTH, 4 * k))
        while True:
            squared, template_ids = memory.index.search(query[None, :], width)
            found = template_ids[0][template_ids[0] >= 0]
            nearest = np.sqrt(np.maximum(squared[0][: len(found)], 0.0))
            owners = [memory.owner_of[int(t)] for t in found]
            exhaustive = width >= total
            bound = math.inf if exhaustive else float(nearest[-1])
            if rule == "min":
                ranked = _first_per_owner(owners, nearest)
            else:
                ranked = self._mean_ranking(query, dict.fromkeys(owners))
            certain = [(owner, d) for owner, d in ranked if d <= bound]
            if len(certain) >= wanted or exhaustive:
                return [(memory.identity_names[o], float(d)) for o, d in ranked[:wanted]]
            width = min(total, width * 4)

    def _mean_ranking(self, query: np.ndarray, owners: Iterable[int]) -> list[tuple[int, float]]:
        owners = list(owners)
        template_lists = [self._memory.templates_of[o] for o in owners]
        counts = np.array([len(t) for t in template_lists])
        distances = self._template_distances(query, [t for ts in template_lists for t in ts])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        means = np.add.reduceat(distances, starts) / counts
        order = np.argsort(means, kind="stable")
        return [(owners[i], float(means[i])) for i in order]

    def _template_distances(self, query: np.ndarray, template_ids: Sequence[int]) -> np.ndarray:
        assert self._memory.index is not None
        vectors = self._memory.index.reconstruct_batch(np.asarray(template_ids, dtype=np.int64))
        return np.sqrt(((vectors - query[None, :]) ** 2).sum(axis=1))

    def _query_vector(self, embedding: np.ndarray) -> np.ndarray:
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        dim = self.embedding_dim
        if vector.ndim != 1 or vector.shape[0] != dim:
            raise GalleryError(
                f"query embedding must have shape ({dim},), got {tuple(np.shape(embedding))}"
            )
        if not np.isfinite(vector).all():
            raise GalleryError("query embedding contains NaN or infinity")
        return np.ascontiguousarray(vector)

    # -- internals: database ---------------------------------------------------------------

    def _create_schema(self) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?), "
            "('generation', '0')",
            (SCHEMA_VERSION,),
        )
        stored = self._meta("schema_version")
        if stored != SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema version {stored} is not {SCHEMA_VERSION}"
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _writing(self) -> Iterator[list[Callable[[], None]]]:
        """A write transaction that bumps the generation counter.

        Yields a list for in-memory updates, run only after the commit. When another process
        wrote since our last load, they are skipped and the whole index is reloaded instead.
        """
        with self._lock:
            on_commit: list[Callable[[], None]] = []
            with self._transaction():
                generation = int(self._meta("generation") or 0)
                yield on_commit
                self._set_meta("generation", str(generation + 1))
            if generation == self._generation:
                for update in on_commit:
                    update()
                self._generation = generation + 1
            else:
                self._sync()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _sync(self) -> None:
        """Reload the in-memory index when the database changed under us."""
        generation = int(self._meta("generation") or 0)
        if generation != self._generation:
            self._memory = self._load()
            self._generation = generation

    def _reload(self) -> None:
        self._memory = self._load()

    def _load(self) -> _Snapshot:
        snapshot = _Snapshot()
        for identity_id, name in self._db.execute("SELECT id, name FROM identities"):
            snapshot.identity_names[int(identity_id)] = str(name)
            snapshot.identity_ids[str(name)] = int(identity_id)
            snapshot.templates_of[int(identity_id)] = []
        rows = self._db.execute("SELECT id, identity_id, embedding FROM templates ORDER BY id")
        ids: list[int] = []
        blobs: list[bytes] = []
        for template_id, identity_id, blob in rows:
            snapshot.templates_of[int(identity_id)].append(int(template_id))
            snapshot.owner_of[int(template_id)] = int(identity_id)
            ids.append(int(template_id))
            blobs.append(blob)
        dim = self._meta("embedding_dim")
        if dim is not None:
            snapshot.index = faiss.IndexIDMap2(faiss.IndexFlatL2(int(dim)))
            if ids:
                vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
                snapshot.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        return snapshot

    def _memory_add(
        self, added: list[tuple[int, int, np.ndarray]], new_identities: dict[str, int], dim: int
    ) -> None:
        memory = self._memory
        if memory.index is None or memory.index.d != dim:
            memory.index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        for name, identity_id in new_identities.items():
            memory.identity_names[identity_id] = name
            memory.identity_ids[name] = identity_id
            memory.templates_of[identity_id] = []
        for template_id, identity_id, _ in added:
            memory.templates_of[identity_id].append(template_id)
            memory.owner_of[template_id] = identity_id
        vectors = np.stack([vector for _, _, vector in added])
        ids = np.asarray([template_id for template_id, _, _ in added], dtype=np.int64)
        memory.index.add_with_ids(vectors, ids)

    def _memory_remove(self, name: str, identity_id: int, template_ids: list[int]) -> None:
        memory = self._memory
        if memory.index is not None and template_ids:
            memory.index.remove_ids(np.asarray(template_ids, dtype=np.int64))
        for template_id in template_ids:
            memory.owner_of.pop(template_id, None)
        memory.templates_of.pop(identity_id, None)
        memory.identity_names.pop(identity_id, None)
        memory.identity_ids.pop(name, None)

    def _check_compatible(self, version: str, dim: int) -> None:
        current = self._meta("model_version")
        has_templates = self._db.execute("SELECT 1 FROM templates LIMIT 1").fetchone()
        if has_templates and current != version:
            raise ModelVersionMismatch(
                f"the gallery holds embeddings of model version {current!r}, not "
                f"{version!r}; re-embed it (Gallery.reembed) before enrolling with the new model"
            )
        stored_dim = self._meta("embedding_dim")
        if has_templates and stored_dim is not None and int(stored_dim) != dim:
            raise GalleryError(
                f"embeddings have {dim} values; the gallery's model {current!r} gives {stored_dim}"
            )
        if current != version or stored_dim != str(dim):
            self._activate_version(version, dim)

    def _activate_version(self, version: str, dim: int) -> None:
        self._set_meta("model_version", version)
        self._set_meta("embedding_dim", str(dim))
        self._db.execute(
            "INSERT INTO model_versions (version, embedding_dim, activated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(version) DO UPDATE SET embedding_dim = excluded.embedding_dim, "
            "activated_at = excluded.activated_at",
            (version, dim, time.time()),
        )

    def _ensure_identity(self, name: str, now: float, created: dict[str, int]) -> int:
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        cursor = self._db.execute(
            "INSERT INTO identities (name, created_at) VALUES (?, ?)", (name, now)
        )
        created[name] = int(cursor.lastrowid or 0)
        return created[name]

    def _identity_id(self, identity: str) -> int:
        try:
            return self._memory.identity_ids[identity]
        except KeyError:
            raise UnknownIdentityError(identity) from None

    def _identity_id_in_db(self, identity: str) -> int:
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (identity,)).fetchone()
        if row is None:
            raise UnknownIdentityError(identity)
        return int(row[0])

    def _count_templates(self, identity_id: int) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM templates WHERE identity_id = ?", (identity_id,)
        ).fetchone()
        return int(row[0])

    def _embed_templates(self, embed_fn: EmbedFn, template_ids: list[int]) -> dict[int, np.ndarray]:
        with self._lock:
            placeholders = ",".join("?" * len(template_ids))
            rows = self._db.execute(
                f"SELECT id, image_png FROM templates WHERE id IN ({placeholders})", template_ids
            ).fetchall()
        if not rows:
            return {}
        images = [_decode_png(blob) for _, blob in rows]
        vectors = np.asarray(embed_fn(images), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(rows):
            raise GalleryError(
                f"embed_fn returned shape {vectors.shape} for {len(rows)} images; expected "
                f"({len(rows)}, D)"
            )
        if not np.isfinite(vectors).all():
            raise GalleryError("embed_fn returned NaN or infinity")
        return {
            int(template_id): np.ascontiguousarray(v)
            for (template_id, _), v in zip(rows, vectors, strict=True)
        }

    def _prepare_entry(
        self, position: int, identity: str, images: Sequence[ImageLike], embeddings: np.ndarray
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
        pngs = [_encode_png(image, f"{where}: images[{i}]") for i, image in enumerate(images)]
        return name, pngs, np.ascontiguousarray(vectors)


def _first_per_owner(owners: list[int], distances: np.ndarray) -> list[tuple[int, float]]:
    """Owners in order of their nearest template (distances are ascending)."""
    ranked: dict[int, float] = {}
    for owner, distance in zip(owners, distances, strict=True):
        ranked.setdefault(owner, float(distance))
    return list(ranked.items())


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


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise GalleryError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")


def _check_gamma(gamma: float) -> float:
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise GalleryError(f"gamma must be a number, got {gamma!r}") from None
    if math.isnan(value) or value <= 0:
        raise GalleryError(f"gamma must be > 0, got {gamma!r}")
    return value


def _encode_png(image: ImageLike, where: str) -> bytes:
    """uint8 H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), or a PIL image -> PNG bytes."""
    if isinstance(image, Image.Image):
        image = np.asarray(image if image.mode in PNG_MODES else image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise GalleryError(f"{where}: images must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise GalleryError(
            f"{where}: image must be H x W, H x W x 3 or H x W x 4, got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise GalleryError(f"{where}: image is empty ({array.shape})")
    # OpenCV (~50x faster than PIL here) stores colour as BGR(A): swap on the way in and out.
    ok, encoded = cv2.imencode(".png", _swap_red_blue(array))
    if not ok:
        raise GalleryError(f"{where}: cannot encode image as PNG")
    return encoded.tobytes()


def _decode_png(blob: bytes) -> np.ndarray:
    return _swap_red_blue(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED))


def _swap_red_blue(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array
    return np.ascontiguousarray(array[..., [2, 1, 0, 3][: array.shape[2]]])
