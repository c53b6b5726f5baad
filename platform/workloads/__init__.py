"""The task groups (detection, otdr, identification), each described once.

A `Workload` is everything the platform knows about one group: its name (also its params.yaml
section: families, `train` overrides), the tasks it covers, its dataset section, reader and
validator, the train adapter of each task, the MLflow experiment, the registered model and the
metric its `champion` is chosen on, the metrics `sightline summary` shows, the evaluation, the
step after training (R-CNN's SVMs, γ calibration) and what a registered version is tagged with
and compared within. The stages in pipelines/, the CLI, Tune, the registry and the server ask
`workload_for(group)`, `workload_for_task(task)` or `workload_of_family(family)`; no other
module keeps a table keyed by group. Training (sightline.train) sees a workload only through
its `TaskGroup` protocol: workloads use train, never the reverse.

Adding a group is one new module in this package that defines a `Workload` subclass and
exposes its instance as `WORKLOAD` (`all_workloads()` finds every module here that does), plus
what it is made of: its model families in models/ (one registry line each, with the new task
name), its params.yaml sections (a `FamilyGroup` field named after the group and a data
section on `Settings`) and, if it has any, stages of its own in pipelines/ and dvc.yaml.
The names it declares are checked when the groups are listed: two groups may not share a name,
a task, an experiment or a registered model.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sightline.artifacts import ModelExtras
from sightline.config import FamilyGroup, Settings, Train
from sightline.data.sources import DataSection
from sightline.models.registry import Task
from sightline.models.registry import family as lookup_family
from sightline.train.tasks import TaskAdapter

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from sightline.artifacts import ModelRecord
    from sightline.train.job import TrainingData
    from sightline.validate.report import ValidationReport


@dataclass
class Evaluation:
    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)
    # Extra files for MLflow (name -> JSON-serialisable payload).
    tables: dict[str, Any] = field(default_factory=dict)


class UnknownGroupError(KeyError):
    """A command or request named a task group (or task) no workload describes."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class Workload(ABC):
    """One task group; subclasses set the names below and implement the abstract methods."""

    name: str  # also its params.yaml section (families, train, family_train)
    tasks: tuple[Task, ...]  # the model registry's tasks this group trains
    data_section: str  # the Settings field of its dataset (e.g. "detection_data")
    synth_kind: str | None = None  # `sightline data synth --kind` (sightline.data.synth.<kind>)
    experiment: str  # MLflow experiment of its runs
    registered_model: str  # MLflow registered model; `champion` is its best version
    primary_metric: str  # what `champion` is chosen on (higher is better)
    # Also reported for the same network untrained (as `untrained_<name>`).
    headline_metrics: tuple[str, ...]
    summary_metrics: tuple[str, ...]  # the rows of `sightline summary`
    # Stage kind -> the params.yaml keys that stage reads for this group (dvc.yaml `params`).
    stage_params: Mapping[str, tuple[str, ...]] = {}
    train_adapters: Mapping[str, TaskAdapter[Any]]  # task -> how the training loop reads it

    # -- what every group answers the same way, from the names above ---------------------------

    def data(self, settings: Settings) -> DataSection:
        return getattr(settings, self.data_section)

    def section(self, settings: Settings) -> FamilyGroup:
        return settings.group(self.name)

    def families(self, settings: Settings) -> list[str]:
        return list(self.section(settings).families)

    def train_block(self, settings: Settings, family: str) -> Train:
        return settings.train_for(self.name, family)

    def data_root(self, settings: Settings) -> Path:
        return settings.path(self.data(settings).root)

    def train_adapter(self, task: str) -> TaskAdapter[Any]:
        try:
            return self.train_adapters[task]
        except KeyError:
            raise UnknownGroupError(
                f"the {self.name} group has no training adapter for task {task!r}; "
                f"it trains {sorted(self.train_adapters)}"
            ) from None

    def after_training(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> ModelExtras:
        """Values stored with the model (model.json `extras`, MLflow metadata), e.g. γ."""
        return ModelExtras()

    def validation_scores(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> dict[str, float]:
        """The model scored on the group's validation data, after every epoch of a training
        (the recipe's best epoch, Tune's early stopping): the evaluation on the `val` split,
        whatever `evaluate.split` says (choosing on the test split would leak it)."""
        on_val = settings.model_copy(
            update={"evaluate": settings.evaluate.model_copy(update={"split": "val"})}
        )
        evaluation = self.evaluate(on_val, model, record, with_figures=False)
        return {k: float(v) for k, v in evaluation.metrics.items() if isinstance(v, int | float)}

    @property
    def champion_metric(self) -> str:
        """What the registry's `champion` is chosen on: the primary metric as the evaluate stage
        reports it (detection and OTDR: on `evaluate.split`, the validation split by default)."""
        return self.primary_metric

    def eval_scope(self, settings: Settings, record: ModelRecord) -> str:
        """What the metrics were measured on: versions are compared only within one scope."""
        return f"{settings.evaluate.split}:{','.join(record.class_names)}"

    # -- what each group does its own way -------------------------------------------------------

    @abstractmethod
    def validate(self, settings: Settings) -> ValidationReport:
        """Great Expectations over the group's dataset (the `validate` stage)."""

    @abstractmethod
    def training_data(self, settings: Settings, family: str) -> TrainingData: ...

    @abstractmethod
    def evaluate(
        self,
        settings: Settings,
        model: nn.Module,
        record: ModelRecord,
        *,
        with_figures: bool,
        first: int | None = None,
    ) -> Evaluation:
        """The metrics (and figures) on `evaluate.split`; `first`: only its first N images or
        traces (the untrained baseline's sample; a group whose unit is people scores all)."""

    @abstractmethod
    def registry_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The metrics a registered version is tagged with (the primary metric among them)."""


@cache
def _built_in() -> tuple[Workload, ...]:
    """Every module of this package that exposes a `WORKLOAD`, in module-name order."""
    modules = sorted(info.name for info in pkgutil.iter_modules(__path__))
    found = (importlib.import_module(f"{__name__}.{name}") for name in modules)
    return tuple(module.WORKLOAD for module in found if hasattr(module, "WORKLOAD"))


_added: dict[str, Workload] = {}


def add_workload(workload: Workload) -> None:
    """Describe one more group from outside this package (a plugin, a test)."""
    _added[workload.name] = workload
    all_workloads()  # a clash with the groups already described is reported here, named


def remove_workload(name: str) -> None:
    _added.pop(name, None)


def all_workloads() -> tuple[Workload, ...]:
    workloads = (*_built_in(), *_added.values())
    for attribute in ("name", "experiment", "registered_model"):
        _check_unique(workloads, attribute, lambda w, a=attribute: [getattr(w, a)])
    _check_unique(workloads, "task", lambda w: list(w.tasks))
    return workloads


def _check_unique(workloads: tuple[Workload, ...], what: str, values: Any) -> None:
    owner: dict[str, str] = {}
    for workload in workloads:
        for value in values(workload):
            if value in owner:
                raise ValueError(
                    f"{what} {value!r} is claimed by both the {owner[value]} and the "
                    f"{workload.name} workload"
                )
            owner[value] = workload.name


def workload_for(group: str) -> Workload:
    workloads = all_workloads()
    for workload in workloads:
        if workload.name == group:
            return workload
    known = ", ".join(w.name for w in workloads)
    raise UnknownGroupError(f"unknown task group {group!r}; known groups: {known}")


def workload_for_task(task: str) -> Workload:
    workloads = all_workloads()
    for workload in workloads:
        if task in workload.tasks:
            return workload
    known = ", ".join(t for w in workloads for t in w.tasks)
    raise UnknownGroupError(f"no task group trains task {task!r}; known tasks: {known}")


def workload_of_family(family: str) -> Workload:
    return workload_for_task(lookup_family(family).task)
