"""Read the image bytes of a request: a multipart `image` file field or a raw image/* body.

The body is streamed with a byte cap, so an oversized upload is refused without buffering it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from sightline.serve.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

IMAGE_FIELD = "image"
RAW_BODY_TYPES = ("image/", "application/octet-stream")
# Room for multipart boundaries and part headers around the image itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
HOW_TO_SEND = (
    f"send the image as a multipart/form-data file field named {IMAGE_FIELD!r} "
    "or as the raw body with an image/* content type"
)
# The OpenAPI request body of a route that takes one image this way (/docs).
IMAGE_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {IMAGE_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def read_image_upload(request: Request, max_bytes: int) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await read_multipart_image(request, max_bytes + MULTIPART_OVERHEAD_BYTES)
    if media_type.startswith(RAW_BODY_TYPES):
        return b"".join([chunk async for chunk in capped_stream(request, max_bytes)])
    if not media_type and not await has_body(request):
        raise BadRequest("empty_body", f"the request has no body; {HOW_TO_SEND}")
    raise UnsupportedMediaType(
        "unsupported_content_type",
        f"content type {media_type or '(none)'!r} is not accepted; {HOW_TO_SEND}",
    )


async def capped_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(received, limit)
        yield chunk


def too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "body_too_large", f"the request body is {size}+ bytes; the limit is {limit} bytes"
    )


async def has_body(request: Request) -> bool:
    async for chunk in request.stream():
        if chunk:
            return True
    return False


async def read_multipart_image(request: Request, limit: int) -> bytes:
    data, _ = await read_multipart_file(request, limit, IMAGE_FIELD, "missing_image", HOW_TO_SEND)
    return data


async def read_multipart_file(
    request: Request, limit: int, field: str, missing_code: str, how_to_send: str
) -> tuple[bytes, str]:
    """The bytes and file name of the one multipart file field `field` (body capped at
    `limit`); a malformed body or a missing field is a 400 naming what was found."""
    parser = MultiPartParser(
        request.headers, capped_stream(request, limit), max_files=1, max_fields=16
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(
            "invalid_multipart", f"the multipart body is malformed: {exc.message}"
        ) from None
    try:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            found = ", ".join(sorted(set(form.keys()))) or "none"
            raise BadRequest(
                missing_code,
                f"the multipart body has no file field {field!r} (fields: {found}); {how_to_send}",
            )
        return await upload.read(), upload.filename or field
    finally:
        await form.close()
