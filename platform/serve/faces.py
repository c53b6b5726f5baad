"""The identification deployment: the champion embedder (registered.py) and the durable
gallery of enrolled people (sightline.gallery).

Every template's embedding f_W(T) is computed once, at enrollment, by the champion; queries
are embedded and searched (mean distance to a person's templates, or min, as the model's
`rule` says), and the answer is "unknown" when the nearest person is not closer than the γ
stored with the model. The gallery is one SQLite file under `serve.gallery_path`, so an
enrollment is seen by the very next query and survives restarts. When a different champion
is loaded (at start or `reload()`), every stored template image is re-embedded with it first.
Query faces (identify, verify against a person) are embedded in dynamic batches
(`@serve.batch`, sizes from params `serve.batch`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import serve
from torch import nn

from sightline.config import ServeBatch
from sightline.data.identity import face_from_array
from sightline.gallery.store import (
    Gallery,
    GalleryError,
    ModelVersionMismatch,
    UnknownIdentityError,
    UnknownTemplateError,
)
from sightline.serve.capacity import (
    DEFAULT_BATCH,
    call_batched,
    configure_batching,
    each_or_error,
    indices_by,
)
from sightline.serve.errors import ApiError, BadRequest, NotFound, ServiceUnavailable
from sightline.serve.faces_routes import UNKNOWN, face_pixels
from sightline.serve.registered import RegisteredModels
from sightline.serve.schemas import Catalog, ModelCard
from sightline.track.registry import LoadedModel

logger = logging.getLogger(__name__)

GALLERY_FILE = "gallery.sqlite"
CANDIDATES = 5


@torch.no_grad()
def embed_faces(model: nn.Module, images: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 H x W (x 3) pixels of any size -> (n, D) float32 embeddings, prepared exactly as
    the training data was (sightline.data.identity.face_from_array)."""
    batch = torch.stack(
        [face_from_array(image, model.image_size, model.channels) for image in images]
    )
    return model.eval()(batch).float().numpy()


def gallery_version(card: ModelCard) -> str:
    """What the gallery records as the model that embedded its templates."""
    return f"{card.name}/v{card.version}"


def gallery_file(directory: str | Path) -> Path:
    return Path(directory) / GALLERY_FILE


def enroll_local(
    tracking_uri: str,
    gallery_dir: str | Path,
    identity: str,
    images: Sequence[Path],
    *,
    max_bytes: int,
    max_pixels: int,
) -> dict[str, Any]:
    """Enroll image files straight into the gallery file with the registered champion, by the
    deployment's own code in this process (safe while a server uses the same file). Raises
    ApiError (bad image or name, no champion) naming the file at fault."""
    pixels = []
    for path in images:
        try:
            pixels.append(face_pixels(Path(path).read_bytes(), max_bytes, max_pixels))
        except ApiError as exc:
            raise type(exc)(exc.code, f"{path}: {exc.message}") from None
    faces = Faces.func_or_class(tracking_uri, str(gallery_dir))
    try:
        return faces.enroll(identity, pixels)
    finally:
        faces.close()


class Champion:
    """The champion embedder and what it was calibrated with."""

    def __init__(self, card: ModelCard, loaded: LoadedModel) -> None:
        self.card = card
        self.model = loaded.model
        self.version = gallery_version(card)
        gamma = loaded.metadata.get("gamma")
        if gamma is None:
            raise ServiceUnavailable(
                "no_gamma",
                f"{card.name} v{card.version} has no calibrated gamma; register a model trained "
                "by `sightline train` (its train stage calibrates gamma)",
            )
        self.gamma = float(gamma)
        self.rule = str(loaded.metadata.get("rule", "mean"))

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return embed_faces(self.model, images)

    def ref(self) -> dict[str, str]:
        return self.card.ref().model_dump()


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_constructor_retry_count=2)
class Faces:
    """Enroll, identify, verify and delete against the gallery with the champion embedder."""

    def __init__(
        self, tracking_uri: str, gallery_dir: str, batch: ServeBatch | None = None
    ) -> None:
        self._registered = RegisteredModels(tracking_uri, "identification")
        configure_batching(self._embed_queries, batch)
        self._gallery = Gallery(gallery_file(gallery_dir))
        self._switching = threading.Lock()
        self._synced: str | None = None
        self._sync(self._registered.catalog())

    # -- models ----------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        catalog = self._registered.catalog()
        self._sync(catalog)
        return catalog

    def reload(self) -> Catalog:
        catalog = self._registered.load()
        self._sync(catalog)
        return catalog

    def _champion(self) -> Champion:
        catalog = self.catalog()
        card = catalog.resolve(None)  # 503 with a hint while no champion is registered
        return Champion(card, self._registered.get(card.version))

    def _sync(self, catalog: Catalog) -> None:
        """Re-embed the gallery when the champion is not the model its templates came from."""
        if catalog.champion_version is None:
            return
        card = catalog.resolve(None)
        version = gallery_version(card)
        if version == self._synced:
            return
        with self._switching:
            stored = self._gallery.model_version
            if stored != version and self._gallery.template_count:
                champion = Champion(card, self._registered.get(card.version))
                count = self._gallery.reembed(champion.embed, version)
                logger.info("re-embedded %d templates from %s with %s", count, stored, version)
            self._synced = version

    # -- requests --------------------------------------------------------------------------

    def enroll(self, identity: str, images: list[np.ndarray]) -> dict[str, Any]:
        if identity.strip().casefold() == UNKNOWN:
            raise BadRequest(
                "reserved_identity",
                f"{UNKNOWN!r} is what identify answers for strangers; choose another name",
            )
        champion = self._champion()
        embeddings = champion.embed(images)
        try:
            try:
                templates = self._gallery.enroll(identity, images, embeddings, champion.version)
            except ModelVersionMismatch:  # another process switched models under us
                self._synced = None
                self.reload()
                champion = self._champion()
                embeddings = champion.embed(images)
                templates = self._gallery.enroll(identity, images, embeddings, champion.version)
        except GalleryError as exc:
            raise BadRequest("invalid_enrollment", str(exc)) from None
        return {
            "model": champion.ref(),
            "identity": identity,
            "added": len(images),
            "templates": templates,
        }

    async def _embed_query(self, champion: Champion, image: np.ndarray) -> np.ndarray:
        return await call_batched(self._embed_queries, image, champion.card.version)

    @serve.batch(
        max_batch_size=DEFAULT_BATCH.max_batch_size,
        batch_wait_timeout_s=DEFAULT_BATCH.batch_wait_timeout_s,
    )
    async def _embed_queries(
        self, images: list[np.ndarray], versions: list[str]
    ) -> list[np.ndarray | Exception]:
        """One forward pass per model version in the batch (failures: each_or_error)."""
        results: list[np.ndarray | Exception] = [np.empty(0) for _ in images]
        for version, indices in indices_by(versions).items():
            run = partial(embed_faces, self._registered.get(version).model)
            embedded = each_or_error(run, [images[i] for i in indices])
            for index, embedding in zip(indices, embedded, strict=True):
                results[index] = embedding
        return results

    async def identify(self, image: np.ndarray) -> dict[str, Any]:
        champion = self._champion()
        match = self._gallery.identify(
            await self._embed_query(champion, image), champion.gamma, champion.rule, k=CANDIDATES
        )
        return {
            "model": champion.ref(),
            "identity": match.identity if match.identity is not None else UNKNOWN,
            "known": match.identity is not None,
            "distance": match.distance if math.isfinite(match.distance) else None,
            "gamma": champion.gamma,
            "rule": champion.rule,
            "candidates": [{"identity": n, "distance": d} for n, d in match.candidates],
        }

    def verify(self, first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
        champion = self._champion()
        a, b = champion.embed([first, second])
        distance = float(np.linalg.norm(a - b))
        return {
            "model": champion.ref(),
            "same": distance < champion.gamma,
            "distance": distance,
            "gamma": champion.gamma,
        }

    async def verify_identity(self, identity: str, image: np.ndarray) -> dict[str, Any]:
        champion = self._champion()
        query = await self._embed_query(champion, image)
        try:
            result = self._gallery.verify(identity, query, champion.gamma, champion.rule)
        except UnknownIdentityError as exc:
            raise NotFound("unknown_identity", str(exc)) from None
        return {
            "model": champion.ref(),
            "same": result.accepted,
            "distance": result.distance,
            "gamma": result.gamma,
            "identity": identity,
        }

    def delete(self, identity: str) -> dict[str, Any]:
        try:
            removed = self._gallery.delete(identity)
        except UnknownIdentityError as exc:
            raise NotFound("unknown_identity", str(exc)) from None
        return {"identity": identity, "removed": removed}

    def person(self, identity: str) -> dict[str, Any]:
        try:
            person = self._gallery.person(identity)
        except UnknownIdentityError as exc:
            raise NotFound("unknown_identity", str(exc)) from None
        return {
            "identity": identity,
            "enrolled_at": person.enrolled_at,
            "template_times": person.template_times,
        }

    def template_png(self, identity: str, position: int) -> bytes:
        try:
            return self._gallery.template_png(identity, position)
        except UnknownIdentityError as exc:
            raise NotFound("unknown_identity", str(exc)) from None
        except UnknownTemplateError as exc:
            raise NotFound("unknown_template", str(exc)) from None

    def close(self) -> None:
        self._gallery.close()

    def gallery_info(self) -> dict[str, Any]:
        return {
            "identities": self._gallery.identity_count,
            "templates": self._gallery.template_count,
            "model_version": self._gallery.model_version,
        }
