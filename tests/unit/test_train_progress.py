"""The workers' progress events: batch events at most every BATCH_EVERY_S (each is an actor
call), the last batch and every epoch always."""

from __future__ import annotations

from sightline.train import progress
from sightline.train.progress import ProgressEvent, ProgressSender


class Recorder:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def put_nowait(self, event: ProgressEvent) -> None:
        self.events.append(event)


def test_batch_events_are_thinned_but_the_last_batch_and_the_epoch_always_go(monkeypatch) -> None:
    clock = iter([0.0, 0.1, 0.2, 0.3, 0.4, 0.45])  # seconds at each of 6 batches
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    queue = Recorder()
    sender = ProgressSender(queue, epochs=1, batches=6)  # type: ignore[arg-type]
    for batch in range(1, 7):
        sender.batch(0, batch)
    sender.epoch(0, {"loss": 1.0})
    assert [e.batch for e in queue.events] == [1, 4, 6, 6]  # 0.0 s, 0.3 s, the last, the epoch
    assert queue.events[-1].epoch_done and not queue.events[-2].epoch_done


def test_without_a_queue_nothing_is_sent() -> None:
    sender = ProgressSender(None, epochs=1, batches=2)
    sender.batch(0, 1)
    sender.epoch(0, {"loss": 1.0})  # no error, nothing to send to
