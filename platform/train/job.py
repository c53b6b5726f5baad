"""What one training needs: `TrainingData` (what a task group says about a family's data before
it is built) and `TrainJob`, the record sent to every Ray Train worker (pickled by Ray with the
rest of the loop's config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, SerializeAsAny

from sightline.artifacts import proposals_path
from sightline.config import Settings, Train
from sightline.data.sources import DataSection
from sightline.models.registry import Task
from sightline.models.registry import family as lookup_family


class TaskOptions(BaseModel):
    """A task group's options for its training workers beyond `train` (none by default; the
    identification group's P x K batches subclass it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def expect(value: BaseModel, kind: type[OptionsT], what: str) -> OptionsT:
    """`value` as the type a task's adapter reads it as; a job built for another task is named."""
    if not isinstance(value, kind):
        raise TypeError(f"{what} is a {type(value).__name__}, this task reads a {kind.__name__}")
    return value


@dataclass
class TrainingData:
    """What a family needs to know about its training data before it is built."""

    num_classes: int  # including background / "no event" where the task has one
    class_names: list[str]
    category_ids: list[int]
    data_root: Path  # the dataset folder whose DVC hash tags the run (lineage)
    # Per-family hyper-parameters with data-derived values filled in (e.g. YOLO's anchors).
    model_params: dict[str, Any]
    data: DataSection  # the group's dataset section (detection_data, otdr_data, identity_data)
    train: Train  # `train` with the group's and the family's overrides on top
    task_options: TaskOptions = field(default_factory=TaskOptions)
    # What the run's MLflow dataset input shows: one training record's fields (MLflow type
    # names) and the number of records (images, traces, people) per split.
    record_schema: dict[str, str] = field(default_factory=dict)
    split_sizes: dict[str, int] = field(default_factory=dict)


class TrainJob(BaseModel):
    family: str
    task: Task
    num_classes: int
    model_params: dict[str, Any]
    # The task group's data section; the task's adapter reads it as its own type.
    data: SerializeAsAny[DataSection]
    task_options: SerializeAsAny[TaskOptions] = TaskOptions()
    project_root: Path
    train: Train
    seed: int
    run_id: str
    tracking_uri: str
    # Where the failure-injection marker lives (shared by all attempts of this job).
    marker_dir: str
    # Precomputed selective-search proposals of the train split (proposal-based families).
    proposals_path: str | None = None
    # One step of a multi-step schedule (registry `steps`): the weights it starts from, and
    # where its epochs start in the run's metric history.
    init_state: str | None = None
    epoch_offset: int = 0
    # The settings to score the model on the validation data after every epoch with its task
    # group's evaluator (Tune's early stopping reads it); None: no validation.
    validation_settings: Settings | None = None
    # The validation metric that picks the epoch kept and stops early (`train.keep_epoch`
    # best, sightline.train.selection); None: the last epoch is kept.
    selection_metric: str | None = None
    # The first epoch scored on validation (`train.validation_delay`; 0 for Tune's trials).
    validation_from_epoch: int = 0


def job_for(
    settings: Settings,
    data: TrainingData,
    *,
    family: str,
    run_id: str,
    validate_each_epoch: bool = False,
    selection_metric: str | None = None,
) -> TrainJob:
    """The job `family` trains as, from its group's `TrainingData` (model params with the
    data-derived values, the data section, the merged `train` block) and params.yaml. With
    `train.keep_epoch` best, `selection_metric` (the group's primary metric) picks the epoch."""
    registered = lookup_family(family)
    if data.train.keep_epoch == "last":
        selection_metric = None
    validating = validate_each_epoch or selection_metric is not None
    return TrainJob(
        family=family,
        task=registered.task,
        num_classes=data.num_classes,
        model_params=data.model_params,
        data=data.data,
        task_options=data.task_options,
        project_root=settings.project_root,
        train=data.train,
        seed=settings.seed,
        run_id=run_id,
        tracking_uri=settings.tracking_uri,
        marker_dir=str(settings.path("artifacts/ray_results") / f"markers-{run_id}"),
        proposals_path=str(proposals_path(settings, "train"))
        if registered.uses_proposals
        else None,
        validation_settings=settings if validating else None,
        selection_metric=selection_metric,
        validation_from_epoch=0 if validate_each_epoch else data.train.validation_delay,
    )
