"""Fuzzing the whole HTTP API from its own OpenAPI schema (schemathesis, valid and invalid
data for every route), in one process: the gateway's FastAPI app (create_api) over the real
task classes (Detector, OTDREvents, Faces, their Serve decorators aside), a real MLflow registry
and a real gallery in a temp dir. Every answer must be below 500, every error must have the one
JSON shape, and the app must still answer /healthz after each case.

Serve itself, over real HTTP, gets a shorter run in tests/integration/test_serve_detect.py.
`SIGHTLINE_FUZZ_EXAMPLES=500 pytest tests/unit/test_fuzz_api.py -s` runs a longer search and
prints how many cases each route got (the counts in docs/benchmarks/serving.md).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from tests.unit.serving_app import TOKEN, openapi_schema

# Per route; most generated bodies are refused at the edge in milliseconds.
EXAMPLES = int(os.environ.get("SIGHTLINE_FUZZ_EXAMPLES", "40"))
CASES: Counter[tuple[str, int]] = Counter()
SECONDS: Counter[str] = Counter()  # reported with the counts, never asserted on


@pytest.fixture(scope="module")
def app(inprocess_api: FastAPI) -> Iterator[FastAPI]:
    yield inprocess_api
    if CASES:
        print("\nfuzz cases per route and status:")
        for (route, status), count in sorted(CASES.items()):
            print(f"  {route:32} {status}  {count}")
        print(f"  total {sum(CASES.values())}")
        for route, seconds in SECONDS.most_common():
            print(f"  {route:32} {seconds:.1f} s")


@pytest.fixture(scope="module")
def health(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# Loaded at import (pytest collects a test per route from it); the cases run against `app`.
schema = schemathesis.openapi.from_dict(openapi_schema())


def assert_error_shape(response) -> None:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(v, str) and v for v in body["error"].values()), body


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded 2-core machine must not turn slowness into a failure
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_input_gets_a_5xx_and_every_error_has_the_json_shape(case, app, health) -> None:
    started = time.perf_counter()
    # The token opens the mutating routes to the fuzzer, except reload: it reloads every model
    # from the registry (seconds each); there the fuzzer probes the token check itself.
    authorised = case.operation.path != "/v1/admin/reload"
    headers = {"Authorization": f"Bearer {TOKEN}"} if authorised else {}
    response = case.call(app=app, headers=headers)
    SECONDS[case.operation.label] += time.perf_counter() - started
    CASES[(case.operation.label, response.status_code)] += 1
    assert response.status_code < 500, (case.as_curl_command(), response.text)
    if response.status_code >= 400:
        assert_error_shape(response)
    assert health.get("/healthz").status_code == 200
