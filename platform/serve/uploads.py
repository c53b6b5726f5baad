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
        upload = form.get(IMAGE_FIELD)
        if not isinstance(upload, UploadFile):
            found = ", ".join(sorted(set(form.keys()))) or "none"
            raise BadRequest(
                "missing_image",
                f"the multipart body has no file field {IMAGE_FIELD!r} (fields: {found}); "
                f"{HOW_TO_SEND}",
            )
        return await upload.read()
    finally:
        await form.close()
