"""The HTTP API as tests see it: the error contract, and task routes mounted in one process."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import httpx
import mlflow
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sightline.serve.errors import add_error_handlers
from sightline.serve.gateway import ApiConfig


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """That status and a body of only {"error": {"code": code, "message": ...}}; the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


class InProcessHandle:
    """`handle.method.remote(*args)` awaited, as the gateway calls a DeploymentHandle."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        class Remote:
            @staticmethod
            async def remote(*args: Any) -> Any:
                result = method(*args)
                return await result if inspect.isawaitable(result) else result

        return Remote


def routes_client(
    add_routes: Callable[[FastAPI, ApiConfig, Any], None],
    deployment: Any,
    *,
    api_token: str | None = None,
    **limits: Any,
) -> TestClient:
    """A task's routes (e.g. add_otdr_routes) over its deployment class's logic, no Serve: the
    same ApiConfig, error handlers and token the gateway gives them, on the current MLflow store."""
    config = ApiConfig(
        tracking_uri=mlflow.get_tracking_uri(),
        max_image_pixels=1_000_000,
        max_inference_side=1333,
        default_score_threshold=0.5,
        api_token=api_token,
        **limits,
    )
    api = FastAPI()
    api.state.api_token = config.api_token
    add_error_handlers(api)
    add_routes(api, config, InProcessHandle(deployment))
    return TestClient(api, raise_server_exceptions=False)
