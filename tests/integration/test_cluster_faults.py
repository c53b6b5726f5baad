"""Faults on a real cluster: a worker node dies mid-training (its whole raylet, not the driver),
a replacement node joins, and training resumes from the last checkpoint in the same MLflow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sightline.config import load_settings
from sightline.data.synth.detection import generate
from tests.integration.cluster import LocalCluster
from tests.integration.test_cluster_training import cluster_train_params
from tests.integration.tiny import tiny_params, write_params

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
EPOCHS = 5


def latest_run(client: MlflowClient, experiment: str, after_ms: int):
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], f"attributes.start_time > {after_ms}", max_results=1
    )
    return runs[0] if runs else None


def checkpoint_registered(storage: Path, family: str, run_id: str) -> bool:
    """Whether Ray Train's controller has taken a checkpoint of this run into its books (its
    snapshot in the run's storage folder names one). A checkpoint a worker reported but the
    controller has not yet polled is lost with the worker: a restart would begin at epoch 0."""
    snapshot = storage / f"{family}-{run_id[:8]}" / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return False


def test_worker_node_killed_mid_training_resumes_on_a_replacement(
    tmp_path: Path,
    local_cluster: LocalCluster,
) -> None:
    cluster = local_cluster
    params = tiny_params(epochs=EPOCHS, max_failures=2, **cluster_train_params(cluster))
    path = write_params(tmp_path, params)
    settings = load_settings(path)
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    client = MlflowClient(cluster.mlflow_uri)
    started_ms = int(time.time() * 1000)
    log = (tmp_path / "train.log").open("w")
    train = subprocess.Popen(
        [sys.executable, "-m", "sightline.pipelines.train", "--family", "faster_rcnn",
         "--params", str(path)],
        env={**os.environ, **cluster.env}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Two epochs logged and a checkpoint registered, then worker2's raylet and workers die.
        run = None
        while train.poll() is None:
            run = latest_run(client, "sightline-detection", started_ms)
            if (
                run
                and len(client.get_metric_history(run.info.run_id, "loss")) >= 2
                and checkpoint_registered(cluster.storage, "faster_rcnn", run.info.run_id)
            ):
                break
            time.sleep(1)
        assert run is not None and train.poll() is None, "training ended before the kill"
        before = client.get_run(run.info.run_id).data.tags
        last_epoch_before = max(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
        cluster.stop("worker2", signal.SIGKILL)
        cluster.add_worker("worker2")  # the replacement node (a new raylet, a new node id)
        train.wait(timeout=1200)
    finally:
        if train.poll() is None:
            train.kill()
        log.close()
    assert train.returncode == 0, (tmp_path / "train.log").read_text()[-6000:]

    after = client.get_run(run.info.run_id).data
    resumed_from = int(after.tags["resumed_from_epoch"])
    node_ids_before = {before["rank0_node"].split()[2], before["rank1_node"].split()[2]}
    node_ids_after = {after.tags["rank0_node"].split()[2], after.tags["rank1_node"].split()[2]}
    assert node_ids_after - node_ids_before, "a rank ran on the replacement node"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert set(steps) == set(range(EPOCHS)), "every epoch's metrics, in the same run"
    redone = len(steps) - len(set(steps))  # epochs logged before the failure and again after
    print(
        f"killed after epoch {last_epoch_before} was logged; resumed from the checkpoint of "
        f"epoch {resumed_from}; epochs redone: {redone}; loss steps logged: {steps}"
    )


def test_mlflow_server_down_mid_training_loses_no_metrics(
    tmp_path: Path,
    local_cluster: LocalCluster,
) -> None:
    """The tracking server stops after the first epoch and comes back on the same port: MLflow's
    client retries with backoff, so training goes on and every epoch's metrics arrive."""
    cluster = local_cluster
    params = tiny_params(epochs=4, **cluster_train_params(cluster))
    path = write_params(tmp_path, params)
    settings = load_settings(path)
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    client = MlflowClient(cluster.mlflow_uri)
    port = int(cluster.mlflow_uri.rsplit(":", 1)[1])
    started_ms = int(time.time() * 1000)
    log = (tmp_path / "train.log").open("w")
    train = subprocess.Popen(
        [sys.executable, "-m", "sightline.pipelines.train", "--family", "faster_rcnn",
         "--params", str(path)],
        env={**os.environ, **cluster.env}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        run = None
        while train.poll() is None:
            run = latest_run(client, "sightline-detection", started_ms)
            if run and client.get_metric_history(run.info.run_id, "loss"):
                break
            time.sleep(1)
        assert run is not None and train.poll() is None, "training ended before the outage"
        down_at = time.monotonic()
        cluster.stop("mlflow")
        time.sleep(5)
        cluster.start_mlflow(port=port)
        outage_s = time.monotonic() - down_at
        train.wait(timeout=1200)
    finally:
        if train.poll() is None:
            train.kill()
        log.close()
    assert train.returncode == 0, (tmp_path / "train.log").read_text()[-6000:]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == [0, 1, 2, 3], steps
    print(f"MLflow server down {outage_s:.0f} s mid-run; loss steps logged: {steps}")
