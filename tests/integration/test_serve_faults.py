"""Faults of the face identification service on a real Serve app (loopback, real gallery file).

- The Faces replica's process is killed (SIGKILL) while a client enrolls people and another
  identifies: Serve starts a new replica, requests after the recovery succeed, and every
  enrollment that was acknowledged (200) is still in the gallery. The test prints how many
  requests failed during the kill (the figure in docs/benchmarks/serving.md); a failure may
  only be a 503 (the request the dying replica held), never a 500 or a broken connection.
A redeploy of the whole app keeping the gallery is test_identification's
test_enrollments_survive_a_redeploy (every replica goes; the new ones open the same file).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sightline.config import Serve, Settings
from sightline.gallery.store import Gallery
from sightline.serve.faces import gallery_file
from tests.conftest import own_store
from tests.integration.serving import free_port, replica_pids, served_app
from tests.unit.test_faces_routes import face, png, register_embedder

TOKEN = "faults-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENROLLED_BEFORE_KILL = 5
SUCCESSES_AFTER_RECOVERY = 5  # in a row, per client
DEADLINE_S = 120  # for the whole kill and recovery (a loaded 2-core machine is slow)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("faults-store")
    with own_store(root, TOKEN):
        register_embedder(root, image_size=16)
        yield root


def app_settings(store: Path) -> Settings:
    return Settings(serve=Serve(port=free_port(), gallery_path=store / "gallery"))


def person(index: int) -> str:
    return f"person-{index:04d}"


def enroll(client: httpx.Client, index: int) -> httpx.Response:
    files = [("image", ("face.png", png(face(index))))]
    return client.post("/v1/faces/enroll", data={"identity": person(index)}, files=files,
                       headers=AUTH)  # fmt: skip


def identify(client: httpx.Client, index: int) -> httpx.Response:
    return client.post("/v1/faces/identify", files={"image": ("face.png", png(face(index)))})


Request = Callable[[httpx.Client, int], httpx.Response]


@dataclass
class Load:
    """Two clients (one enrolling new people, one identifying enrolled ones) until stopped;
    each outcome is recorded with the time it came back."""

    client: httpx.Client
    stop: threading.Event = field(default_factory=threading.Event)
    acknowledged: list[int] = field(default_factory=list)
    outcomes: dict[str, list[tuple[float, int | str]]] = field(
        default_factory=lambda: {"enroll": [], "identify": []}
    )

    def enroll_people(self) -> None:
        index = 0
        while not self.stop.is_set():
            self.record("enroll", enroll, index)
            index += 1

    def identify_people(self) -> None:
        while not self.stop.is_set():
            if self.acknowledged:
                self.record("identify", identify, self.acknowledged[-1])

    def record(self, route: str, send: Request, index: int) -> None:
        try:
            status: int | str = send(self.client, index).status_code
        except httpx.HTTPError as exc:  # the connection itself failed
            status = type(exc).__name__
        if status == 200 and route == "enroll":
            self.acknowledged.append(index)
        self.outcomes[route].append((time.monotonic(), status))

    def recovered_since(self, moment: float) -> bool:
        """Each client's last SUCCESSES_AFTER_RECOVERY answers came after `moment`, all 200."""
        for outcomes in self.outcomes.values():
            last = outcomes[-SUCCESSES_AFTER_RECOVERY:]
            if len(last) < SUCCESSES_AFTER_RECOVERY or last[0][0] < moment:
                return False
            if any(status != 200 for _, status in last):
                return False
        return True

    def failures(self) -> Counter[str]:
        return Counter(
            f"{route} {status}"
            for route, outcomes in self.outcomes.items()
            for _, status in outcomes
            if status != 200
        )


def wait_until(condition, what: str, deadline: float) -> None:
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)


@dataclass
class KillRun:
    load: Load
    gallery_after: dict  # GET /v1/faces once the app had recovered


@pytest.fixture(scope="module")
def killed_under_load(ray_cluster: str, store: Path) -> KillRun:
    """The app under load from two clients; its Faces replica SIGKILLed after the first
    enrollments; the load kept on until both clients succeed again, then the app stopped."""
    deadline = time.monotonic() + DEADLINE_S
    with served_app(app_settings(store)) as client:
        load = Load(client)
        workers = [
            threading.Thread(target=load.enroll_people, daemon=True),
            threading.Thread(target=load.identify_people, daemon=True),
        ]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: len(load.acknowledged) >= ENROLLED_BEFORE_KILL,
                       "the first enrollments", deadline)  # fmt: skip
            (pid,) = replica_pids("Faces")
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: replica_pids("Faces") - {pid}, "a new Faces replica", deadline)
            wait_until(lambda: load.recovered_since(killed_at), "requests succeed again",
                       deadline)  # fmt: skip
        finally:
            load.stop.set()
            for worker in workers:
                worker.join(timeout=60)
        return KillRun(load, client.get("/v1/faces").json())


def test_killing_the_faces_replica_under_load_loses_no_acknowledged_enrollment(
    killed_under_load: KillRun, store: Path
) -> None:
    load = killed_under_load.load
    answered = {route: len(outcomes) for route, outcomes in load.outcomes.items()}
    print(f"\nreplica kill: requests {answered}, failed {dict(load.failures()) or 0}, "
          f"{len(load.acknowledged)} enrollments acknowledged")  # fmt: skip
    with Gallery(gallery_file(store / "gallery")) as gallery:
        missing = {person(i) for i in load.acknowledged} - set(gallery.identities())
    assert not missing, f"acknowledged enrollments lost in the kill: {sorted(missing)}"
    assert killed_under_load.gallery_after["identities"] >= len(load.acknowledged)
    # A request the dying replica held is a 503 with Retry-After (capacity.ReplicaLost).
    assert set(load.failures()) <= {"enroll 503", "identify 503"}, load.failures()
