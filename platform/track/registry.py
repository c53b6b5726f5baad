"""The MLflow model registry: one registered model per task, alias `champion` for the best.

`champion` moves only when a new version beats the current champion on the task's primary
metric (DESIGN.md "Names"); every version carries its family, metrics and lineage as tags.

A logged model holds no pickle: its weights are a safetensors file and its record JSON
(sightline.artifacts), wrapped as an MLflow pyfunc from code (pyfunc_model.py) so MLflow can
serve it; load_version refuses a model directory holding anything that may be a pickle.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from torch import nn

from sightline.artifacts import (
    ModelExtras,
    ModelRecord,
    UnsafeModelFile,
    load_trained,
    refuse_pickles,
    save_trained,
)
from sightline.console import quiet_stage
from sightline.models.registry import family as lookup_family

_log = logging.getLogger(__name__)

CHAMPION = "champion"
# Requirements written into the MLmodel: stated, so MLflow does not spend a minute inferring them.
MODEL_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "safetensors", "sightline"]


class RegistryTarget(Protocol):
    """Where a task group's models are registered and what `champion` is chosen on (each
    sightline.workloads Workload is one)."""

    registered_model: str

    @property
    def champion_metric(self) -> str: ...


@dataclass(frozen=True)
class Promotion:
    registered_model: str
    version: str
    metric: str
    value: float
    previous_version: str | None
    previous_value: float | None
    promoted: bool
    comparable: bool = True

    def describe(self) -> str:
        if self.previous_version is None:
            return (
                f"{self.registered_model} v{self.version} is the first champion "
                f"({self.metric}={self.value:.4f})"
            )
        if not self.comparable:
            return (
                f"{self.registered_model} v{self.version} was scored on other data or classes "
                f"than champion v{self.previous_version}; registered, not compared"
            )
        verdict = "becomes champion" if self.promoted else "does not beat the champion"
        return (
            f"{self.registered_model} v{self.version} ({self.metric}={self.value:.4f}) {verdict} "
            f"v{self.previous_version} ({self.metric}={self.previous_value:.4f})"
        )


@dataclass
class LoadedModel:
    model: nn.Module
    family: str
    version: str
    registered_model: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.get("class_names", []))


def log_model(
    model: nn.Module,
    *,
    family: str,
    num_classes: int,
    model_params: dict[str, Any],
    metadata: dict[str, Any],
) -> str:
    """Log `model` (built by `family`'s builder from `num_classes` and `model_params`) into the
    active run as safetensors weights + a JSON record in a pyfunc; returns its model URI.

    `metadata`: task, class_names, category_ids and the values calibrated after training (γ).
    """
    # Imported here: defining its PythonModel makes MLflow warn about type hints.
    from sightline.track import pyfunc_model

    extras = ModelExtras.model_validate(
        {k: v for k, v in metadata.items() if k not in {"task", "class_names", "category_ids"}}
    )
    record = ModelRecord(
        family=family,
        task=metadata.get("task") or lookup_family(family).task,
        num_classes=num_classes,
        model_params=model_params,
        class_names=list(metadata.get("class_names", [])),
        category_ids=list(metadata.get("category_ids", [])),
        run_id=mlflow.active_run().info.run_id,
        model_uri="",
        tags={},
        extras=extras,
    )
    example = pyfunc_model.example_input(record.task, model)
    training = model.training
    output = pyfunc_model.predict_rows(model.eval(), record.task, example)
    model.train(training)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / pyfunc_model.MODEL_ARTIFACT
        save_trained(directory, model, record)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc_model.__file__,
            artifacts={pyfunc_model.MODEL_ARTIFACT: str(directory)},
            signature=pyfunc_model.signature(example, output),
            input_example=example,
            metadata={"family": family, "task": record.task, **metadata},
            pip_requirements=MODEL_REQUIREMENTS,
        )
    return info.model_uri


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def demote(client: MlflowClient, former: ModelVersion) -> None:
    """The alias is the truth: the former champion version, and the runs it came from (its
    training run, a Tune parent), no longer say `champion: true`."""
    client.set_model_version_tag(former.name, former.version, CHAMPION, "false")
    for key in ("run_id", "tune_parent_run_id"):
        run_id = former.tags.get(key) or (former.run_id if key == "run_id" else None)
        if not run_id:
            continue
        try:
            run = client.get_run(run_id)
        except MlflowException:  # the run was deleted; nothing to correct
            continue
        if run.data.tags.get(CHAMPION) == "true":
            client.set_tag(run_id, CHAMPION, "false")


def register(
    model_uri: str,
    *,
    workload: RegistryTarget,
    family: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    eval_scope: str = "",
) -> Promotion:
    """Register a new version and move `champion` to it only if it is strictly better.

    `eval_scope` names what the metrics were measured on (split and classes): a version scored
    on other data or classes (e.g. a pose model scored on persons only) is registered but never
    compared with, nor promoted over, the champion.
    """
    name, metric = workload.registered_model, workload.champion_metric
    if metric not in metrics:
        raise KeyError(
            f"cannot register {family}: metrics lack {metric!r}, what `champion` is chosen on"
        )
    client = MlflowClient()
    version_tags = {
        "family": family,
        "eval_scope": eval_scope,
        **tags,
        **{f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()},
    }
    # The fluent call prints its progress to stderr ("Registered model ... already exists",
    # "Created version ..."): in a quiet stage, into the stage's log file instead.
    printed = io.StringIO()
    quiet = contextlib.redirect_stderr(printed) if quiet_stage() else contextlib.nullcontext()
    with quiet:
        version = mlflow.register_model(model_uri, name, tags=version_tags)
    for line in printed.getvalue().splitlines():
        _log.info("mlflow: %s", line)
    current = champion_version(client, name)
    previous_value = float(current.tags[f"metric.{metric}"]) if current is not None else None
    # A champion registered before scopes were recorded is taken to share this one.
    comparable = current is None or current.tags.get("eval_scope", eval_scope) == eval_scope
    # Compared as stored in the tags (6 decimals): the same score registered again is a tie.
    value = float(version_tags[f"metric.{metric}"])
    promoted = previous_value is None or (comparable and value > previous_value)
    client.set_model_version_tag(name, version.version, CHAMPION, str(promoted).lower())
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        if current is not None:
            demote(client, current)
    return Promotion(
        registered_model=name,
        version=str(version.version),
        metric=metric,
        value=float(metrics[metric]),
        previous_version=str(current.version) if current is not None else None,
        previous_value=previous_value,
        promoted=promoted,
        comparable=comparable,
    )


def load_version(name: str, alias_or_version: str = CHAMPION) -> LoadedModel:
    """Load registered model `name` by alias (default `champion`) or version number, on CPU."""
    client = MlflowClient()
    if alias_or_version.isdigit():
        version = client.get_model_version(name, alias_or_version)
        uri = f"models:/{name}/{alias_or_version}"
    else:
        version = client.get_model_version_by_alias(name, alias_or_version)
        uri = f"models:/{name}@{alias_or_version}"
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        try:
            model, record = load_model_dir(local)
        except UnsafeModelFile as exc:
            raise UnsafeModelFile(f"{name} v{version.version}: {exc}") from None
    return LoadedModel(
        model=model,
        family=version.tags.get("family", record.family),
        version=str(version.version),
        registered_model=name,
        metadata={
            "task": record.task,
            "class_names": record.class_names,
            "category_ids": record.category_ids,
            **record.extras.metadata(),
        },
    )


def load_model_dir(directory: Path) -> tuple[nn.Module, ModelRecord]:
    """A downloaded MLflow model directory -> the rebuilt module and its record, reading only
    plain files (the MLmodel YAML, the record JSON, the safetensors weights)."""
    # Imported here: defining its PythonModel makes MLflow warn about type hints.
    from sightline.track import pyfunc_model

    refuse_pickles(directory)
    mlmodel = yaml.safe_load((directory / "MLmodel").read_text())
    artifacts = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts", {})
    if pyfunc_model.MODEL_ARTIFACT not in artifacts:
        raise UnsafeModelFile(
            f"{directory} is not a Sightline model (no {pyfunc_model.MODEL_ARTIFACT!r} artifact: "
            "logged before weights were stored as safetensors?); register it again"
        )
    model_files = (directory / artifacts[pyfunc_model.MODEL_ARTIFACT]["path"]).resolve()
    if not model_files.is_relative_to(directory.resolve()):
        raise UnsafeModelFile(f"{directory}: the model artifact points outside the model")
    return load_trained(model_files)
