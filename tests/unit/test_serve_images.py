"""Upload decoding (every format, mode and failure) and the API's error/auth plumbing."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from sightline.serve.errors import (
    ApiError,
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from sightline.serve.images import decode_image

MAX_BYTES = 1_000_000
MAX_PIXELS = 1_000_000


def decode(data: bytes, **limits: int) -> Image.Image:
    return decode_image(
        data,
        max_bytes=limits.get("max_bytes", MAX_BYTES),
        max_pixels=limits.get("max_pixels", MAX_PIXELS),
    )


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient_rgb(width: int = 48, height: int = 32) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], axis=-1))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG (8-bit RGB) whose header declares width x height but carries one pixel row at most."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)


def expect_error(data: bytes, kind: type[ApiError], code: str, **limits: int) -> ApiError:
    with pytest.raises(kind) as caught:
        decode(data, **limits)
    assert caught.value.code == code
    return caught.value


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"])
def test_every_common_format_decodes_to_rgb_of_the_same_size(fmt: str) -> None:
    image = decode(encode(gradient_rgb(), fmt))
    assert image.mode == "RGB"
    assert image.size == (48, 32)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("1", "PNG"), ("CMYK", "JPEG")],
)
def test_every_mode_is_converted_to_rgb(mode: str, fmt: str) -> None:
    image = decode(encode(gradient_rgb().convert(mode), fmt))
    assert (image.mode, image.size) == ("RGB", (48, 32))


def test_grayscale_keeps_its_values_in_every_channel() -> None:
    gray = gradient_rgb().convert("L")
    pixels = np.asarray(decode(encode(gray, "PNG")))
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], np.asarray(gray))


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 128, 65535] * 3] * 8, dtype=np.uint16)
    pixels = np.asarray(decode(encode(Image.fromarray(values), "PNG")))
    assert pixels[0, :3, 0].tolist() == [0, 128, 255]


def test_animated_gif_yields_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), color) for color in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, _, blue = decode(data).getpixel((8, 8))
    assert red > 200 and blue < 50


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    upright = decode(encode(image, "JPEG", exif=exif, quality=95))
    assert upright.size == (20, 40)
    red_top = upright.getpixel((10, 5))
    assert red_top[0] > 200 and red_top[2] < 60


def test_empty_upload_is_a_bad_request() -> None:
    error = expect_error(b"", BadRequest, "empty_image")
    assert error.status_code == 400


def test_upload_over_the_byte_limit_is_refused() -> None:
    data = encode(gradient_rgb(), "PNG")
    error = expect_error(data, PayloadTooLarge, "image_too_large", max_bytes=len(data) - 1)
    assert error.status_code == 413
    assert str(len(data)) in error.message


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"hello, this is a text file\n" * 20,
        b'{"image": "not really"}',
    ],
    ids=["random-bytes", "text", "json"],
)
def test_non_images_are_unsupported_media(data: bytes) -> None:
    error = expect_error(data, UnsupportedMediaType, "not_an_image")
    assert error.status_code == 415


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_caught_by_decoding_the_pixels(fmt: str) -> None:
    data = encode(gradient_rgb(256, 256), fmt)
    error = expect_error(data[: len(data) // 2], BadRequest, "corrupt_image")
    assert error.status_code == 400
    assert fmt in error.message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_pixel_data_is_a_bad_request() -> None:
    data = bytearray(encode(gradient_rgb(64, 64), "PNG"))
    data[60:80] = b"\x00" * 20  # inside the compressed IDAT stream
    expect_error(bytes(data), BadRequest, "corrupt_image")


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    error = expect_error(png_header_only(100_000, 100_000), PayloadTooLarge, "too_many_pixels")
    assert error.status_code == 413


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # No pixel data follows the header: decoding would fail (400), so 413 proves the order.
    error = expect_error(png_header_only(2000, 1000), PayloadTooLarge, "too_many_pixels")
    assert "2000x1000" in error.message
    expect_error(png_header_only(200, 100), BadRequest, "corrupt_image")


def test_errors_pickle_with_their_status_code_and_message() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(PayloadTooLarge("too_many_pixels", "too big")))
    assert (error.status_code, error.code, error.message) == (413, "too_many_pixels", "too big")


# --- the API's error shape and bearer-token dependency (a bare FastAPI app, no Ray) ---


@pytest.fixture(scope="module")
def token_client():
    from fastapi import Depends, FastAPI, Query

    with warnings.catch_warnings():  # starlette warns that its TestClient will move to httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from sightline.serve.auth import require_token
    from sightline.serve.errors import add_error_handlers

    api = FastAPI()
    api.state.api_token = "s3cret"
    add_error_handlers(api)

    @api.post("/mutate", dependencies=[Depends(require_token)])
    def mutate() -> dict[str, bool]:
        return {"done": True}

    @api.get("/number")
    def number(value: float = Query(ge=0, le=1)) -> dict[str, float]:
        return {"value": value}

    return TestClient(api)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer wrong"}, "invalid_token"),
        ({"Authorization": "Basic czNjcmV0"}, "missing_token"),
    ],
)
def test_require_token_refuses_missing_or_wrong_tokens(token_client, headers, code) -> None:
    response = token_client.post("/mutate", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"


def test_require_token_accepts_the_configured_token(token_client) -> None:
    response = token_client.post("/mutate", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200


def test_require_token_without_a_configured_token_is_401(token_client) -> None:
    token_client.app.state.api_token = None
    try:
        response = token_client.post("/mutate", headers={"Authorization": "Bearer s3cret"})
    finally:
        token_client.app.state.api_token = "s3cret"
    assert response.status_code == 401
    assert "SIGHTLINE_API_TOKEN" in response.json()["error"]["message"]


def test_validation_and_routing_errors_use_the_error_shape(token_client) -> None:
    invalid = token_client.get("/number", params={"value": 2})
    assert invalid.status_code == 422
    assert invalid.json()["error"]["code"] == "invalid_request"
    assert "query.value" in invalid.json()["error"]["message"]
    missing = token_client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    wrong_method = token_client.get("/mutate")
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_large_uploads_are_shrunk_for_inference_and_boxes_map_back() -> None:
    from PIL import Image

    from sightline.serve.images import inference_pixels

    big = Image.new("RGB", (4000, 3000))
    pixels, scale = inference_pixels(big, 1333)
    assert max(pixels.shape[:2]) == 1333 and pixels.shape[2] == 3
    assert scale == 4000 / pixels.shape[1]
    small = Image.new("RGB", (640, 480))
    pixels, scale = inference_pixels(small, 1333)
    assert pixels.shape == (480, 640, 3) and scale == 1.0
