"""HTTP errors of the Serve app: one exception family and one JSON body shape for every error.

Every error a client sees is `{"error": {"code": "...", "message": "..."}}`, including FastAPI's
request validation errors and Starlette's unknown-route / wrong-method responses.

Which errors are the client's fault is decided by type, never by guessing from a message: an
ApiError (raised by the edge checks, or by a task deployment and carried back through Ray as
the cause of a RayTaskError) is a 4xx; any other exception is a bug and stays a logged 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

logger = logging.getLogger(__name__)

# Codes for the HTTP errors Starlette raises itself (routing, methods).
HTTP_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

    status_code: ClassVar[int] = 500
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, code: str, message: str) -> None:
        # Both go to Exception.args so the error pickles across Ray process boundaries.
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"

    def response(self) -> JSONResponse:
        return error_response(self.status_code, self.code, self.message, self.headers)


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class NotFound(ApiError):
    status_code = 404


class PayloadTooLarge(ApiError):
    status_code = 413


class Unprocessable(ApiError):
    """Well-formed input the models cannot take (a degenerate image, a trace out of range)."""

    status_code = 422


class UnsupportedMediaType(ApiError):
    status_code = 415


class ServiceUnavailable(ApiError):
    status_code = 503


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status_code, headers=headers)


# A body with a million bad values names the first few, not all of them.
MAX_DESCRIBED_ERRORS = 5


def describe_validation_errors(errors: Sequence[dict[str, Any]]) -> str:
    """FastAPI's error list -> one line naming each field, e.g. 'query.score_threshold: ...'."""
    parts = []
    for error in errors[:MAX_DESCRIBED_ERRORS]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid value')}")
    if len(errors) > MAX_DESCRIBED_ERRORS:
        parts.append(f"and {len(errors) - MAX_DESCRIBED_ERRORS} more")
    return "; ".join(parts) or "invalid request"


def client_error(exc: Exception) -> ApiError | None:
    """The ApiError `exc` is, or that a task deployment raised and Ray carried back; else None.
    (Ray re-raises a remote ApiError as a RayTaskError that may also subclass the ApiError.)"""
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, ApiError):
        return exc.cause
    return exc if isinstance(exc, ApiError) else None


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    error = client_error(exc)
    assert error is not None
    return error.response()


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", describe_validation_errors(exc.errors()))


async def _client_disconnect(_: Request, exc: Exception) -> JSONResponse:
    # Nobody reads this answer; it keeps a half-sent upload from being logged as a server bug.
    return error_response(
        400, "incomplete_body", "the client closed the connection before the body was complete"
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    error = client_error(exc)
    if error is not None:  # a task deployment refused the input
        return error.response()
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


def add_error_handlers(app: FastAPI) -> None:
    """Make every error response of `app` use the one JSON error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected_error)
