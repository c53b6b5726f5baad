"""Helpers shared by the integration tests that serve over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from ray import serve
from ray.util.state import list_actors

from sightline.config import Settings
from sightline.serve.app import run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def replica_pids(deployment: str) -> set[int]:
    """The process ids of the live Serve replicas of `deployment` (e.g. "Faces")."""
    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.pid for a in actors if a.class_name.startswith("ServeReplica:") and
            a.class_name.endswith(f":{deployment}")}  # fmt: skip


@contextmanager
def served_app(settings: Settings) -> Iterator[httpx.Client]:
    """The whole Sightline app on Ray Serve at settings.serve.port (the session's Ray), with
    an HTTP client on it; Serve is shut down after the block."""
    run(settings, blocking=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.serve.port}", timeout=60) as http:
            yield http
    finally:
        serve.shutdown()
