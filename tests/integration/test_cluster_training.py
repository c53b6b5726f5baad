"""Training across nodes of a real cluster: Ray head + 2 worker nodes (one raylet each, one CPU
each, so the 2 DDP ranks must land on different nodes), MLflow tracking server on PostgreSQL,
checkpoints in storage every node reads. The stages run as separate processes and reach the
cluster through RAY_ADDRESS and MLFLOW_TRACKING_URI alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from sightline.config import load_settings
from sightline.data.synth.detection import generate
from tests.integration import test_identification
from tests.integration.cluster import LocalCluster
from tests.integration.tiny import tiny_params, write_params

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def run_stages(cluster: LocalCluster, params: Path, family: str, stages: list[str]) -> None:
    env = {**os.environ, **cluster.env}
    for stage in stages:
        args = ["--family", family, "--params", str(params)]
        if stage == "validate":
            group = "detection" if family == "faster_rcnn" else "identification"
            args = ["--group", group, "--params", str(params)]
        command = [sys.executable, "-m", f"sightline.pipelines.{stage}", *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (
            f"{stage} {family}:\n{done.stdout[-3000:]}{done.stderr[-5000:]}"
        )


def assert_ranks_on_two_worker_nodes(cluster: LocalCluster, experiment: str, model: str) -> None:
    client = MlflowClient(cluster.mlflow_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    [run] = client.search_runs([experiment_id], order_by=["start_time DESC"], max_results=1)
    nodes = {run.data.tags["rank0_node"].split()[0], run.data.tags["rank1_node"].split()[0]}
    assert nodes == {"worker1", "worker2"}, run.data.tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    versions = client.search_model_versions(f"name = '{model}'")
    assert run.info.run_id in {v.run_id for v in versions}
    # Served by the tracking server (mlflow-artifacts:), stored under its artifacts destination.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert any((cluster.root / "mlflow-artifacts").rglob("*.safetensors")) or any(
        (cluster.root / "mlflow-artifacts").rglob("*.pt")
    )


def cluster_train_params(cluster: LocalCluster) -> dict:
    return {"num_workers": 2, "threads_per_worker": 1, "storage_path": str(cluster.storage)}


def test_detector_trains_on_two_nodes(tmp_path: Path, local_cluster: LocalCluster) -> None:
    params = tiny_params(epochs=2, **cluster_train_params(local_cluster))
    path = write_params(tmp_path, params)
    settings = load_settings(path)
    generate(settings.path(settings.detection_data.root), settings.synth.detection)

    run_stages(local_cluster, path, "faster_rcnn", ["train", "evaluate", "register"])

    assert_ranks_on_two_worker_nodes(local_cluster, "sightline-detection", "sightline-detector")
    assert any(local_cluster.storage.rglob("checkpoint_*")), "checkpoints in the shared storage"


def test_embedder_trains_on_two_nodes(tmp_path: Path, local_cluster: LocalCluster) -> None:
    data = tmp_path / "faces"
    test_identification.write_folder_dataset(data)
    path = test_identification.write_project(tmp_path, data, port=0)
    params = yaml.safe_load(path.read_text())
    params["identification"]["train"].update(cluster_train_params(local_cluster))
    path.write_text(yaml.safe_dump(params, sort_keys=False))

    run_stages(local_cluster, path, "triplet", ["train", "evaluate", "register"])

    assert_ranks_on_two_worker_nodes(
        local_cluster, "sightline-identification", "sightline-embedder"
    )
