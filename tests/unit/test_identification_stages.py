"""The shared train / evaluate / register stages on the identification group, without Ray:
pixel_template has nothing to learn, so its train stage only builds it and calibrates γ. γ is
stored with the model (model.json extras and the MLflow model metadata) and the registry
compares versions on dir_at_far_1e-2 within one evaluation scope."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from sightline.data.synth.identity import SynthIdentity, generate
from sightline.pipelines import evaluate, register, train


@pytest.fixture
def project(tmp_path: Path, mlflow_store: str) -> Path:
    generate(tmp_path / "faces", SynthIdentity(identities=20, images_per_identity=7,
                                               image_size=32, seed=1))  # fmt: skip
    params = {
        "identity_data": {"root": "faces", "image_size": 32, "channels": 1},
        "identification": {"families": ["pixel_template"], "target_far": 0.05},
        "models": {"pixel_template": {}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_gamma_is_stored_with_the_model_and_the_champion_is_chosen_on_dir(project: Path) -> None:
    args = ["--family", "pixel_template", "--params", str(project / "params.yaml")]
    assert train.main(args) == 0
    record = json.loads((project / "artifacts/models/pixel_template/model.json").read_text())
    extras = record["extras"]
    assert record["task"] == "embed" and record["class_names"] == []
    assert record["model_params"] == {"image_size": 32, "channels": 1}  # from identity_data
    assert extras["target_far"] == 0.05 and extras["rule"] == "mean"
    assert 0 < extras["gamma"] < 2
    metadata = mlflow.models.get_model_info(record["model_uri"]).metadata
    assert metadata["gamma"] == extras["gamma"] and metadata["task"] == "embed"

    assert evaluate.main(args) == 0
    metrics = json.loads((project / "metrics/pixel_template.json").read_text())
    for name in (
        "roc_auc",
        "eer",
        "tar_at_far_1e-2",
        "tar_at_far_1e-3",
        "top1",
        "top1_k1",
        "top1_k5",
        "dir_at_far_1e-2",
        "val_top1",
        "val_dir_at_far_1e-2",
        "untrained_top1",
        "untrained_dir_at_far_1e-2",
    ):
        assert 0.0 <= metrics[name] <= 1.0, name  # fmt: skip
    run = MlflowClient().get_run(record["run_id"])
    assert run.info.run_name == "pixel_template"
    assert run.data.metrics["top1"] == metrics["top1"]
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == "sightline-identification"
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {
        f"evaluation/{n}.png" for n in ("roc", "det", "distances", "embeddings_2d")
    } <= artifacts

    assert register.main(args) == 0
    champion = MlflowClient().get_model_version_by_alias("sightline-embedder", "champion")
    assert champion.tags["family"] == "pixel_template"
    for name in ("dir_at_far_1e-2", "val_dir_at_far_1e-2"):  # the test people's, the val people's
        assert float(champion.tags[f"metric.{name}"]) == pytest.approx(metrics[name], abs=1e-6)
    # Chosen on the validation people (as the best epoch is), never on the test people.
    assert champion.tags["eval_scope"].startswith("val-identities:")
