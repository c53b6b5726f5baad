"""The HTTP ingress: a FastAPI app (routes, error shape, OpenAPI) deployed on Ray Serve.

This module imports no torch or MLflow, so the ingress replica starts light; inference and
model loading live in the task deployments it calls through handles: `detection` (detector.py)
and, when deployed, `otdr` (otdr.py, routes in otdr_routes.py) and `identification` (faces.py,
routes in faces_routes.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sightline.config import Settings
from sightline.serve.auth import require_token
from sightline.serve.capacity import refusing_when_full
from sightline.serve.console import MLFLOW_UI_URL_ENV, add_console
from sightline.serve.errors import add_error_handlers
from sightline.serve.faces_routes import add_faces_routes
from sightline.serve.images import decode_image, inference_pixels
from sightline.serve.otdr_routes import add_otdr_routes
from sightline.serve.schemas import (
    Catalog,
    DetectResponse,
    ErrorResponse,
    Health,
    ImageSize,
    Models,
)
from sightline.serve.uploads import IMAGE_REQUEST_BODY, read_image_upload

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "empty, truncated or corrupt image; malformed request",
        404: "the requested model family is not loaded",
        413: "image larger than the byte or pixel limit",
        415: "not an image, or an unsupported content type",
        422: "invalid query parameter",
        503: "no champion model is registered yet; or at capacity (see Retry-After)",
    }.items()
}


@dataclass(frozen=True)
class ApiConfig:
    """What the replicas need from Settings, resolved in the driver (not from replica env)."""

    tracking_uri: str
    max_upload_bytes: int
    max_image_pixels: int
    max_inference_side: int
    default_score_threshold: float
    max_trace_samples: int = 1_048_576
    api_token: str | None = field(default=None, repr=False)
    mlflow_ui_url: str | None = None  # the console links each model to its MLflow run there

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiConfig:
        return cls(
            tracking_uri=settings.tracking_uri,
            max_upload_bytes=settings.serve.max_upload_bytes,
            max_image_pixels=settings.serve.max_image_pixels,
            max_inference_side=settings.serve.max_inference_side,
            default_score_threshold=settings.serve.default_score_threshold,
            max_trace_samples=settings.serve.max_trace_samples,
            api_token=settings.api_token,
            mlflow_ui_url=os.environ.get(MLFLOW_UI_URL_ENV) or None,
        )


def create_api(config: ApiConfig, handles: Mapping[str, DeploymentHandle]) -> FastAPI:
    """The FastAPI app; `handles` maps a task group to its deployment (each has `catalog()`)."""
    api = FastAPI(
        title="Sightline",
        summary="Object detection, OTDR event detection and face identification on Ray Serve",
        version="0.1.0",
    )
    api.state.api_token = config.api_token
    add_error_handlers(api)
    api.add_middleware(ServerTiming)

    async def all_models() -> Models:
        groups = list(handles)
        with refusing_when_full():  # a task replica that died meanwhile: 503, not 500
            catalogs = await asyncio.gather(*(handles[g].catalog.remote() for g in groups))
        return Models(
            models=[card for c in catalogs for card in c.models],
            groups=dict(zip(groups, catalogs, strict=True)),
        )

    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(models_loaded=len((await all_models()).models))

    @api.get("/v1/models", response_model=Models)
    async def models() -> Models:
        return await all_models()

    @api.post(
        "/v1/admin/reload",
        response_model=Models,
        responses={401: {"model": ErrorResponse, "description": "missing or wrong bearer token"}},
        dependencies=[Depends(require_token)],
    )
    async def reload() -> Models:
        """Load the registry's current champions (e.g. after `sightline tune`) into every task
        deployment. Requests in flight finish on the models they started with."""
        with refusing_when_full():
            await asyncio.gather(*(handle.reload.remote() for handle in handles.values()))
        return await all_models()

    add_detect_routes(api, config, handles["detection"])
    if "identification" in handles:
        add_faces_routes(api, config, handles["identification"])
    if "otdr" in handles:
        add_otdr_routes(api, config, handles["otdr"])
    add_console(api, config.mlflow_ui_url)
    return api


class ServerTiming:
    """Adds `Server-Timing: app;dur=<ms>` to every answer: the time this FastAPI app took,
    task deployment calls included. A client's round trip minus it is what Serve's proxy,
    HTTP and the routing to this replica cost (bench/serving.py measures that overhead)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                MutableHeaders(scope=message).append("Server-Timing", f"app;dur={elapsed_ms:.3f}")
            await send(message)

        await self.app(scope, receive, send_timed)


def add_detect_routes(api: FastAPI, config: ApiConfig, detector: DeploymentHandle) -> None:
    async def catalog() -> Catalog:
        with refusing_when_full():
            return await detector.catalog.remote()

    @api.post(
        "/v1/detect",
        response_model=DetectResponse,
        response_model_exclude_none=True,  # masks/keypoints only for the families that have them
        responses=ERROR_RESPONSES,
        openapi_extra=IMAGE_REQUEST_BODY,
    )
    async def detect(
        request: Request,
        score_threshold: Annotated[
            float | None,
            Query(ge=0.0, le=1.0, description="drop detections scoring below this"),
        ] = None,
        model: Annotated[
            str | None,
            Query(description="a model family name (see /v1/models); default: the champion"),
        ] = None,
    ) -> DetectResponse:
        """Detect objects in one image (multipart field `image`, or a raw image/* body)."""
        card = (await catalog()).resolve(model)
        data = await read_image_upload(request, config.max_upload_bytes)
        image = await run_in_threadpool(
            decode_image,
            data,
            max_bytes=config.max_upload_bytes,
            max_pixels=config.max_image_pixels,
        )
        threshold = config.default_score_threshold if score_threshold is None else score_threshold
        pixels, scale = await run_in_threadpool(inference_pixels, image, config.max_inference_side)
        with refusing_when_full():
            detections = await detector.detect.remote(
                pixels, card.version, threshold, scale, (image.width, image.height)
            )
        return DetectResponse(
            model=card.ref(),
            image=ImageSize(width=image.width, height=image.height),
            detections=detections,
        )


# The ingress is async and light: its own limit (Serve's default is 5 in flight) must not be
# what bounds the load, or requests queue in the proxy, unbounded, and never reach the task
# deployments, whose queue limits answer 503 + Retry-After (capacity.py) and whose batches
# fill from many requests at once.
INGRESS_MAX_ONGOING_REQUESTS = 1000


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_constructor_retry_count=2,
    max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
)
@serve.ingress()
class Gateway:
    """The HTTP ingress. The FastAPI app is built in the replica (`__serve_build_asgi_app__`)
    so its routes close over this replica's config and deployment handles."""

    def __init__(self, config: ApiConfig, **handles: DeploymentHandle) -> None:
        self._config = config
        self._handles = handles

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self._config, self._handles)
