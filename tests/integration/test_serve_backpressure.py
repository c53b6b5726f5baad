"""Backpressure on a real Serve app on loopback: a task deployment whose queue is full makes the
ingress answer 503 with Retry-After and the JSON error at once; the requests it took finish.

The task replica is held busy by a gate actor (no sleeps): with max_ongoing_requests=1 and
max_queued_requests=1, one request runs, at most one waits and the others are turned away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import httpx
import pytest
import ray
from fastapi import FastAPI
from ray import serve

from sightline.config import ServeScaling
from sightline.serve.capacity import deployment_options, refusing_when_full
from sightline.serve.errors import add_error_handlers
from tests.api import assert_error
from tests.integration.serving import free_port

APP = "backpressure-test"


@ray.remote
class Gate:
    """Holds every caller of wait() until open(); counts who is waiting."""

    def __init__(self) -> None:
        self._opened = asyncio.Event()
        self.waiting = 0

    async def wait(self) -> None:
        self.waiting += 1
        await self._opened.wait()

    def open(self) -> None:
        self._opened.set()

    def count(self) -> int:
        return self.waiting


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Held:
    def __init__(self, gate) -> None:
        self._gate = gate

    async def work(self) -> str:
        await self._gate.wait.remote()
        return "done"


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ingress:
    def __init__(self, held) -> None:
        self._held = held

    def __serve_build_asgi_app__(self) -> FastAPI:
        api = FastAPI()
        add_error_handlers(api)

        @api.get("/work")
        async def work() -> dict[str, str]:
            with refusing_when_full():  # as the Sightline ingress calls its task deployments
                return {"result": await self._held.work.remote()}

        return api


@pytest.fixture
def served(ray_cluster: str) -> Iterator[tuple[str, object]]:
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    gate = Gate.remote()
    limits = ServeScaling(max_ongoing_requests=1, max_queued_requests=1, retry_after_s=2)
    held = Held.options(**deployment_options(limits)).bind(gate)
    serve.run(Ingress.bind(held), name=APP, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}", gate
    finally:
        ray.get(gate.open.remote())
        serve.shutdown()


def test_a_full_queue_answers_503_with_retry_after_and_the_taken_requests_finish(served) -> None:
    url, gate = served
    with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(8) as pool:
        first = pool.submit(client.get, "/work")
        while ray.get(gate.count.remote()) < 1:  # the replica is busy with the first request
            pass
        rest = [pool.submit(client.get, "/work") for _ in range(4)]
        # One of them may wait in the queue; the others are answered while the gate is shut.
        wait(rest, timeout=60, return_when=FIRST_COMPLETED)
        while sum(f.done() for f in rest) < 3 and not first.done():
            wait([f for f in rest if not f.done()], timeout=1, return_when=FIRST_COMPLETED)
        answered = [f.result() for f in rest if f.done()]
        assert len(answered) >= 3 and not first.done()
        for response in answered:
            assert_error(response, 503, "overloaded")
            assert response.headers["Retry-After"] == "2"
        ray.get(gate.open.remote())
        finished = [first.result()] + [f.result() for f in rest if f.result() not in answered]
        assert [r.status_code for r in finished] == [200] * (5 - len(answered))
