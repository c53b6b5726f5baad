"""Helpers shared by the integration tests that train, register and serve over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def own_store(root: Path, token: str | None = None) -> Iterator[str]:
    """A fresh SQLite MLflow store under `root` for the block (and the admin token, if given):
    set in the environment, so stages and Serve replicas started inside use it too."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        if token is not None:
            env.setenv("SIGHTLINE_API_TOKEN", token)
        mlflow.set_tracking_uri(uri)
        yield uri
