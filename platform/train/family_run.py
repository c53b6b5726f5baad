"""One tracked training of one family: lineage tags, Ray Train (or nothing to learn), the
after-training step of its task group (R-CNN's SVMs, γ calibration), the model logged to MLflow.

Used by the `train` stage (one run per family) and by Tune (one child run per trial).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from torch import nn

from sightline.artifacts import ModelRecord
from sightline.config import Settings
from sightline.models import build_model
from sightline.models.registry import family as lookup_family
from sightline.track.lineage import DvcDataset, dvc_data_hash, git_commit
from sightline.track.registry import log_model
from sightline.track.runs import resume_run
from sightline.train.job import TrainingData, job_for
from sightline.train.launcher import fit
from sightline.train.selection import VALIDATION_PREFIX
from sightline.train.tasks import TaskGroup

console = Console(stderr=True)


def _say_which_epoch(family: str, metric: str | None, last: dict[str, Any]) -> None:
    if metric is None or last.get("selected_epoch", -1) < 0:
        return  # no choice made, or no epoch scored (validation_delay >= epochs): the last
    name = VALIDATION_PREFIX + metric
    kept, ended = int(last["selected_epoch"]) + 1, int(last["epoch"]) + 1
    stopped = f", stopped early after epoch {ended}" if last.get("stopped_early") else ""
    score = last.get(f"selected_{name}", float("nan"))
    console.print(f"{family}: kept epoch {kept} ({name} {score:.3f}){stopped}", highlight=False)


@dataclass
class TrainedFamily:
    model: nn.Module
    record: ModelRecord
    last_metrics: dict[str, Any]


def lineage_tags(settings: Settings, data: TrainingData) -> dict[str, str]:
    return {
        "git_commit": git_commit(settings.project_root),
        "dvc_data_hash": dvc_data_hash(settings.project_root, data.data_root),
        "profile": settings.profile,
    }


def training_dataset(settings: Settings, data: TrainingData, tags: dict[str, str]) -> DvcDataset:
    """The run's MLflow dataset input: the data folder, named relative to the project, with
    the DVC hash of `lineage_tags` as its digest."""
    root = data.data_root.resolve()
    project = settings.project_root.resolve()
    name = str(root.relative_to(project)) if root.is_relative_to(project) else root.name
    return DvcDataset(
        name=name,
        data_root=root,
        dvc_hash=tags["dvc_data_hash"],
        columns=data.record_schema,
        split_sizes=data.split_sizes,
    )


def run_params(settings: Settings, family: str, data: TrainingData) -> dict[str, Any]:
    """What a training run logs as MLflow params."""
    return {
        "family": family,
        "model": data.model_params,
        "train": data.train.model_dump(mode="json"),
        "data": data.data.model_dump(mode="json"),
        "task_options": data.task_options.model_dump(mode="json"),
        "seed": settings.seed,
    }


def training_record(
    family: str, data: TrainingData, run_id: str, tags: dict[str, str] | None = None
) -> ModelRecord:
    """The record of `family` trained on `data` in MLflow run `run_id`, before its model is
    logged (no model URI yet)."""
    return ModelRecord(
        family=family,
        task=lookup_family(family).task,
        num_classes=data.num_classes,
        model_params=data.model_params,
        class_names=data.class_names,
        category_ids=data.category_ids,
        run_id=run_id,
        model_uri="",
        tags=tags or {},
    )


def train_and_log(
    settings: Settings,
    group: TaskGroup,
    family: str,
    data: TrainingData,
    run_id: str,
    *,
    tags: dict[str, str],
    validate_each_epoch: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainedFamily:
    """Train `family` of task group `group` into the existing MLflow run `run_id`, run the
    group's after-training step and log the model there."""
    fam = lookup_family(family)
    last: dict[str, Any] = {}
    if fam.trainable:
        job = job_for(
            settings,
            data,
            family=family,
            run_id=run_id,
            validate_each_epoch=validate_each_epoch,
            selection_metric=group.primary_metric,
        )
        outcome = fit(job, group, ray_address=settings.ray_address, callbacks=callbacks)
        model, last = outcome.model, outcome.metrics
        _say_which_epoch(family, job.selection_metric, last)
    else:
        console.print(f"[bold]{family}[/]: nothing to learn; built as is")
        torch.manual_seed(settings.seed)
        model = build_model(family, data.num_classes, **data.model_params).eval()
    record = training_record(family, data, run_id, tags)
    record.extras = group.after_training(settings, model, record)
    metadata = {
        "task": fam.task,
        "class_names": data.class_names,
        "category_ids": data.category_ids,
        **record.extras.metadata(),
    }
    with resume_run(run_id):
        record.model_uri = log_model(
            model,
            family=family,
            num_classes=data.num_classes,
            model_params=data.model_params,
            metadata=metadata,
        )
    return TrainedFamily(model=model, record=record, last_metrics=last)
