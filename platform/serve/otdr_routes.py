"""The OTDR routes of the ingress (no torch here: the gateway stays light).

    POST /v1/otdr/events   a trace -> its events (type, position and extent in metres, score)

A trace is sent either as a Telcordia SR-4731 `.sor` file (multipart file field `file`; read
here with sightline.data.sor, versions 1 and 2) or as JSON {"samples": [dB, ...],
"resolution_m": metres per sample}. `?model=<family>` picks a registered family other than the
champion; `?score_threshold=` drops weaker events (default: serve.default_score_threshold);
`?include_trace=true` returns the samples too (to plot them). A .sor file's own KeyEvents table
(the instrument's analysis) comes back as `key_events` beside the model's events.
Every bad upload gets a 4xx JSON error naming the problem: an empty or unreadable .sor file (the
block and field at fault), NaN, infinite or out-of-range samples (their index), a resolution
outside MIN_RESOLUTION_M..MAX_RESOLUTION_M, fewer than MIN_TRACE_SAMPLES samples or more than
serve.max_trace_samples.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool

from sightline.data.otdr import KeyEvent
from sightline.data.sor import SorError, read_sor
from sightline.serve.capacity import refusing_when_full
from sightline.serve.errors import (
    BadRequest,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    describe_validation_errors,
)
from sightline.serve.schemas import ErrorResponse, ModelRef
from sightline.serve.uploads import (
    MULTIPART_OVERHEAD_BYTES,
    capped_stream,
    has_body,
    read_multipart_file,
)

FILE_FIELD = "file"
# Sane ranges for a trace (whatever its source): instruments space samples centimetres to
# tens of metres apart and read levels within tens of dB; these bounds leave wide room while
# keeping every value, and every position in metres, finite in float32 arithmetic.
MIN_TRACE_SAMPLES = 2
MIN_RESOLUTION_M = 1e-3
MAX_RESOLUTION_M = 1e3
MAX_ABS_DB = 1e3
HOW_TO_SEND = (
    f"send a .sor file as a multipart/form-data file field named {FILE_FIELD!r}, or JSON "
    '{"samples": [dB, ...], "resolution_m": metres per sample} with Content-Type '
    "application/json"
)


class TraceBody(BaseModel):
    """A trace as JSON: one-way dB samples, one every `resolution_m` metres."""

    model_config = ConfigDict(extra="forbid")

    samples: list[Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_DB, le=MAX_ABS_DB)]] = (
        Field(min_length=MIN_TRACE_SAMPLES, description="one-way dB values, first sample at 0 m")
    )
    resolution_m: float = Field(
        ge=MIN_RESOLUTION_M,
        le=MAX_RESOLUTION_M,
        allow_inf_nan=False,
        description="metres per sample",
    )


class OTDREvent(BaseModel):
    type: str = Field(description="face_plate, pass_through, fiber_cut or fiber_end")
    position_m: float = Field(description="distance of the event's start from the first sample")
    extent_m: float = Field(description="length of fibre the event covers")
    score: float


class TraceInfo(BaseModel):
    num_samples: int
    resolution_m: float
    length_m: float
    samples_db: list[float] | None = Field(
        default=None, description="the trace's samples (dB), with ?include_trace=true"
    )


class InstrumentKeyEvent(BaseModel):
    """A row of the .sor file's KeyEvents table: the instrument's analysis, not the model's."""

    number: int
    position_m: float
    loss_db: float
    reflectance_db: float
    code: str = Field(description="SR-4731 event code, e.g. 0F (non-reflective, found)")


class OTDREventsResponse(BaseModel):
    model: ModelRef
    trace: TraceInfo
    events: list[OTDREvent] = Field(description="sorted by position")
    key_events: list[InstrumentKeyEvent] | None = Field(
        default=None, description="the uploaded .sor file's KeyEvents table, when it has one"
    )


OTDR_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "empty or unreadable .sor file, malformed JSON or form",
        404: "the requested model family is not loaded",
        413: "body or trace larger than the limits",
        415: "neither multipart/form-data nor application/json",
        422: "a trace out of range (NaN or extreme samples, resolution_m) or query parameter",
        503: "no champion OTDR model is registered yet",
    }.items()
}
OTDR_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {"schema": TraceBody.model_json_schema()},
        },
    }
}


class InvalidTrace(Unprocessable):
    """The trace parsed but breaks the schema or the sane ranges (as FastAPI's body errors)."""


def trace_from_sor(data: bytes, filename: str) -> tuple[np.ndarray, float, list[KeyEvent]]:
    """Samples (dB), metres per sample and KeyEvents of an uploaded .sor file, or a 400
    naming why not."""
    if not data:
        raise BadRequest("empty_file", f"{filename} is empty; {HOW_TO_SEND}")
    try:
        trace = read_sor(data)
    except SorError as exc:
        problem = str(exc).removeprefix(f"{exc.source}: ")
        raise BadRequest(
            "invalid_sor", f"{filename} is not a readable SR-4731 .sor file: {problem}"
        ) from None
    check_sor_ranges(trace.samples, trace.resolution_m, filename)
    return trace.samples, trace.resolution_m, list(trace.key_events or [])


def check_sor_ranges(samples: np.ndarray, resolution_m: float, filename: str) -> None:
    """The sane ranges TraceBody declares for JSON, for a trace read from a .sor file."""
    if not MIN_RESOLUTION_M <= resolution_m <= MAX_RESOLUTION_M:
        raise InvalidTrace(
            "invalid_trace",
            f"{filename}: block 'FxdParams' gives {resolution_m:.6g} m per sample (data spacing "
            f"/ group index); the accepted range is {MIN_RESOLUTION_M:g} to {MAX_RESOLUTION_M:g}",
        )
    deepest = float(np.abs(samples).max(initial=0.0))
    if deepest > MAX_ABS_DB:
        raise InvalidTrace(
            "invalid_trace",
            f"{filename}: block 'DataPts' holds a level of -{deepest:.6g} dB (scale factor); "
            f"levels must lie within {MAX_ABS_DB:g} dB",
        )


def trace_from_json(data: bytes) -> tuple[np.ndarray, float, list[KeyEvent]]:
    if not data:
        raise BadRequest("empty_body", f"the request has no body; {HOW_TO_SEND}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("invalid_json", "the body's JSON is nested too deeply") from None
    try:
        body = TraceBody.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise InvalidTrace("invalid_trace", describe_validation_errors(errors)) from None
    return np.asarray(body.samples, dtype=np.float32), body.resolution_m, []


async def read_sor_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The bytes and file name of the multipart file field `file`."""
    limit = max_bytes + MULTIPART_OVERHEAD_BYTES
    return await read_multipart_file(request, limit, FILE_FIELD, "missing_file", HOW_TO_SEND)


async def read_trace(request: Request, max_bytes: int) -> tuple[np.ndarray, float, list[KeyEvent]]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        data, filename = await read_sor_upload(request, max_bytes)
        return await run_in_threadpool(trace_from_sor, data, filename)
    if media_type == "application/json":
        data = b"".join([chunk async for chunk in capped_stream(request, max_bytes)])
        return await run_in_threadpool(trace_from_json, data)
    if not media_type and not await has_body(request):
        raise BadRequest("empty_body", f"the request has no body; {HOW_TO_SEND}")
    raise UnsupportedMediaType(
        "unsupported_content_type",
        f"content type {media_type or '(none)'!r} is not accepted; {HOW_TO_SEND}",
    )


def check_length(samples: np.ndarray, max_samples: int) -> None:
    if len(samples) < MIN_TRACE_SAMPLES:
        raise InvalidTrace(
            "trace_too_short",
            f"the trace has {len(samples)} samples; at least {MIN_TRACE_SAMPLES} are needed",
        )
    if len(samples) > max_samples:
        raise PayloadTooLarge(
            "trace_too_long",
            f"the trace has {len(samples)} samples; the limit is {max_samples} "
            "(serve.max_trace_samples)",
        )


def add_otdr_routes(api: FastAPI, config: Any, otdr: DeploymentHandle) -> None:
    """Add POST /v1/otdr/events; `config` is the gateway's ApiConfig, `otdr` a handle to the
    OTDREvents deployment (otdr.py)."""

    @api.post(
        "/v1/otdr/events",
        response_model=OTDREventsResponse,
        response_model_exclude_none=True,  # samples and key_events only when asked / present
        responses=OTDR_ERRORS,
        openapi_extra=OTDR_REQUEST_BODY,
    )
    async def otdr_events(
        request: Request,
        score_threshold: Annotated[
            float | None,
            Query(ge=0.0, le=1.0, description="drop events scoring below this"),
        ] = None,
        model: Annotated[
            str | None,
            Query(description="a model family name (see /v1/models); default: the champion"),
        ] = None,
        include_trace: Annotated[
            bool, Query(description="also return the samples (dB), e.g. to plot the trace")
        ] = False,
    ) -> OTDREventsResponse:
        """Detect the events of one OTDR trace (a .sor file, or JSON samples + resolution)."""
        with refusing_when_full():
            card = (await otdr.catalog.remote()).resolve(model)
        samples, resolution_m, key_events = await read_trace(request, config.max_upload_bytes)
        check_length(samples, config.max_trace_samples)
        threshold = config.default_score_threshold if score_threshold is None else score_threshold
        with refusing_when_full():  # a full queue: 503 + Retry-After
            events = await otdr.detect.remote(samples, resolution_m, card.version, threshold)
        return OTDREventsResponse(
            model=card.ref(),
            trace=TraceInfo(
                num_samples=len(samples),
                resolution_m=resolution_m,
                length_m=len(samples) * resolution_m,
                samples_db=samples.tolist() if include_trace else None,
            ),
            events=events,
            key_events=[
                InstrumentKeyEvent(
                    number=k.number,
                    position_m=k.position_m,
                    loss_db=k.loss_db,
                    reflectance_db=k.reflectance_db,
                    code=k.code,
                )
                for k in key_events
            ]
            or None,
        )
