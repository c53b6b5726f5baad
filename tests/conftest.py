"""Shared test fixtures: an isolated MLflow store and a quiet environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def own_store(root: Path, token: str | None = None) -> Iterator[str]:
    """A fresh SQLite MLflow store under `root` for the block (and the admin token, if given):
    set in the environment, so stages and Serve replicas started inside use it too."""
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        if token is not None:
            env.setenv("SIGHTLINE_API_TOKEN", token)
        mlflow.set_tracking_uri(uri)
        yield uri


@pytest.fixture
def mlflow_store(tmp_path: Path) -> Iterator[str]:
    """A real MLflow SQLite store in a temp dir, set as the active tracking URI."""
    with own_store(tmp_path) as uri:
        yield uri
