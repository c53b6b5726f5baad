"""Ray, started once per process: join RAY_ADDRESS when set, else start a local instance.

Every process reaches its cluster through an explicit address, never by auto-detection: with
two Ray instances on one host, Ray's own lookups (the state API that Train v2's controller and
placement-group cleaner use, `ray.init()` in a subprocess) find "multiple active Ray instances"
or, worse, the wrong one. So the driver exports the address it connected to as RAY_ADDRESS, and
every Ray worker of its job sets RAY_ADDRESS to its own cluster's address when it starts
(`pin_ray_address`, a runtime-env setup hook inherited by all tasks and actors of the job).
"""

from __future__ import annotations

import os
import socket

import ray

from sightline.console import quiet_stage, reroute_library_loggers

# The RAY_ADDRESS this process exported for a local instance it started: once that instance is
# shut down, the next ensure_ray starts a new one instead of joining a dead address.
_exported_local_address: str | None = None


def pin_ray_address() -> None:
    """Runtime-env setup hook, run in every Ray worker process of a Sightline job."""
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def ensure_ray(address: str | None = None) -> str:
    """Connect to Ray if this process is not connected yet; returns the GCS address.

    A local start costs seconds, so every command shares one connection; set RAY_ADDRESS
    (e.g. ray://head:10001 or head:6379) to run the same code on a cluster.
    """
    global _exported_local_address
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None and address == _exported_local_address:
            address = None  # ray.init reads RAY_ADDRESS too: drop the dead one
            os.environ.pop("RAY_ADDRESS", None)
        ray.init(
            address=address,
            runtime_env={"worker_process_setup_hook": f"{__name__}.pin_ray_address"},
            # The dashboard hosts Ray's state API, which Train v2's controller polls.
            dashboard_host="127.0.0.1",
            # In a quiet stage Ray's driver logs go to the stage's log file and its workers'
            # stdout stays in Ray's own log files (sightline.console); otherwise both print.
            configure_logging=not quiet_stage(),
            logging_level="WARNING",
            log_to_driver=not quiet_stage(),
        )
        reroute_library_loggers()
        gcs_address = ray.get_runtime_context().gcs_address
        # A Ray Client address (ray://) stays as given: this host may not reach the GCS.
        os.environ["RAY_ADDRESS"] = address or gcs_address
        _exported_local_address = None if address else gcs_address
    return ray.get_runtime_context().gcs_address


def node_description() -> str:
    """The node this process runs on: `name ip id` (the name is ray start's --node-name)."""
    node_id = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    name = node.get("NodeName") or socket.gethostname()
    return f"{name} {node.get('NodeManagerAddress', '?')} {node_id[:12]}"


def gpus_available() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))
