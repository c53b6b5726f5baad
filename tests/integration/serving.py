"""Helpers shared by the integration tests that serve over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from ray import serve

from sightline.config import Settings
from sightline.serve.app import run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
