"""Ray, started once per process: join RAY_ADDRESS when set, else start a local instance."""

from __future__ import annotations

import os

import ray

from sightline.console import quiet_stage, reroute_library_loggers


def ensure_ray(address: str | None = None) -> str:
    """Connect to Ray if this process is not connected yet; returns the GCS address.

    A local start costs seconds, so every command shares one connection; set RAY_ADDRESS
    (e.g. ray://head:10001 or head:6379) to run the same code on a cluster.
    """
    if not ray.is_initialized():
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or None,
            # The dashboard hosts Ray's state API, which Train v2's controller polls.
            dashboard_host="127.0.0.1",
            # In a quiet stage Ray's driver logs go to the stage's log file and its workers'
            # stdout stays in Ray's own log files (sightline.console); otherwise both print.
            configure_logging=not quiet_stage(),
            logging_level="WARNING",
            log_to_driver=not quiet_stage(),
        )
        reroute_library_loggers()
    return ray.get_runtime_context().gcs_address


def gpus_available() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))
