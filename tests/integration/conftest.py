"""One real local Ray instance for the whole integration session (ray.init costs seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Start (or join via RAY_ADDRESS) Ray once; yields the GCS address so subprocesses can join."""
    import ray

    from sightline.cluster import ensure_ray

    address = ensure_ray(os.environ.get("RAY_ADDRESS"))
    os.environ["RAY_ADDRESS"] = address
    yield address
    ray.shutdown()
