"""The whole HTTP API in one process for the fuzz and bad-input tests: the gateway's FastAPI
app (create_api) over the real task classes (Detector, OTDREvents, Faces, their Serve
decorators aside), with untrained models in a real MLflow registry and a real gallery."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from fastapi import FastAPI

from sightline.serve.detector import Detector
from sightline.serve.faces import Faces
from sightline.serve.gateway import ApiConfig, create_api
from sightline.serve.otdr import OTDREvents
from tests.api import InProcessHandle
from tests.conftest import own_store
from tests.integration.test_serve_detect import register_untrained_detectors
from tests.unit.test_faces_routes import register_embedder
from tests.unit.test_otdr_routes import register_untrained

TOKEN = "in-process-token"
MAX_UPLOAD_BYTES = 500_000
MAX_TRACE_SAMPLES = 20_000
GROUPS = ("detection", "otdr", "identification")


def api_config(tracking_uri: str) -> ApiConfig:
    return ApiConfig(
        tracking_uri=tracking_uri,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_image_pixels=2_000_000,
        max_inference_side=256,
        default_score_threshold=0.5,
        max_trace_samples=MAX_TRACE_SAMPLES,
        api_token=TOKEN,
    )


def openapi_schema() -> dict[str, Any]:
    """The app's OpenAPI document, without a registry (routes reach their handles per request)."""
    return create_api(api_config(""), dict.fromkeys(GROUPS)).openapi()


@contextmanager
def registered_api(root: Path) -> Iterator[FastAPI]:
    """The app over a fresh store under `root`: champions for detection (faster_rcnn), OTDR
    (otdr_detector) and identification (pixel_template); mutating routes want TOKEN."""
    with own_store(root):
        register_untrained_detectors(root / "artifacts")
        register_untrained(root)
        register_embedder(root, image_size=16)
        uri = mlflow.get_tracking_uri()
        handles = {
            "detection": InProcessHandle(Detector.func_or_class(uri)),
            "otdr": InProcessHandle(OTDREvents.func_or_class(uri)),
            "identification": InProcessHandle(Faces.func_or_class(uri, str(root / "gallery"))),
        }
        assert set(handles) == set(GROUPS)
        yield create_api(api_config(uri), handles)
