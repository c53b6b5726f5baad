"""One real local Ray instance for the whole integration session (ray.init costs seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# The multi-node cluster: one session fixture, defined here once. (Imported into each test
# module instead, every module got its own definition, and so its own cluster.)
from tests.integration.cluster import local_cluster  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    # The multi-node cluster (a session fixture: 3 raylets, PostgreSQL, an MLflow server) is
    # started by the first cluster test and stopped at the session's end: run those tests
    # last, so it is up only while they need it.
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Start (or join via RAY_ADDRESS) Ray once; yields the GCS address so subprocesses can join."""
    import ray

    from sightline.cluster import ensure_ray

    address = ensure_ray(os.environ.get("RAY_ADDRESS"))
    os.environ["RAY_ADDRESS"] = address
    yield address
    ray.shutdown()


@pytest.fixture()
def another_ray_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Ray instance on this host (its own head, 1 CPU) for the test's duration: with
    it up, anything that looked its cluster up by auto-detection would find two. Yields its
    address."""
    from tests.integration.cluster import LocalCluster

    other = LocalCluster(root=tmp_path_factory.mktemp("other-ray"))
    other.start_ray_head(num_cpus=1)
    try:
        yield other.ray_address
    finally:
        other.down()
