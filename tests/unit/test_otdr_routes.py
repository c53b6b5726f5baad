"""POST /v1/otdr/events in one process: the FastAPI route of otdr_routes.py over the real
OTDREvents class (its Serve decorator aside) and a real MLflow registry in a temp dir. Serve
itself, over HTTP, is exercised by tests/integration/test_otdr.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from sightline.data.otdr import EVENT_TYPES, NUM_CLASSES, Trace
from sightline.data.sor import sor_bytes
from sightline.data.synth.otdr import simulate_trace
from sightline.data.synth.params import SynthOTDR
from sightline.models import build_model
from sightline.serve.otdr import OTDREvents, detect_events
from sightline.serve.otdr_routes import add_otdr_routes
from sightline.track.registry import log_model, register
from sightline.track.runs import experiment_id
from sightline.workloads import workload_for
from tests.api import assert_error, routes_client
from tests.conftest import own_store
from tests.unit.test_otdr_models import TINY

MAX_UPLOAD = 300_000
MAX_SAMPLES = 5_000
URL = "/v1/otdr/events"


def a_trace(seed: int = 0) -> Trace:
    cfg = SynthOTDR(num_samples=(2048, 3000), resolution_m=(1.0, 2.0))
    return simulate_trace(np.random.default_rng([21, seed]), cfg, trace_id="fixture")


def register_untrained(store: Path) -> None:
    """v1 otdr_detector (champion), v2 otdr_window (lower map_50)."""
    for family, value in [("otdr_detector", 0.4), ("otdr_window", 0.1)]:
        torch.manual_seed(0)
        model = build_model(family, NUM_CLASSES, **TINY[family][1])
        with mlflow.start_run(experiment_id=experiment_id("sightline-otdr", store / "artifacts")):
            uri = log_model(
                model,
                family=family,
                num_classes=NUM_CLASSES,
                model_params=TINY[family][1],
                metadata={"task": "events1d", "class_names": list(EVENT_TYPES)},
            )
        register(
            uri, workload=workload_for("otdr"), family=family, metrics={"map_50": value}, tags={}
        )


def build() -> TestClient:
    otdr = OTDREvents.func_or_class(mlflow.get_tracking_uri())
    return routes_client(
        add_otdr_routes, otdr, max_upload_bytes=MAX_UPLOAD, max_trace_samples=MAX_SAMPLES
    )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("otdr-registry")
    with own_store(root):
        register_untrained(root)
        with build() as client:
            yield client


def post_sor(api: TestClient, data: bytes, name: str = "fibre.sor", **params) -> httpx.Response:
    return api.post(URL, files={"file": (name, data)}, params=params)


def post_json(api: TestClient, body: object, **params) -> httpx.Response:
    content = json.dumps(body)  # allows NaN, as a client's JSON encoder may
    return api.post(
        URL, content=content, headers={"Content-Type": "application/json"}, params=params
    )


def assert_events(body: dict, trace: Trace, threshold: float) -> None:
    assert body["trace"] == {
        "num_samples": len(trace.samples),
        "resolution_m": pytest.approx(trace.resolution_m, rel=1e-6),
        "length_m": pytest.approx(trace.length_m, rel=1e-6),
    }
    positions = [e["position_m"] for e in body["events"]]
    assert positions == sorted(positions)
    for event in body["events"]:
        assert event["type"] in EVENT_TYPES and event["score"] >= threshold
        assert 0 <= event["position_m"] <= trace.length_m and event["extent_m"] > 0
        assert event["position_m"] + event["extent_m"] <= trace.length_m + 1e-3


def test_without_a_champion_the_route_says_how_to_get_one(mlflow_store: str) -> None:
    with build() as client:
        message = assert_error(
            post_json(client, {"samples": [0, 1], "resolution_m": 1}), 503, "no_champion"
        )
    assert "sightline register" in message


@pytest.mark.parametrize("version", [1, 2])
def test_a_sor_file_gives_events_in_metres(api: TestClient, version: int) -> None:
    trace = a_trace()
    response = post_sor(api, sor_bytes(trace, version), score_threshold=0.0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "sightline-otdr", "version": "1", "family": "otdr_detector"}
    assert body["events"], "an untrained detector still reports low-score events at threshold 0"
    assert_events(body, trace, 0.0)


def test_json_samples_give_the_same_answer_as_the_sor_file(api: TestClient) -> None:
    trace = a_trace(1)
    from_sor = post_sor(api, sor_bytes(trace), score_threshold=0.0).json()
    # The .sor stores samples in 1e-6 dB steps (rounded): send what it holds.
    body = {"samples": [round(float(v), 6) for v in trace.samples], "resolution_m": 0.0}
    body["resolution_m"] = from_sor["trace"]["resolution_m"]
    from_json = post_json(api, body, score_threshold=0.0)
    assert from_json.status_code == 200, from_json.text
    assert from_json.json()["trace"] == from_sor["trace"]
    assert len(from_json.json()["events"]) == len(from_sor["events"])


def test_model_selects_a_family_and_unknown_ones_are_404(api: TestClient) -> None:
    trace = a_trace()
    window = post_sor(api, sor_bytes(trace), model="otdr_window", score_threshold=0.0)
    assert window.json()["model"]["family"] == "otdr_window"
    assert window.json()["model"]["version"] == "2"
    message = assert_error(post_sor(api, sor_bytes(trace), model="yolo"), 404, "unknown_model")
    assert "otdr_detector" in message and "otdr_window" in message


def test_default_threshold_and_its_validation(api: TestClient) -> None:
    trace = a_trace()
    assert_events(post_sor(api, sor_bytes(trace)).json(), trace, 0.5)
    for bad in ["1.5", "-0.1", "x"]:
        message = assert_error(
            post_sor(api, sor_bytes(trace), score_threshold=bad), 422, "invalid_request"
        )
        assert "score_threshold" in message


def test_bad_uploads_get_a_4xx_naming_the_problem(api: TestClient) -> None:
    data = sor_bytes(a_trace())
    samples = [float(v) for v in a_trace().samples[:100]]
    cases = [
        (post_sor(api, b"", "empty.sor"), 400, "empty_file", "empty.sor is empty"),
        (post_sor(api, b"just some notes\n" * 20, "notes.txt"), 400, "invalid_sor", "notes.txt"),
        (post_sor(api, data[: len(data) // 2], "cut.sor"), 400, "invalid_sor", "DataPts"),
        (post_sor(api, data[:30], "stub.sor"), 400, "invalid_sor", "Map"),
        (api.post(URL, files={"trace": ("a.sor", data)}), 400, "missing_file", "'file'"),
        (
            post_json(api, {"samples": [*samples[:3], float("nan"), 1.0], "resolution_m": 1}),
            422,
            "invalid_trace",
            "body.samples.3",
        ),
        (
            post_json(api, {"samples": samples, "resolution_m": 0}),
            422,
            "invalid_trace",
            "body.resolution_m",
        ),
        (
            post_json(api, {"samples": samples, "resolution_m": -2.5}),
            422,
            "invalid_trace",
            "greater than or equal to 0.001",
        ),
        (post_json(api, {"samples": samples}), 422, "invalid_trace", "body.resolution_m"),
        (post_json(api, {"samples": [1.0], "resolution_m": 1}), 422, "invalid_trace", "samples"),
        (
            post_json(api, {"samples": [0.0] * (MAX_SAMPLES + 1), "resolution_m": 1}),
            413,
            "trace_too_long",
            str(MAX_SAMPLES),
        ),
        (post_json(api, [1, 2, 3]), 422, "invalid_trace", "body"),
        (
            api.post(URL, content=b"{not json", headers={"Content-Type": "application/json"}),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (post_sor(api, b"\0" * (MAX_UPLOAD + 70_000)), 413, "body_too_large", "limit"),
        (api.post(URL), 400, "empty_body", "no body"),
        (
            api.post(URL, content=data, headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_content_type",
            "text/plain",
        ),
    ]
    for response, status, code, fragment in cases:
        assert fragment in assert_error(response, status, code), (code, response.text)
    trace = a_trace()
    final = post_sor(api, sor_bytes(trace), score_threshold=0.0)
    assert final.status_code == 200
    assert_events(final.json(), trace, 0.0)


class Fixed(torch.nn.Module):
    def forward(self, traces: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [
            {
                "segments": torch.tensor([[300.0, 340.0], [10.0, 14.0], [50.0, 60.0]]),
                "labels": torch.tensor([4, 2, 1]),
                "scores": torch.tensor([0.9, 0.6, 0.2]),
            }
        ]


def test_detect_events_reports_metres_sorted_by_position() -> None:
    events = detect_events(Fixed(), np.zeros(400, np.float32), 2.5, list(EVENT_TYPES), 0.5)

    assert [(e.type, e.position_m, e.extent_m, e.score) for e in events] == [
        ("pass_through", 25.0, 10.0, 0.6),
        ("fiber_end", 750.0, 100.0, 0.9),
    ]
