"""What the MLflow UI shows first: experiments of the training kind, training runs with their
dataset input and `kind` tag, and a `champion` tag that follows the alias (real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from sightline.track.lineage import DvcDataset
from sightline.track.registry import CHAMPION, register
from sightline.track.runs import EXPERIMENT_KIND, experiment_id, start_training_run
from sightline.workloads import workload_for


def _dataset(root: Path) -> DvcDataset:
    return DvcDataset(
        name="data/detection",
        data_root=root,
        dvc_hash="0123456789abcdef0123456789abcdef.dir",
        columns={"image": "string", "boxes": "string"},
        split_sizes={"train_images": 12},
    )


def _model_uri() -> str:
    """A tiny registrable model (the registry only needs a model URI)."""

    def predict(model_input: list[str]) -> list[str]:
        return model_input

    info = mlflow.pyfunc.log_model(name="model", python_model=predict, pip_requirements=[])
    return info.model_uri


def test_training_runs_carry_kind_and_dataset_input(mlflow_store: str, tmp_path: Path) -> None:
    run_id = start_training_run(
        "ssd",
        experiment="sightline-detection",
        params={"lr": 0.1},
        tags={"dvc_data_hash": "abc"},
        dataset=_dataset(tmp_path),
    )
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["kind"] == "training"
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "data/detection"
    assert dataset.digest == "0123456789abcdef0123456789abcdef.dir"
    assert json.loads(dataset.source) == {"uri": tmp_path.resolve().as_uri()}
    assert json.loads(dataset.profile) == {"split_sizes": {"train_images": 12}}
    columns = json.loads(dataset.schema)["mlflow_colspec"]
    assert [c["name"] for c in columns] == ["image", "boxes"]
    assert [t.value for t in dataset_input.tags] == ["training"]


def test_experiments_are_model_training_experiments_even_when_made_before(
    mlflow_store: str,
) -> None:
    (key, kind), = EXPERIMENT_KIND.items()  # fmt: skip
    fresh = MlflowClient().get_experiment(experiment_id("sightline-detection"))
    assert fresh.tags[key] == kind
    older = mlflow.create_experiment("sightline-otdr")  # a store from before the kind tag
    assert experiment_id("sightline-otdr") == older
    assert MlflowClient().get_experiment(older).tags[key] == kind


def test_champion_tag_follows_the_alias_on_versions_and_runs(mlflow_store: str) -> None:
    client = MlflowClient()
    versions = []
    for value in (0.3, 0.2, 0.5):
        with mlflow.start_run() as run:
            uri = _model_uri()
        promotion = register(
            uri,
            workload=workload_for("detection"),
            family="ssd",
            metrics={"map": value},
            tags={"run_id": run.info.run_id},
        )
        # what the register stage does: the run says whether its model became champion
        client.set_tag(run.info.run_id, CHAMPION, str(promotion.promoted).lower())
        versions.append((promotion.version, run.info.run_id))

    def tag_of_version(number: str) -> str:
        return client.get_model_version("sightline-detector", number).tags[CHAMPION]

    def tag_of_run(run_id: str) -> str:
        return client.get_run(run_id).data.tags[CHAMPION]

    assert str(client.get_model_version_by_alias("sightline-detector", CHAMPION).version) == "3"
    assert [tag_of_version(number) for number, _ in versions] == ["false", "false", "true"]
    assert [tag_of_run(run_id) for _, run_id in versions] == ["false", "false", "true"]
