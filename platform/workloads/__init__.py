"""What differs between the task groups (detection, otdr, identification) inside the shared
pipeline stages (train, evaluate, register).

The stages in pipelines/ are written once; each asks `workload_for(group)` where the group's
data lives, how many classes its models have, what to do after training (e.g. calibrate γ),
how a trained model is scored and what the registry compares. One module per group.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from matplotlib.figure import Figure
from torch import nn

from sightline.artifacts import ModelRecord
from sightline.config import Settings
from sightline.models.registry import TASK_GROUP
from sightline.models.registry import family as lookup_family


@dataclass
class TrainingData:
    """What a family needs to know about its training data before it is built."""

    num_classes: int  # including background / "no event" where the task has one
    class_names: list[str]
    category_ids: list[int]
    data_root: Path  # the dataset folder whose DVC hash tags the run (lineage)
    # Per-family hyper-parameters with data-derived values filled in (e.g. YOLO's anchors).
    model_params: dict[str, Any]
    # Group options the training workers need beyond `train` (e.g. P x K batch sizes).
    task_options: dict[str, Any] = field(default_factory=dict)
    # What the run's MLflow dataset input shows: one training record's fields (MLflow type
    # names) and the number of records (images, traces, people) per split.
    record_schema: dict[str, str] = field(default_factory=dict)
    split_sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)
    # Extra files for MLflow (name -> JSON-serialisable payload).
    tables: dict[str, Any] = field(default_factory=dict)


class Workload(Protocol):
    group: str
    # Metric names also reported for the same network untrained (as `untrained_<name>`).
    headline_metrics: tuple[str, ...]

    def training_data(self, settings: Settings, family: str) -> TrainingData: ...

    def after_training(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> dict[str, Any]:
        """Values stored with the model (model.json `extras`, MLflow metadata), e.g. γ."""
        ...

    def evaluate(
        self, settings: Settings, model: nn.Module, record: ModelRecord, *, with_figures: bool
    ) -> Evaluation: ...

    def registry_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The metrics a registered version is tagged with (the primary metric among them)."""
        ...

    def eval_scope(self, settings: Settings, record: ModelRecord) -> str:
        """What the metrics were measured on: versions are compared only within one scope."""
        ...


MODULES = {
    "detection": "sightline.workloads.detection",
    "otdr": "sightline.workloads.otdr",
    "identification": "sightline.workloads.identification",
}


def workload_for(group: str) -> Workload:
    return importlib.import_module(MODULES[group]).WORKLOAD


def workload_of_family(family: str) -> Workload:
    return workload_for(TASK_GROUP[lookup_family(family).task])
