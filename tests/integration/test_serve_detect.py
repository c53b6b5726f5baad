"""The Serve app end to end: real Ray Serve on loopback, a real MLflow store, real HTTP.

The app starts before any model is registered (503 with a hint), then picks up the versions
registered while it runs: an untrained faster_rcnn as champion, a weaker faster_rcnn, and
the same weights under a second family name, so `?model=` is exercised without a new family.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import matplotlib
import mlflow
import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from sightline.config import Serve, Settings
from sightline.models.registry import build_model
from sightline.serve.detector import detect_objects
from sightline.serve.registered import RETRY_LOAD_AFTER_S
from sightline.track.registry import log_model, register
from sightline.track.runs import experiment_id
from sightline.workloads import workload_for
from tests.api import assert_error
from tests.conftest import own_store
from tests.integration.serving import free_port, replica_pids, served_app

CLASS_NAMES = ["circle", "square", "triangle", "star", "cross"]
MAX_UPLOAD_BYTES = 2_000_000
OTHER_FAMILY = "tiny_detector"
TOKEN = "test-admin-token"


def register_untrained_detectors(artifact_root: Path) -> None:
    """v1 faster_rcnn (champion), v2 faster_rcnn (worse), v3 the same weights as OTHER_FAMILY."""
    torch.manual_seed(0)
    params = {"width": 8, "representation_size": 64}
    model = build_model("faster_rcnn", num_classes=6, **params)
    with mlflow.start_run(experiment_id=experiment_id("sightline-detection", artifact_root)):
        uri = log_model(
            model,
            family="faster_rcnn",
            num_classes=6,
            model_params=params,
            metadata={"class_names": CLASS_NAMES, "task": "detect"},
        )
    for family, value in [("faster_rcnn", 0.3), ("faster_rcnn", 0.1), (OTHER_FAMILY, 0.05)]:
        register(
            uri, workload=workload_for("detection"), family=family, metrics={"map": value}, tags={}
        )


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (8-bit RGB) but holds almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def upload(client: httpx.Client, data: bytes, name: str = "image.png", **params) -> httpx.Response:
    return client.post("/v1/detect", files={"image": (name, data)}, params=params)


def assert_valid_detections(body: dict, width: int, height: int, threshold: float) -> None:
    assert body["image"] == {"width": width, "height": height}
    for detection in body["detections"]:
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, detection
        assert detection["label"] == CLASS_NAMES[detection["label_id"] - 1]
        assert threshold <= detection["score"] <= 1


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("serve-store")
    with own_store(root, TOKEN):
        yield root


@pytest.fixture(scope="module")
def client(ray_cluster: str, store: Path) -> Iterator[httpx.Client]:
    port = free_port()
    settings = Settings(serve=Serve(port=port, max_upload_bytes=MAX_UPLOAD_BYTES))
    assert settings.tracking_uri.endswith(str(store / "mlflow.db"))
    with served_app(settings) as http:
        yield http


def wait_for_models(client: httpx.Client, count: int) -> None:
    deadline = time.monotonic() + RETRY_LOAD_AFTER_S + 45
    while time.monotonic() < deadline:
        if client.get("/healthz").json()["models_loaded"] == count:
            return
        time.sleep(0.5)
    pytest.fail(f"the app did not load {count} models in time")


def test_without_a_champion_detect_is_503_and_says_how_to_get_one(client, store) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "models_loaded": 0}
    assert client.get("/v1/models").json()["models"] == []
    message = assert_error(upload(client, encode(noise_image(32, 32), "PNG")), 503, "no_champion")
    assert "make demo" in message and "sightline register" in message


@pytest.fixture(scope="module")
def api(client: httpx.Client, store: Path) -> httpx.Client:
    """The app after models were registered while it ran (it looks for them by itself)."""
    register_untrained_detectors(store / "artifacts")
    wait_for_models(client, 2)  # v1: champion and faster_rcnn; v3: OTHER_FAMILY
    return client


def test_models_lists_the_champion_and_each_family(api) -> None:
    catalog = api.get("/v1/models").json()["groups"]["detection"]
    assert catalog["champion_version"] == "1"
    assert catalog["families"] == {"faster_rcnn": "1", OTHER_FAMILY: "3"}
    champion = next(card for card in catalog["models"] if card["champion"])
    assert champion == {
        "name": "sightline-detector",
        "version": "1",
        "family": "faster_rcnn",
        "task": "detect",
        "class_names": CLASS_NAMES,
        "champion": True,
        "metrics": {"map": 0.3},  # as registered (the version's metric.* tags)
        "run_id": None,  # registered without a run_id tag here
    }


@pytest.mark.parametrize(
    ("width", "height", "fmt", "mode"),
    [
        (200, 120, "PNG", "RGB"),
        (90, 160, "JPEG", "RGB"),
        (64, 48, "PNG", "L"),
        (70, 50, "PNG", "RGBA"),
    ],
)
def test_detect_reports_boxes_in_original_pixels(api, width, height, fmt, mode) -> None:
    data = encode(noise_image(width, height, mode), fmt)
    response = upload(api, data, f"image.{fmt.lower()}", score_threshold=0.0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "sightline-detector", "version": "1", "family": "faster_rcnn"}
    assert body["detections"], "an untrained detector still returns low-score boxes at threshold 0"
    assert_valid_detections(body, width, height, threshold=0.0)


def test_detect_accepts_a_raw_image_body_and_a_real_photograph(api) -> None:
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    width, height = Image.open(photo).size
    response = api.post(
        "/v1/detect",
        content=photo.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        params={"score_threshold": 0.1},
    )
    assert response.status_code == 200, response.text
    assert_valid_detections(response.json(), width, height, threshold=0.1)


def test_score_threshold_defaults_from_settings_and_is_validated(api) -> None:
    data = encode(noise_image(80, 80), "PNG")
    default = upload(api, data).json()
    assert_valid_detections(default, 80, 80, threshold=Serve().default_score_threshold)
    for bad in ["1.5", "-0.1", "abc", "nan"]:
        message = assert_error(upload(api, data, score_threshold=bad), 422, "invalid_request")
        assert "score_threshold" in message


def test_model_selects_a_family_and_unknown_ones_are_404(api) -> None:
    data = encode(noise_image(60, 60), "PNG")
    other = upload(api, data, model=OTHER_FAMILY).json()
    assert other["model"] == {"name": "sightline-detector", "version": "3", "family": OTHER_FAMILY}
    champion = upload(api, data, model="champion").json()
    assert champion["model"]["version"] == "1"
    message = assert_error(upload(api, data, model="yolo"), 404, "unknown_model")
    assert "faster_rcnn" in message and OTHER_FAMILY in message


def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(api) -> None:
    jpeg = encode(noise_image(256, 256), "JPEG")
    cases = [
        (api.post("/v1/detect", content=b"", headers={"Content-Type": "image/png"}), 400),
        (api.post("/v1/detect"), 400),
        (upload(api, b"", "empty.png"), 400),
        (upload(api, b"just some notes\n" * 10, "notes.txt"), 415),
        (upload(api, jpeg[: len(jpeg) // 2], "cut.jpg"), 400),
        (upload(api, png_claiming(100_000, 100_000), "bomb.png"), 413),
        (upload(api, np.zeros(MAX_UPLOAD_BYTES + 1, np.uint8).tobytes(), "big.png"), 413),
        (api.post("/v1/detect", files={"picture": ("p.png", jpeg)}), 400),
        (api.post("/v1/detect", content=b"hello", headers={"Content-Type": "text/plain"}), 415),
        (api.get("/v1/nowhere"), 404),
        (api.get("/v1/detect"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert set(response.json()["error"]) == {"code", "message"}
    final = upload(api, encode(noise_image(50, 40), "PNG"), score_threshold=0.0)
    assert final.status_code == 200
    assert_valid_detections(final.json(), 50, 40, threshold=0.0)


def test_openapi_docs_are_served(api) -> None:
    assert api.get("/docs").status_code == 200
    spec = api.get("/openapi.json").json()
    timing = api.get("/healthz").headers["Server-Timing"]  # what bench/serving.py reads
    assert timing.startswith("app;dur=") and float(timing.removeprefix("app;dur=")) >= 0
    assert {"/healthz", "/v1/models", "/v1/detect"} <= set(spec["paths"])


def test_reload_swaps_in_a_new_champion_without_dropping_requests(api, store) -> None:
    before = api.get("/v1/models").json()["groups"]["detection"]
    assert_error(api.post("/v1/admin/reload"), 401, "missing_token")
    bad = {"Authorization": "Bearer wrong"}
    assert_error(api.post("/v1/admin/reload", headers=bad), 401, "invalid_token")
    # A better version is registered (e.g. by `sightline tune`): champion moves in the registry.
    uri = f"models:/sightline-detector/{before['champion_version']}"
    promoted = register(
        uri, workload=workload_for("detection"), family="faster_rcnn", metrics={"map": 0.9}, tags={}
    )
    assert promoted.promoted
    image = encode(noise_image(64, 48), "PNG")
    statuses: list[int] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        during = [pool.submit(upload, api, image) for _ in range(12)]
        reloaded = api.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        statuses = [future.result().status_code for future in during]
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["groups"]["detection"]["champion_version"] == promoted.version
    assert statuses == [200] * len(statuses), "no request dropped while models reloaded"
    assert upload(api, image).json()["model"]["version"] == promoted.version


def test_an_rcnn_version_searches_in_the_replicas_proposal_workers(api, store) -> None:
    """rcnn's selective search runs in the detector replica's worker processes
    (serve.proposal_workers, 2 by default); the answer is the model's own, in process."""
    torch.manual_seed(0)
    params = {"width": 8, "feature_dim": 32, "crop_size": 16}
    model = build_model("rcnn", num_classes=6, **params).eval()
    with mlflow.start_run(experiment_id=experiment_id("sightline-detection", store / "artifacts")):
        uri = log_model(model, family="rcnn", num_classes=6, model_params=params,
                        metadata={"class_names": CLASS_NAMES, "task": "detect"})  # fmt: skip
    register(uri, workload=workload_for("detection"), family="rcnn", metrics={"map": 0.01}, tags={})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        "rcnn"
        in api.post("/v1/admin/reload", headers=auth).json()["groups"]["detection"]["families"]
    )
    image = noise_image(64, 48)
    response = upload(api, encode(image, "PNG"), model="rcnn", score_threshold=0.0)
    assert response.status_code == 200, response.text
    assert response.json()["model"]["family"] == "rcnn"
    pixels = np.asarray(image.convert("RGB"))
    expected = detect_objects(model, pixels, CLASS_NAMES, 0.0, original_size=(64, 48))
    assert expected and response.json()["detections"] == [
        d.model_dump(exclude_none=True) for d in expected
    ]
    (replica,) = replica_pids("Detector")
    children = psutil.Process(replica).children()  # the workers, and multiprocessing's tracker
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == Serve().proposal_workers, [c.cmdline() for c in children]


HTTP_FUZZ_EXAMPLES = 8  # per route and mode; the long search runs in process (test_fuzz_api)


def test_fuzzed_requests_over_http_never_get_a_5xx(api) -> None:
    """Schemathesis over real HTTP, from the served OpenAPI document (every route)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    base_url = str(api.base_url)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = st.one_of(operation.as_strategy(mode) for mode in GenerationMode)

        @settings(max_examples=HTTP_FUZZ_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=cases)
        def answers_without_a_5xx(case) -> None:
            nonlocal tried
            tried += 1
            response = case.call(base_url=base_url, timeout=60)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"code", "message"}
                # This app has no OTDR or face champion: those routes answer 503 no_champion.
                if response.status_code == 503:
                    assert error["code"] == "no_champion", response.text
                    return
            assert response.status_code < 500, (case.as_curl_command(), response.text)

        answers_without_a_5xx()
    assert tried >= 10
    assert api.get("/healthz").status_code == 200


def test_half_closed_and_slow_uploads_over_http_leave_the_server_serving(api) -> None:
    import socket

    host, port = api.base_url.host, api.base_url.port
    head = (
        "POST /v1/detect HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(head.format(host=host, length=100_000).encode() + b"\x89PNG" * 64)
        sock.shutdown(socket.SHUT_WR)  # the client stops sending mid-body
        reply = sock.recv(65536)  # an answer or a closed connection; never a 5xx
    assert not reply.startswith(b"HTTP/1.1 5"), reply[:200]
    data = encode(noise_image(64, 48), "PNG")
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(head.format(host=host, length=len(data)).encode())
        for start in range(0, len(data), len(data) // 8 + 1):
            sock.sendall(data[start : start + len(data) // 8 + 1])
            time.sleep(0.05)  # a slow client: the body arrives over ~0.4 s
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert api.get("/healthz").status_code == 200
