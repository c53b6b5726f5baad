"""The gallery's durable side: one SQLite file.

Tables: identities, templates (the template image as PNG bytes and its float32 embedding,
tagged with the model version that computed it), the history of model versions, and `meta`
(schema version, current model version and embedding size, a generation counter). WAL journal
with synchronous=FULL: a committed enrollment survives a crash and readers never block the
writer. Every write is one IMMEDIATE transaction that bumps the generation, so a process holding
an older generation in memory knows it must reload (sightline.gallery.store).

Not thread-safe by itself: the Gallery serializes every call with its lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sightline.gallery.errors import GalleryError, ModelVersionMismatch

SCHEMA_VERSION = "1"
PNG_MODES = ("L", "RGB", "RGBA")
ImageLike = np.ndarray | Image.Image

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


@dataclass(frozen=True)
class StoredTemplates:
    """Everything the search needs, read in one go."""

    identities: list[tuple[int, str]]  # (identity id, name)
    template_ids: list[int]  # ascending
    owners: list[int]  # the identity id of each template
    vectors: np.ndarray  # (n, dim) float32
    dim: int | None


class GalleryStorage:
    """The SQLite file of one gallery: opened (created, schema checked) by the constructor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=30000",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        with self.transaction():
            self._create_schema()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def writing(self) -> Iterator[int]:
        """A write transaction that bumps the generation; yields the generation it started at."""
        with self.transaction():
            generation = self.generation()
            yield generation
            self._set_meta("generation", str(generation + 1))

    # -- reads -----------------------------------------------------------------------------

    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    def model_version(self) -> str | None:
        return self._meta("model_version")

    def embedding_dim(self) -> int | None:
        value = self._meta("embedding_dim")
        return None if value is None else int(value)

    def model_versions(self) -> list[tuple[str, int, float]]:
        rows = self._db.execute(
            "SELECT version, embedding_dim, activated_at FROM model_versions ORDER BY activated_at"
        ).fetchall()
        return [(str(v), int(d), float(t)) for v, d, t in rows]

    def load(self) -> StoredTemplates:
        identities = [
            (int(i), str(name)) for i, name in self._db.execute("SELECT id, name FROM identities")
        ]
        rows = self._db.execute(
            "SELECT id, identity_id, embedding FROM templates ORDER BY id"
        ).fetchall()
        dim = self.embedding_dim()
        vectors = np.frombuffer(b"".join(blob for _, _, blob in rows), dtype=np.float32)
        return StoredTemplates(
            identities=identities,
            template_ids=[int(row[0]) for row in rows],
            owners=[int(row[1]) for row in rows],
            vectors=vectors.reshape(len(rows), dim or 0),
            dim=dim,
        )

    def identity_id(self, name: str) -> int | None:
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def template_count(self, identity_id: int) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM templates WHERE identity_id = ?", (identity_id,)
        ).fetchone()
        return int(row[0])

    def template_ids(self, identity_id: int | None = None) -> list[int]:
        """Ids of one identity's templates, or of every template, ascending."""
        if identity_id is None:
            rows = self._db.execute("SELECT id FROM templates ORDER BY id")
        else:
            rows = self._db.execute(
                "SELECT id FROM templates WHERE identity_id = ? ORDER BY id", (identity_id,)
            )
        return [int(row[0]) for row in rows]

    def images_of_identity(self, identity_id: int) -> list[np.ndarray]:
        rows = self._db.execute(
            "SELECT image_png FROM templates WHERE identity_id = ? ORDER BY id", (identity_id,)
        ).fetchall()
        return [decode_png(blob) for (blob,) in rows]

    def enrolled_at(self, identity_id: int) -> tuple[float, list[float]]:
        """When the identity was created, and when each of its templates was added (in order)."""
        (created,) = self._db.execute(
            "SELECT created_at FROM identities WHERE id = ?", (identity_id,)
        ).fetchone()
        rows = self._db.execute(
            "SELECT created_at FROM templates WHERE identity_id = ? ORDER BY id", (identity_id,)
        ).fetchall()
        return float(created), [float(t) for (t,) in rows]

    def template_png(self, identity_id: int, position: int) -> bytes | None:
        """The PNG of the identity's template at `position` (0 = enrolled first), if any."""
        row = self._db.execute(
            "SELECT image_png FROM templates WHERE identity_id = ? ORDER BY id LIMIT 1 OFFSET ?",
            (identity_id, position),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def images(self, template_ids: list[int]) -> list[tuple[int, np.ndarray]]:
        """(template id, image) of those of `template_ids` that still exist."""
        placeholders = ",".join("?" * len(template_ids))
        rows = self._db.execute(
            f"SELECT id, image_png FROM templates WHERE id IN ({placeholders})", template_ids
        ).fetchall()
        return [(int(template_id), decode_png(blob)) for template_id, blob in rows]

    # -- writes (inside `writing()`) -------------------------------------------------------

    def insert_identity(self, name: str, now: float) -> int:
        cursor = self._db.execute(
            "INSERT INTO identities (name, created_at) VALUES (?, ?)", (name, now)
        )
        return int(cursor.lastrowid or 0)

    def insert_template(
        self, identity_id: int, png: bytes, vector: np.ndarray, version: str, now: float
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO templates (identity_id, image_png, embedding, model_version, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (identity_id, png, vector.tobytes(), version, now),
        )
        return int(cursor.lastrowid or 0)

    def delete_identity(self, identity_id: int) -> None:
        """The identity and (ON DELETE CASCADE) its templates."""
        self._db.execute("DELETE FROM identities WHERE id = ?", (identity_id,))

    def set_embeddings(self, vectors: Iterable[tuple[int, np.ndarray]], version: str) -> None:
        self._db.executemany(
            "UPDATE templates SET embedding = ?, model_version = ? WHERE id = ?",
            ((vector.tobytes(), version, template_id) for template_id, vector in vectors),
        )

    def check_compatible(self, version: str, dim: int) -> None:
        """Refuse embeddings another model made; record `version` as current if it is new."""
        current = self.model_version()
        has_templates = self._db.execute("SELECT 1 FROM templates LIMIT 1").fetchone()
        if has_templates and current != version:
            raise ModelVersionMismatch(
                f"the gallery holds embeddings of model version {current!r}, not "
                f"{version!r}; re-embed it (Gallery.reembed) before enrolling with the new model"
            )
        stored_dim = self.embedding_dim()
        if has_templates and stored_dim is not None and stored_dim != dim:
            raise GalleryError(
                f"embeddings have {dim} values; the gallery's model {current!r} gives {stored_dim}"
            )
        if current != version or stored_dim != dim:
            self.activate_version(version, dim)

    def activate_version(self, version: str, dim: int) -> None:
        self._set_meta("model_version", version)
        self._set_meta("embedding_dim", str(dim))
        self._db.execute(
            "INSERT INTO model_versions (version, embedding_dim, activated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(version) DO UPDATE SET embedding_dim = excluded.embedding_dim, "
            "activated_at = excluded.activated_at",
            (version, dim, time.time()),
        )

    def activate_version_without_templates(self, version: str) -> None:
        """An empty gallery's new model: its embedding size is learnt at the next enrollment."""
        self._set_meta("model_version", version)
        self._db.execute("DELETE FROM meta WHERE key = 'embedding_dim'")

    # -- internals -------------------------------------------------------------------------

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

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def encode_png(image: ImageLike, where: str) -> bytes:
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


def decode_png(blob: bytes) -> np.ndarray:
    return _swap_red_blue(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED))


def _swap_red_blue(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array
    return np.ascontiguousarray(array[..., [2, 1, 0, 3][: array.shape[2]]])
