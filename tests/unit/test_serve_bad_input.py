"""Named regressions for bad input on the whole API, in one process over the real task code
(tests/unit/serving_app.py): the five 500s of issue 13, degenerate images, extreme numbers,
giant or deep JSON, wrong content types, slow and half-closed uploads, and the bearer token
kept out of every log. Each answer is a 4xx with the JSON error shape, or a 200 where the
input is odd but valid; never a 5xx."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from sightline.serve.images import MAX_ASPECT_RATIO, MIN_IMAGE_SIDE
from tests.api import assert_error
from tests.unit.serving_app import MAX_TRACE_SAMPLES, MAX_UPLOAD_BYTES, TOKEN

DETECT, OTDR, IDENTIFY = "/v1/detect", "/v1/otdr/events", "/v1/faces/identify"


@pytest.fixture(scope="module")
def app(inprocess_api: FastAPI) -> FastAPI:
    return inprocess_api


@pytest.fixture(scope="module")
def api(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def post_multipart(api: TestClient, data: bytes, route: str = DETECT):
    return api.post(route, files={"image": ("upload", data)})


def post_raw(api: TestClient, data: bytes, content_type: str = "image/png"):
    return api.post(DETECT, content=data, headers={"Content-Type": content_type})


def post_trace(api: TestClient, text: str):
    return api.post(OTDR, content=text, headers={"Content-Type": "application/json"})


# --- the five 500s of issue 13 -------------------------------------------------------------


@pytest.mark.parametrize("send", [post_multipart, post_raw], ids=["multipart", "raw"])
def test_issue13_a_1x1_image_on_detect_is_a_422(api, send) -> None:
    message = assert_error(send(api, encode(noise(1, 1))), 422, "image_too_small")
    assert "1x1" in message and str(MIN_IMAGE_SIDE) in message


@pytest.mark.parametrize("send", [post_multipart, post_raw], ids=["multipart", "raw"])
def test_issue13_a_10000x1_image_on_detect_is_a_422(api, send) -> None:
    message = assert_error(send(api, encode(noise(10_000, 1))), 422, "image_too_small")
    assert "10000x1" in message


def test_issue13_extreme_samples_and_resolution_on_otdr_are_a_422(api) -> None:
    body = '{"samples": [1e308, -1e308, 1], "resolution_m": 1e-300}'
    message = assert_error(post_trace(api, body), 422, "invalid_trace")
    assert "body.samples.0" in message and "body.samples.1" in message
    assert "body.resolution_m" in message


# --- degenerate images ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "code"),
    [
        (1, 300, "image_too_small"),  # 1xN
        (300, 1, "image_too_small"),  # Nx1
        (4, 4, "image_too_small"),
        (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE * MAX_ASPECT_RATIO + 1, "extreme_aspect_ratio"),
        (2000, 50, "extreme_aspect_ratio"),
    ],
)
def test_degenerate_shapes_are_a_422_naming_the_size(api, width, height, code) -> None:
    for route in (DETECT, IDENTIFY):
        message = assert_error(post_multipart(api, encode(noise(width, height)), route), 422, code)
        assert f"{width}x{height}" in message


def detects(api: TestClient, data: bytes, width: int, height: int) -> None:
    response = post_multipart(api, data)
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": width, "height": height}


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE),
        (MIN_IMAGE_SIDE * MAX_ASPECT_RATIO, MIN_IMAGE_SIDE),
        (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE * MAX_ASPECT_RATIO),
        (1600, 90),  # a wide panorama at 17.8:1, shrunk for inference
    ],
)
def test_the_smallest_and_most_elongated_accepted_images_are_detected(api, width, height) -> None:
    detects(api, encode(noise(width, height)), width, height)


def test_sixteen_bit_cmyk_palette_and_one_bit_images_are_detected(api) -> None:
    grey16 = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16))
    detects(api, encode(grey16), 64, 48)
    detects(api, encode(noise(64, 48).convert("CMYK"), "JPEG"), 64, 48)
    detects(api, encode(noise(64, 48).convert("P"), "PNG", transparency=0), 64, 48)
    detects(api, encode(noise(64, 48).convert("1")), 64, 48)
    detects(api, encode(noise(64, 48).convert("LA")), 64, 48)


def test_an_animated_gif_is_detected_on_its_first_frame(api) -> None:
    frames = [noise(40, 30, seed) for seed in range(3)]
    detects(api, encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), 40, 30)


def test_an_exif_rotated_jpeg_is_reported_upright(api) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    detects(api, encode(noise(60, 20), "JPEG", exif=exif), 20, 60)


def test_an_exif_rotated_sliver_is_refused_whatever_its_orientation(api) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(noise(400, 10), "JPEG", exif=exif)
    assert_error(post_multipart(api, data), 422, "extreme_aspect_ratio")


# --- extreme numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"samples": [NaN, 0, 0], "resolution_m": 1}', "body.samples.0"),
        ('{"samples": [0, Infinity, 0], "resolution_m": 1}', "body.samples.1"),
        ('{"samples": [0, 0, -1e309], "resolution_m": 1}', "body.samples.2"),  # overflows to -inf
        ('{"samples": [0, 0, 1001], "resolution_m": 1}', "body.samples.2"),
        ('{"samples": [0, 0, 0], "resolution_m": 1e300}', "body.resolution_m"),
        ('{"samples": [0, 0, 0], "resolution_m": NaN}', "body.resolution_m"),
        ('{"samples": [0, 0, 0], "resolution_m": "1"}', None),  # pydantic may coerce "1"
        ('{"samples": [0, "x", 0], "resolution_m": 1}', "body.samples.1"),
        ('{"samples": [0, [0], 0], "resolution_m": 1}', "body.samples.1"),
        ('{"samples": [0, 0, 0], "resolution_m": 1, "extra": 1}', "body.extra"),
        ('{"samples": [0], "resolution_m": 1}', "body.samples"),
    ],
)
def test_non_finite_or_extreme_numbers_in_a_trace_are_a_422_naming_the_field(
    api, body, field
) -> None:
    response = post_trace(api, body)
    if field is None:
        assert response.status_code in (200, 422), response.text
        return
    message = assert_error(response, 422, "invalid_trace")
    assert field in message


def test_a_trace_of_a_million_bad_samples_names_the_first_few(api) -> None:
    body = json.dumps({"samples": [5000.0] * (MAX_TRACE_SAMPLES - 1), "resolution_m": 1})
    message = assert_error(post_trace(api, body), 422, "invalid_trace")
    assert "body.samples.0" in message and f"and {MAX_TRACE_SAMPLES - 6} more" in message
    assert len(message) < 1000


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "2", "-0.1", "x"])
def test_score_threshold_out_of_range_or_not_finite_is_a_422(api, value) -> None:
    response = api.post(DETECT, files={"image": ("a.png", encode(noise(32, 32)))},
                        params={"score_threshold": value})  # fmt: skip
    assert "score_threshold" in assert_error(response, 422, "invalid_request")


# --- giant or deep JSON, wrong content types ------------------------------------------------


def test_deeply_nested_json_is_a_400(api) -> None:
    body = '{"samples": ' + "[" * 100_000 + "]" * 100_000 + ', "resolution_m": 1}'
    assert "nested too deeply" in assert_error(post_trace(api, body), 400, "invalid_json")


def test_a_body_over_the_byte_limit_is_refused_before_it_is_parsed(api) -> None:
    body = '{"samples": [' + "0," * (MAX_UPLOAD_BYTES // 2) + '0], "resolution_m": 1}'
    assert_error(post_trace(api, body), 413, "body_too_large")


def test_a_trace_over_the_sample_limit_is_a_413(api) -> None:
    body = json.dumps({"samples": [0.0] * (MAX_TRACE_SAMPLES + 1), "resolution_m": 1})
    assert_error(post_trace(api, body), 413, "trace_too_long")


def test_json_that_is_not_an_object_is_a_422(api) -> None:
    for body in ["[]", "null", '"samples"', "1e999"]:
        assert_error(post_trace(api, body), 422, "invalid_trace")


@pytest.mark.parametrize(
    ("route", "content_type", "status", "code"),
    [
        (DETECT, "text/plain", 415, "unsupported_content_type"),
        (DETECT, "application/json", 415, "unsupported_content_type"),
        (DETECT, "multipart/form-data", 400, "invalid_multipart"),  # no boundary
        (DETECT, "multipart/form-data; boundary=zzz", 400, "invalid_multipart"),
        (OTDR, "image/png", 415, "unsupported_content_type"),
        (OTDR, "application/xml", 415, "unsupported_content_type"),
        (OTDR, "multipart/form-data; boundary=zzz", 400, "invalid_multipart"),
        (IDENTIFY, "application/x-www-form-urlencoded", 415, "unsupported_content_type"),
        ("/v1/faces/verify", "application/json", 415, "unsupported_content_type"),
    ],
)
def test_wrong_content_types_are_a_4xx_naming_what_to_send(
    api, route, content_type, status, code
) -> None:
    response = api.post(route, content=b"some bytes", headers={"Content-Type": content_type})
    assert_error(response, status, code)


# --- slow and half-closed uploads (raw ASGI, so the client side can misbehave) ---------------


def asgi_post(app: FastAPI, body_chunks: list[bytes], *, disconnect: bool, delay_s: float = 0):
    """POST /v1/detect as a raw image body sent in chunks (with `delay_s` between them); with
    `disconnect`, the client hangs up after the chunks instead of finishing the body.
    Returns the status and body the app sent."""
    declared = sum(map(len, body_chunks)) + (1000 if disconnect else 0)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": DETECT,
        "raw_path": DETECT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(declared).encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": disconnect or i < len(body_chunks) - 1}
        for i, chunk in enumerate(body_chunks)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    sent: list[dict] = []

    async def receive() -> dict:
        if delay_s:
            await asyncio.sleep(delay_s)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_half_closed_upload_is_a_400_not_a_server_error(app, api, caplog) -> None:
    data = encode(noise(64, 48))
    with caplog.at_level(logging.ERROR):
        status, body = asgi_post(app, chunks(data[: len(data) // 2], 256), disconnect=True)
    assert (status, body["error"]["code"]) == (400, "incomplete_body")
    assert "unhandled error" not in caplog.text
    assert api.get("/healthz").status_code == 200


def test_a_slow_upload_in_small_chunks_is_detected(app) -> None:
    data = encode(noise(64, 48))
    status, body = asgi_post(app, chunks(data, 512), disconnect=False, delay_s=0.005)
    assert status == 200, body
    assert body["image"] == {"width": 64, "height": 48}


# --- the bearer token ------------------------------------------------------------------------


def test_the_token_is_never_logged_nor_in_the_config_repr(app, api, caplog) -> None:
    from tests.unit.serving_app import api_config

    assert TOKEN not in repr(api_config("sqlite://"))
    with caplog.at_level(logging.DEBUG):
        for token in [TOKEN, TOKEN + "x", TOKEN[:-1], ""]:
            api.post("/v1/admin/reload", headers={"Authorization": f"Bearer {token}"})
        api.delete("/v1/faces/nobody", headers={"Authorization": f"Bearer {TOKEN}"})
    assert caplog.records, "the requests above log something (so the assertion can fail)"
    assert TOKEN[:-1] not in caplog.text
