"""How much the task deployments take on, from params `serve.batch` and `serve.scaling`.

deployment_options(scaling)    -> Ray Serve options of a task deployment: replicas (or
                                  autoscaling), max_ongoing_requests, max_queued_requests,
                                  and a 503 + Retry-After answer when the queue is full
configure_batching(method, b)  -> a replica's @serve.batch method set to the params' sizes
call_batched(method, *args)    -> one request through a @serve.batch method (outside a Serve
                                  replica: the plain function on a batch of one)
each_or_error(run, items)      -> a batch's results, one bad item failing only itself
refusing_when_full()           -> around a handle call in the ingress: a full task queue
                                  (BackPressureError), or a task replica that died with the
                                  request (RayActorError) -> 503, Retry-After, the JSON error
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, RayServeException

from sightline.config import ServeBatch, ServeScaling
from sightline.serve.errors import ServiceUnavailable

DEFAULT_BATCH = ServeBatch()
Item = TypeVar("Item")
Result = TypeVar("Result")


def deployment_options(scaling: ServeScaling) -> dict[str, Any]:
    replicas: dict[str, Any] = (
        {"autoscaling_config": scaling.autoscaling_config}
        if scaling.autoscaling_config
        else {"num_replicas": scaling.num_replicas}
    )
    return {
        **replicas,
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "max_queued_requests": scaling.max_queued_requests,
        "backpressure_config": BackpressureConfig(
            status_code=503, retry_after_s=scaling.retry_after_s
        ),
    }


def in_replica() -> bool:
    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


def configure_batching(method: Any, batch: ServeBatch | None) -> None:
    """Set a bound @serve.batch method's batch size and wait (params, else the defaults)."""
    if not in_replica():  # used in-process (CLI, tests): nothing batches there
        return
    batch = batch or DEFAULT_BATCH
    method.set_max_batch_size(batch.max_batch_size)
    method.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)


def each_or_error(
    run: Callable[[Sequence[Item]], Sequence[Result]], items: Sequence[Item]
) -> list[Result | Exception]:
    """`run` on the whole batch or, if that fails, on one item at a time, each failure as its
    item's result: one request the model cannot take fails only itself, not its batch."""
    try:
        return list(run(items))
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    results: list[Result | Exception] = []
    for item in items:
        try:
            results.extend(run([item]))
        except Exception as exc:
            results.append(exc)
    return results


def indices_by(keys: Sequence[str]) -> dict[str, list[int]]:
    """The positions of each distinct key (e.g. a batch's model versions)."""
    positions: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        positions.setdefault(key, []).append(index)
    return positions


async def call_batched(method: Any, *args: Any) -> Any:
    """One request's result from a bound @serve.batch method whose batch results may be
    exceptions (each_or_error). Serve's batch queue exists only inside a replica; elsewhere
    the undecorated function runs on a batch of this one request."""
    if in_replica():
        result = await method(*args)
    else:
        (result,) = await method.__wrapped__(method.__self__, *([arg] for arg in args))
    if isinstance(result, Exception):
        raise result
    return result


class AtCapacity(ServiceUnavailable):
    """A task deployment's queue is full: 503 at once, with when to try again."""

    def __init__(self, exc: BackPressureError) -> None:
        retry_after = max(1, math.ceil(exc.retry_after_s or 1))
        super().__init__(
            "overloaded", f"the server is at capacity ({exc}); retry after {retry_after} s"
        )
        self.headers = {"Retry-After": str(retry_after)}


class ReplicaLost(ServiceUnavailable):
    """The task replica died while it held the request (Serve starts a new one): 503 with
    when to try again, never the 500 of an unexpected error."""

    RETRY_AFTER_S = 1

    def __init__(self, exc: RayActorError) -> None:
        super().__init__(
            "replica_unavailable",
            f"the replica serving this request stopped ({type(exc).__name__}); a new one is "
            f"starting; retry after {self.RETRY_AFTER_S} s",
        )
        self.headers = {"Retry-After": str(self.RETRY_AFTER_S)}


@contextmanager
def refusing_when_full() -> Iterator[None]:
    """Around the ingress's calls of task deployment handles: a full queue (the handle's
    BackPressureError) becomes AtCapacity, so the client gets the JSON error shape; Serve's
    own answer to an uncaught BackPressureError is a plain-text 503. A replica that died with
    the request (e.g. killed; tests/integration/test_serve_faults.py) becomes ReplicaLost."""
    try:
        yield
    except BackPressureError as exc:
        raise AtCapacity(exc) from None
    except RayActorError as exc:
        raise ReplicaLost(exc) from None
