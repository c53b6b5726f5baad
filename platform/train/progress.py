"""Training progress, from the Ray Train workers to the console of the process that called fit.

Rank 0 puts a small event on a Ray queue after a batch (at most every BATCH_EVERY_S: each put
is an actor call, a few per cent of a small model's batch) and after every epoch; a thread of the
calling process draws them (`sightline.console.EpochProgress`). Progress travels as data because
a quiet stage does not subscribe to its workers' stdout, and the queue reaches workers on any
node. Inside a Ray actor (a Tune trial) nobody watches a console, and Tune shows its own
progress: no queue then.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayError
from ray.util.queue import Empty, Queue

from sightline.console import EpochProgress

POLL_S = 0.25  # how long the drawing thread waits for an event before checking for the end
BATCH_EVERY_S = 0.25  # the least time between two batch events (the bar moves 4 times a second)


@dataclass(frozen=True)
class ProgressEvent:
    epoch: int  # 0-based, within this Ray Train run
    epochs: int
    batch: int  # batches done so far in this epoch (per worker)
    batches: int
    metrics: dict[str, float] = field(default_factory=dict)  # set when the epoch is done

    @property
    def epoch_done(self) -> bool:
        return bool(self.metrics)


class ProgressSender:
    """The worker's end; a no-op without a queue (other ranks, Tune trials). Progress is never
    worth a failed training: if the queue is gone, sending stops."""

    def __init__(self, queue: Queue | None, epochs: int, batches: int) -> None:
        self._queue, self._epochs, self._batches = queue, epochs, batches
        self._last_batch_sent = -math.inf

    def batch(self, epoch: int, batch: int) -> None:
        now = time.monotonic()
        if now - self._last_batch_sent < BATCH_EVERY_S and batch < self._batches:
            return
        self._last_batch_sent = now
        self._send(ProgressEvent(epoch, self._epochs, batch, self._batches))

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._send(ProgressEvent(epoch, self._epochs, self._batches, self._batches, metrics))

    def _send(self, event: ProgressEvent) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait(event)
        except RayError:
            self._queue = None


def _draw(queue: Queue, display: EpochProgress, finished: threading.Event) -> None:
    while True:
        try:
            event: ProgressEvent = queue.get(timeout=POLL_S)
        except Empty:
            if finished.is_set():
                return
            continue
        except RayError:
            return
        if event.epoch_done:
            display.epoch_done(event.epoch, event.epochs, event.metrics)
        else:
            display.batch_done(event.epoch, event.epochs, event.batch, event.batches)


@contextmanager
def shown_progress(label: str) -> Iterator[Queue | None]:
    """A queue for the workers' progress, drawn on this process's console while the block
    runs; None inside a Ray actor."""
    if ray.get_runtime_context().get_actor_id() is not None:
        yield None
        return
    queue = Queue(actor_options={"num_cpus": 0})
    finished = threading.Event()
    with EpochProgress(label) as display:
        drawer = threading.Thread(target=_draw, args=(queue, display, finished), daemon=True)
        drawer.start()
        try:
            yield queue
        finally:
            finished.set()  # the thread drains what is queued, then ends
            drawer.join()
            queue.shutdown()
