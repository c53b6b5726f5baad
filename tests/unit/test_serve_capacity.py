"""Batching and backpressure settings, in process (the real Serve path: test_serve_backpressure)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from sightline.config import Serve, ServeScaling
from sightline.serve.capacity import (
    call_batched,
    deployment_options,
    each_or_error,
    indices_by,
    refusing_when_full,
)
from sightline.serve.errors import add_error_handlers
from tests.api import assert_error


def test_replicas_or_autoscaling_and_queue_limits_come_from_params() -> None:
    fixed = deployment_options(ServeScaling(num_replicas=3, max_queued_requests=5))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["max_queued_requests"] == 5 and fixed["max_ongoing_requests"] == 8
    assert fixed["backpressure_config"].status_code == 503
    scaled = deployment_options(ServeScaling(autoscaling_config={"max_replicas": 4}))
    assert scaled["autoscaling_config"] == {"max_replicas": 4} and "num_replicas" not in scaled


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"batch": {"max_batch_size": 0}}, "max_batch_size"),
        ({"scaling": {"max_ongoing_requests": 0}}, "max_ongoing_requests"),
        ({"scaling": {"max_queued_requests": -2}}, "max_queued_requests"),
        ({"scaling": {"replicas": 2}}, "replicas"),
    ],
)
def test_bad_serve_params_name_the_field(section: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Serve.model_validate(section)


def test_one_failing_item_fails_only_itself() -> None:
    def invert(values):
        return [1 / v for v in values]

    results = each_or_error(invert, [1.0, 0.0, 4.0])
    assert results[0] == 1.0 and results[2] == 0.25
    assert isinstance(results[1], ZeroDivisionError)
    assert indices_by(["v2", "v1", "v2"]) == {"v2": [0, 2], "v1": [1]}


def test_outside_a_replica_a_batched_method_runs_on_a_batch_of_one() -> None:
    from ray import serve

    class Doubler:
        @serve.batch(max_batch_size=4)
        async def double(self, values: list[int]) -> list[int | Exception]:
            return [v * 2 if v >= 0 else ValueError(f"negative: {v}") for v in values]

    doubler = Doubler()
    assert asyncio.run(call_batched(doubler.double, 21)) == 42
    with pytest.raises(ValueError, match="negative: -1"):
        asyncio.run(call_batched(doubler.double, -1))


def test_a_full_task_queue_is_a_json_503_with_retry_after() -> None:
    api = FastAPI()
    add_error_handlers(api)

    @api.get("/work")
    async def work() -> dict[str, str]:
        with refusing_when_full():
            raise BackPressureError(num_queued_requests=4, max_queued_requests=4, retry_after_s=1.5)

    response = TestClient(api).get("/work")
    message = assert_error(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "2"
    assert "max_queued_requests=4" in message and "retry after 2 s" in message


def test_a_task_replica_that_died_with_the_request_is_a_json_503_with_retry_after() -> None:
    api = FastAPI()
    add_error_handlers(api)

    @api.get("/work")
    async def work() -> dict[str, str]:
        with refusing_when_full():
            raise ActorDiedError()

    response = TestClient(api).get("/work")
    message = assert_error(response, 503, "replica_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert "ActorDiedError" in message
