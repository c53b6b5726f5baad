"""Two Ray instances on one host: a Tune search on ours must not be confused by the other.

Ray's own lookups (Train v2's placement-group cleaner and controller query the state API)
auto-detect the cluster unless RAY_ADDRESS is set in their process; with a second instance up
they found "multiple active Ray instances", a stopped trial kept its workers and the next trial
waited for CPUs forever. sightline.cluster pins the address in every worker of the job.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from tests.integration import test_tune
from tests.integration.cluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture()
def another_ray_instance(tmp_path_factory) -> Iterator[LocalCluster]:
    other = LocalCluster(root=tmp_path_factory.mktemp("other-ray"))
    other.start_ray_head(num_cpus=1)
    yield other
    other.down()


@ray.remote(num_cpus=0)
def _address_seen_by_a_nested_task() -> str | None:
    import os

    return os.environ.get("RAY_ADDRESS")


@ray.remote(num_cpus=0)
def _address_seen_two_levels_down() -> str | None:
    return ray.get(_address_seen_by_a_nested_task.remote())


def test_tune_search_passes_while_another_ray_instance_runs(
    tmp_path, ray_cluster: str, another_ray_instance: LocalCluster
) -> None:
    assert another_ray_instance.ray_address != ray_cluster
    # Every worker of the job names its own cluster, however deep it was started.
    assert ray.get(_address_seen_two_levels_down.remote()) == ray_cluster
    test_tune.test_trials_stopped_early_free_their_workers_for_the_next(tmp_path, ray_cluster)
