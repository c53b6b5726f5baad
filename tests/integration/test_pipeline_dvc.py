"""The spine end to end through real DVC: validate -> train -> evaluate -> register, a no-op
second `dvc repro`, and a broken dataset that stops the pipeline without losing anything."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from sightline.config import load_settings
from sightline.data.synth.detection import generate
from sightline.evaluate.coco import SUMMARY_NAMES
from tests.integration.dvc_project import (
    BIN_DIR,
    copy_project_code,
    init_repo,
    project_env,
    run_command,
)
from tests.integration.tiny import tiny_params, write_params

# The detection chain's last stage: `dvc repro` of it runs validate ... register@faster_rcnn.
DETECTION_CHAIN = "bench_detectors"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str):
    root = tmp_path_factory.mktemp("project")
    copy_project_code(root)
    settings = load_settings(write_params(root, tiny_params(num_workers=1)))
    generate(settings.path(settings.detection_data.root), settings.synth.detection)
    env = project_env(root, ray_cluster)
    init_repo(root, env)
    return root, env, BIN_DIR


def test_repro_trains_evaluates_registers_then_is_a_no_op(project) -> None:
    root, env, bin_dir = project
    first = run_command([f"{bin_dir}/dvc", "repro", DETECTION_CHAIN], root, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # A quiet console: the log file's path and one line per epoch, none of Ray's chatter.
    console = first.stdout + first.stderr
    assert "TrainingReport" not in console and "RayTrainWorker" not in console
    assert "logs: logs/train-faster_rcnn.log" in console
    assert "faster_rcnn epoch 1/2: loss" in console and "faster_rcnn epoch 2/2: loss" in console
    assert (root / "logs" / "train-faster_rcnn.log").is_file()

    metrics = json.loads((root / "metrics" / "faster_rcnn.json").read_text())
    assert set(SUMMARY_NAMES) <= set(metrics)
    proposals = json.loads((root / "metrics" / "proposals.json").read_text())
    assert 0 < proposals["val_recall_50"] <= 1 and proposals["val_proposals_per_image"] > 0
    bench = (root / "docs" / "benchmarks" / "detectors.md").read_text()
    assert "| faster_rcnn | detect |" in bench and "not measured" in bench
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sightline-detection")
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'faster_rcnn'")
    (bench_run,) = client.search_runs([experiment.experiment_id], "tags.kind = 'benchmark'")
    assert "faster_rcnn.map" in bench_run.data.metrics
    assert run.info.run_name == "faster_rcnn"
    data_md5 = (root / "data.dvc").read_text().split("md5: ")[1].split()[0]
    assert run.data.tags["dvc_data_hash"] == data_md5
    assert run.data.tags["git_commit"] != "unknown"
    assert {"map", "map_50", "mar_100", "loss"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/precision_recall.png", "evaluation/val_predictions.png"} <= artifacts
    champion = client.get_model_version_by_alias("sightline-detector", "champion")
    assert champion.tags["family"] == "faster_rcnn" and champion.run_id == run.info.run_id

    second = run_command([f"{bin_dir}/dvc", "repro", DETECTION_CHAIN], root, env)
    assert second.returncode == 0, second.stderr
    assert "Data and pipelines are up to date" in second.stdout
    assert len(client.search_runs([experiment.experiment_id])) == 2, "no new run on a no-op"


def test_a_broken_dataset_stops_at_validate_and_loses_nothing(project) -> None:
    root, env, bin_dir = project
    metrics_before = (root / "metrics" / "faster_rcnn.json").read_text()
    annotations = root / "data" / "detection" / "annotations" / "train.json"
    coco = json.loads(annotations.read_text())
    coco["annotations"][0]["bbox"][2] = 0  # zero-width box
    annotations.write_text(json.dumps(coco))

    broken = run_command([f"{bin_dir}/dvc", "repro", DETECTION_CHAIN], root, env)
    assert broken.returncode != 0
    output = broken.stdout + broken.stderr
    assert "validate" in output and "failed" in output.lower()
    assert str(coco["annotations"][0]["id"]) in output, "the report names the offending record"
    assert (root / "metrics" / "faster_rcnn.json").read_text() == metrics_before
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("sightline-detector", "champion").version in (1, "1")
