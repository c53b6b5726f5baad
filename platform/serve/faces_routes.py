"""The face identification routes of the ingress (no torch here: the gateway stays light).

    POST   /v1/faces/enroll      identity + one or more images (multipart; bearer token)
    POST   /v1/faces/identify    one image -> the enrolled identity or "unknown"
    POST   /v1/faces/verify      two images -> same person or not; or identity + one image
    GET    /v1/faces             how many people and templates are enrolled, with which model
    DELETE /v1/faces/{identity}  forget a person and their templates (bearer token)
    GET    /v1/faces/people/{identity}                  when enrolled, templates (bearer token)
    GET    /v1/faces/people/{identity}/templates/{n}.jpg  a template as a small JPEG (token)

Distances are L2 between the champion embedder's normalised embeddings; a face is accepted
when the distance is below γ, the threshold calibrated with the model for its target false
accept rate (returned with every answer). Uploads are decoded here (any common format, grey or
colour, any size), shrunk to TEMPLATE_MAX_SIDE and passed as pixels to the Faces deployment
(faces.py), which embeds them and owns the gallery.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Request, Response
from PIL import Image
from pydantic import BaseModel, Field
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from sightline.serve.auth import require_token
from sightline.serve.capacity import refusing_when_full
from sightline.serve.errors import ApiError, BadRequest, UnsupportedMediaType
from sightline.serve.images import decode_image, inference_pixels
from sightline.serve.schemas import ErrorResponse, ModelRef
from sightline.serve.uploads import (
    IMAGE_FIELD,
    IMAGE_REQUEST_BODY,
    MULTIPART_OVERHEAD_BYTES,
    capped_stream,
    read_image_upload,
)

IDENTITY_FIELD = "identity"
UNKNOWN = "unknown"  # what identify answers for a face of nobody enrolled; not a valid name
MAX_ENROLL_IMAGES = 20
# Templates are stored at most this large (the embedders take 32-128 px faces); the stored
# image is what a future champion re-embeds, so it is kept larger than today's model input.
TEMPLATE_MAX_SIDE = 256
THUMBNAIL_MAX_SIDE = 96  # what /v1/faces/people/.../templates/{n}.jpg serves
ENROLL_HOW = (
    f"send multipart/form-data with a text field {IDENTITY_FIELD!r} and one or more file "
    f"fields {IMAGE_FIELD!r}"
)
VERIFY_HOW = (
    f"send multipart/form-data with two file fields {IMAGE_FIELD!r} (are they the same "
    f"person?), or a text field {IDENTITY_FIELD!r} and one {IMAGE_FIELD!r} (is this that "
    "enrolled person?)"
)


class Candidate(BaseModel):
    identity: str
    distance: float


class EnrollResponse(BaseModel):
    model: ModelRef
    identity: str
    added: int = Field(description="templates added by this request")
    templates: int = Field(description="templates the identity holds now")


class IdentifyResponse(BaseModel):
    model: ModelRef
    identity: str = Field(description=f"the enrolled identity, or {UNKNOWN!r}")
    known: bool
    distance: float | None = Field(
        description="to the nearest identity (mean or min over its templates); null when "
        "nobody is enrolled"
    )
    gamma: float = Field(description="accepted when distance < gamma")
    rule: str
    candidates: list[Candidate] = Field(description="the nearest identities, nearest first")


class VerifyResponse(BaseModel):
    model: ModelRef
    same: bool = Field(description="distance < gamma")
    distance: float
    gamma: float
    identity: str | None = Field(
        default=None, description="the enrolled identity the image was compared with"
    )


class DeleteResponse(BaseModel):
    identity: str
    removed: int = Field(description="templates removed")


class TemplateThumbnail(BaseModel):
    position: int = Field(description="0 for the template enrolled first")
    enrolled_at: datetime
    url: str = Field(
        description=f"the template as a JPEG of at most {THUMBNAIL_MAX_SIDE} px a side "
        "(the same bearer token)"
    )


class PersonResponse(BaseModel):
    identity: str
    enrolled_at: datetime = Field(description="when the identity's first template was enrolled")
    templates: int = Field(description="templates the identity holds")
    thumbnails: list[TemplateThumbnail] = Field(description="one per template, enrollment order")


class GalleryInfo(BaseModel):
    identities: int
    templates: int
    model_version: str | None = Field(description="the model that embedded the templates")


def _errors(**described: str) -> dict[int | str, dict[str, Any]]:
    return {
        int(status[1:]): {"model": ErrorResponse, "description": text}
        for status, text in described.items()
    }


IMAGE_ERRORS = _errors(
    s400="empty, truncated or corrupt image; malformed or incomplete form",
    s413="image or body larger than the limits",
    s415="not an image, or an unsupported content type",
    s503="no champion embedder is registered yet",
)
TOKEN_ERRORS = _errors(s401="missing or wrong bearer token")


def _multipart_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": fields}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


FILES = {"type": "array", "items": {"type": "string", "format": "binary"}}
ENROLL_BODY = _multipart_body(
    {IDENTITY_FIELD: {"type": "string"}, IMAGE_FIELD: FILES}, [IDENTITY_FIELD, IMAGE_FIELD]
)
VERIFY_BODY = _multipart_body(
    {IDENTITY_FIELD: {"type": "string"}, IMAGE_FIELD: FILES}, [IMAGE_FIELD]
)
IDENTIFY_BODY = IMAGE_REQUEST_BODY  # one image, as /v1/detect takes it


async def call(method: Any, *args: Any) -> Any:
    """Call the Faces deployment; its ApiErrors (bad identity, unknown person, no champion)
    reach the client as what they are, not as a 500."""
    try:
        with refusing_when_full():  # a full queue: 503 + Retry-After
            return await method.remote(*args)
    except RayTaskError as exc:
        if isinstance(exc.cause, ApiError):
            raise exc.cause from None
        raise


async def read_form(request: Request, max_bytes: int, how: str) -> FormData:
    """A multipart form of at most `max_bytes` (all images together) and MAX_ENROLL_IMAGES
    files; anything else is a 4xx naming what to send."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "unsupported_content_type", f"content type {media_type or '(none)'!r}: {how}"
        )
    parser = MultiPartParser(
        request.headers,
        capped_stream(request, max_bytes + MULTIPART_OVERHEAD_BYTES),
        max_files=MAX_ENROLL_IMAGES,
        max_fields=16,
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise BadRequest("invalid_multipart", f"{exc.message} ({how})") from None


def text_field(form: FormData, name: str, how: str, *, required: bool) -> str | None:
    value = form.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        code = "missing_identity" if name == IDENTITY_FIELD else f"missing_{name}"
        raise BadRequest(code, f"the form has no non-empty text field {name!r}; {how}")
    return value


async def form_images(form: FormData, how: str, max_bytes: int, max_pixels: int) -> list[Any]:
    """The decoded `image` files of a form as H x W x 3 uint8 pixels (at most
    TEMPLATE_MAX_SIDE); an error names the image at fault by position and file name."""
    uploads = form.getlist(IMAGE_FIELD)
    if not uploads or not all(isinstance(u, UploadFile) for u in uploads):
        found = ", ".join(sorted(set(form.keys()))) or "none"
        raise BadRequest(
            "missing_image", f"the form has no file field {IMAGE_FIELD!r} (fields: {found}); {how}"
        )
    images = []
    for position, upload in enumerate(uploads):
        data = await upload.read()
        try:
            images.append(await run_in_threadpool(face_pixels, data, max_bytes, max_pixels))
        except ApiError as exc:
            where = f"image {position + 1} ({upload.filename or 'unnamed'})"
            raise type(exc)(exc.code, f"{where}: {exc.message}") from None
    return images


def face_pixels(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    image = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return inference_pixels(image, TEMPLATE_MAX_SIDE)[0]


def thumbnail_jpeg(png: bytes) -> bytes:
    """A stored template (PNG, grey or colour) as a JPEG of at most THUMBNAIL_MAX_SIDE px."""
    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
    small.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def person_path(identity: str) -> str:
    return f"/v1/faces/people/{quote(identity, safe='')}"


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def add_faces_routes(api: FastAPI, config: Any, faces: DeploymentHandle) -> None:
    """Add the /v1/faces routes; `config` is the gateway's ApiConfig, `faces` a handle to the
    Faces deployment."""
    max_bytes, max_pixels = config.max_upload_bytes, config.max_image_pixels

    @api.post(
        "/v1/faces/enroll",
        response_model=EnrollResponse,
        responses={**IMAGE_ERRORS, **TOKEN_ERRORS},
        openapi_extra=ENROLL_BODY,
        dependencies=[Depends(require_token)],
    )
    async def enroll(request: Request) -> EnrollResponse:
        """Enroll templates of a person (new or known); no retraining. The next identify call
        sees them, and they survive a restart."""
        form = await read_form(request, max_bytes, ENROLL_HOW)
        try:
            identity = text_field(form, IDENTITY_FIELD, ENROLL_HOW, required=True)
            images = await form_images(form, ENROLL_HOW, max_bytes, max_pixels)
        finally:
            await form.close()
        return EnrollResponse(**await call(faces.enroll, identity, images))

    @api.post(
        "/v1/faces/identify",
        response_model=IdentifyResponse,
        responses=IMAGE_ERRORS,
        openapi_extra=IDENTIFY_BODY,
    )
    async def identify(request: Request) -> IdentifyResponse:
        """Who is this? The enrolled identity nearest to the face, or "unknown" when even the
        nearest is not closer than γ."""
        data = await read_image_upload(request, max_bytes)
        pixels = await run_in_threadpool(face_pixels, data, max_bytes, max_pixels)
        return IdentifyResponse(**await call(faces.identify, pixels))

    @api.post(
        "/v1/faces/verify",
        response_model=VerifyResponse,
        response_model_exclude_none=True,
        responses={**IMAGE_ERRORS, **_errors(s404="the identity is not enrolled")},
        openapi_extra=VERIFY_BODY,
    )
    async def verify(request: Request) -> VerifyResponse:
        """Same person? Two images compared with each other, or one image with an enrolled
        identity's templates."""
        form = await read_form(request, max_bytes, VERIFY_HOW)
        try:
            identity = text_field(form, IDENTITY_FIELD, VERIFY_HOW, required=False)
            images = await form_images(form, VERIFY_HOW, max_bytes, max_pixels)
        finally:
            await form.close()
        wanted = 1 if identity is not None else 2
        if len(images) != wanted:
            raise BadRequest(
                "wrong_image_count", f"got {len(images)} images, expected {wanted}; {VERIFY_HOW}"
            )
        if identity is not None:
            return VerifyResponse(**await call(faces.verify_identity, identity, images[0]))
        return VerifyResponse(**await call(faces.verify, images[0], images[1]))

    @api.get("/v1/faces", response_model=GalleryInfo)
    async def gallery() -> GalleryInfo:
        """How many people and templates are enrolled, and which model embedded them."""
        return GalleryInfo(**await call(faces.gallery_info))

    # Before the person route: an identity may hold "/", so "{identity:path}" alone would
    # swallow ".../templates/0.jpg".
    @api.get(
        "/v1/faces/people/{identity:path}/templates/{position:int}.jpg",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "the template, as a JPEG"},
            **TOKEN_ERRORS,
            **_errors(s404="the identity is not enrolled, or holds no template at `position`"),
        },
        dependencies=[Depends(require_token)],
    )
    async def template_thumbnail(identity: str, position: int) -> Response:
        """One enrolled template of a person, shrunk to a thumbnail (face images: token only,
        never cached)."""
        png = await call(faces.template_png, identity, position)
        jpeg = await run_in_threadpool(thumbnail_jpeg, png)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @api.get(
        "/v1/faces/people/{identity:path}",
        response_model=PersonResponse,
        responses={**TOKEN_ERRORS, **_errors(s404="the identity is not enrolled")},
        dependencies=[Depends(require_token)],
    )
    async def person(identity: str) -> PersonResponse:
        """An enrolled person: when enrolled, how many templates, and a thumbnail URL for each."""
        found = await call(faces.person, identity)
        times = found["template_times"]
        return PersonResponse(
            identity=identity,
            enrolled_at=_utc(found["enrolled_at"]),
            templates=len(times),
            thumbnails=[
                TemplateThumbnail(
                    position=position,
                    enrolled_at=_utc(added),
                    url=f"{person_path(identity)}/templates/{position}.jpg",
                )
                for position, added in enumerate(times)
            ],
        )

    @api.delete(
        "/v1/faces/{identity:path}",
        response_model=DeleteResponse,
        responses={**TOKEN_ERRORS, **_errors(s404="the identity is not enrolled")},
        dependencies=[Depends(require_token)],
    )
    async def delete(identity: str) -> DeleteResponse:
        """Forget a person: the identity, its templates and their images."""
        return DeleteResponse(**await call(faces.delete, identity))
