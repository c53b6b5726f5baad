"""MLflow runs: one run per trained model, named after the family, in its task group's
experiment (the name comes from the group's workload, sightline.workloads)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset import Dataset
from mlflow.entities import Run

# MLflow 3's UI opens an experiment of this kind on its runs table, not on GenAI traces.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Every run's `kind` tag: training runs (one per model), tune parents and trials, benchmarks;
# in the MLflow UI `tags.kind = 'training'` shows the trained models only.
RUN_KIND = "kind"
TRAINING = "training"


def use_tracking(uri: str) -> None:
    mlflow.set_tracking_uri(uri)


def ui_path(experiment: str) -> str:
    """The MLflow UI's page of an experiment's runs (after the UI's base URL). MLflow 3.17's
    UI keeps a per-browser GenAI / Model training switch (GenAI until a user flips it) that
    outranks the experiment kind; the link names the model-training view explicitly."""
    return f"#/experiments/{experiment}/runs?workflowType=machine_learning"


def experiment_id(name: str, artifact_root: Path | None = None) -> str:
    """The id of experiment `name` (a task group's), created on first use.

    With a local SQLite store, artifacts go under `artifact_root` (mlartifacts/ at the repo
    root); with a tracking server the server decides where artifacts live.
    """
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        for key, value in EXPERIMENT_KIND.items():
            if existing.tags.get(key) != value:  # a store made before the kind was set
                mlflow.MlflowClient().set_experiment_tag(existing.experiment_id, key, value)
        return existing.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root is not None else None
    return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def start_training_run(
    family_name: str,
    *,
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    dataset: Dataset | None = None,
    artifact_root: Path | None = None,
) -> str:
    """Create the run a training job logs into and return its id (the job may resume it);
    `dataset` is logged as its training input (the runs table's Dataset column)."""
    exp = experiment_id(experiment, artifact_root)
    run_tags = {RUN_KIND: TRAINING, **tags}
    with mlflow.start_run(experiment_id=exp, run_name=family_name, tags=run_tags) as run:
        mlflow.log_params(flatten(params))
        if dataset is not None:
            mlflow.log_input(dataset, context="training")
        return run.info.run_id


@contextmanager
def resume_run(run_id: str) -> Iterator[Run]:
    """Continue an existing run (after a worker restart, or in a later pipeline stage)."""
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite numeric metrics; NaN/inf (e.g. COCO's -1 'absent' markers are kept) skipped."""
    finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    mlflow.log_metrics(finite, step=step)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> dotted keys with string values (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def local_artifact_root(tracking_uri: str, default: Path) -> Path | None:
    """Artifacts beside a local store go to `default`; a tracking server chooses its own."""
    return (
        default
        if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
        else None
    )
