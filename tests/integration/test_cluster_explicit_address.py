"""Two Ray instances on one host: every worker of a Sightline job names its own cluster.

Ray's own lookups (Train v2's placement-group cleaner and controller query the state API)
auto-detect the cluster unless RAY_ADDRESS is set in their process; with a second instance up
they found "multiple active Ray instances", a stopped trial kept its workers and the next trial
waited for CPUs forever. sightline.cluster pins the address in every worker of the job. The Tune
search that showed it runs with a second instance up in
test_tune.py::test_trials_stopped_early_free_their_workers_for_the_next.
"""

from __future__ import annotations

import pytest
import ray

pytestmark = pytest.mark.integration


@ray.remote(num_cpus=0)
def _address_seen_by_a_nested_task() -> str | None:
    import os

    return os.environ.get("RAY_ADDRESS")


@ray.remote(num_cpus=0)
def _address_seen_two_levels_down() -> str | None:
    return ray.get(_address_seen_by_a_nested_task.remote())


def test_every_worker_names_its_own_cluster_while_another_runs(
    ray_cluster: str, another_ray_instance: str
) -> None:
    assert another_ray_instance != ray_cluster
    assert ray.get(_address_seen_two_levels_down.remote()) == ray_cluster
