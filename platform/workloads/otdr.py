"""The OTDR group (events1d): trace splits, 1-D event metrics, map_50 per SNR band.

Label ids are 1..4 in `EVENT_TYPES` order ("no event" is 0). The operating point of the
localisation and false-alarm metrics is the score the server reports by default
(`serve.default_score_threshold`), so the numbers describe what a user of the endpoint gets.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from sightline.artifacts import ModelRecord
from sightline.config import Settings
from sightline.data.otdr import EVENT_TYPES, LABEL_OF_TYPE, NUM_CLASSES, Trace
from sightline.data.otdr_sor_folder import load_trace_split
from sightline.data.sources import OTDRData
from sightline.evaluate.otdr import evaluate_traces
from sightline.train.job import TrainingData, TrainJob, expect
from sightline.train.tasks import TargetsBatch, TaskAdapter, targets_losses
from sightline.validate.report import ValidationReport
from sightline.workloads import Evaluation, Workload

REGISTRY_METRICS = (
    "map_50",
    *(f"ap_50_{name}" for name in EVENT_TYPES),
    "loc_err_m_median",
    "loc_err_m_rmse",
    "false_alarms_per_km",
)


def load_traces(settings: Settings, split: str) -> list[Trace]:
    return load_trace_split(settings.otdr_data, split, settings.project_root)


def trace_dataset(job: TrainJob) -> Dataset:
    """The train split's traces: (L,) dB tensors and their segment/label targets."""
    from sightline.data.otdr_dataset import TraceDataset

    data = expect(job.data, OTDRData, "the job's data section")
    return TraceDataset(load_trace_split(data, "train", job.project_root))


def trace_collate(batch: list[Any]) -> TargetsBatch:
    from sightline.data.otdr_dataset import collate

    return collate(batch)


# Traces and targets move to the device exactly as images and box targets do.
TRAIN_ADAPTER = TaskAdapter(trace_dataset, trace_collate, targets_losses)


class OTDRWorkload(Workload):
    name = "otdr"
    tasks = ("events1d",)
    data_section = "otdr_data"
    synth_kind = "otdr"
    experiment = "sightline-otdr"
    registered_model = "sightline-otdr"
    primary_metric = "map_50"
    headline_metrics = ("map_50",)
    summary_metrics = ("map_50", "loc_err_m_median", "loc_err_m_rmse", "untrained_map_50")
    train_adapters = MappingProxyType({"events1d": TRAIN_ADAPTER})
    # params.yaml keys each stage kind reads ("{family}": the stage's family); dvc.yaml lists
    # exactly these (tests/unit/test_dvc_params.py).
    stage_params = MappingProxyType(
        {
            "validate": ("otdr_data",),
            "train": (
                "seed",
                "otdr_data",
                "train",
                "otdr.train",
                "otdr.family_train",
                "models.{family}",
            ),
            "evaluate": (
                "seed",
                "otdr_data",
                "evaluate.split",
                "evaluate.untrained_first",
                "serve.default_score_threshold",
            ),
            "register": ("evaluate.split",),
        }
    )

    def training_data(self, settings: Settings, family: str) -> TrainingData:
        traces = load_traces(settings, "train")  # a missing or malformed split stops here, named
        return TrainingData(
            num_classes=NUM_CLASSES,
            class_names=list(EVENT_TYPES),
            category_ids=[LABEL_OF_TYPE[name] for name in EVENT_TYPES],
            data_root=self.data_root(settings),
            model_params=settings.model_params(family),
            data=settings.otdr_data,
            train=self.train_block(settings, family),
            record_schema={"samples_db": "string", "resolution_m": "double", "events": "string"},
            split_sizes={"train_traces": len(traces)},
        )

    def evaluate(
        self,
        settings: Settings,
        model: nn.Module,
        record: ModelRecord,
        *,
        with_figures: bool,
        first: int | None = None,
    ) -> Evaluation:
        result = evaluate_traces(
            model,
            load_traces(settings, settings.evaluate.split)[:first],
            score_threshold=settings.serve.default_score_threshold,
            with_figures=with_figures,
            title=record.family,
        )
        return Evaluation(
            metrics=result.metrics,
            figures=result.figures,
            tables={
                "map_50_by_snr.json": {"bands": result.by_snr},
                "map_50_by_spacing.json": {"bands": result.by_spacing},
            },
        )

    def registry_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return {k: metrics[k] for k in REGISTRY_METRICS if k in metrics}

    def validate(self, settings: Settings) -> ValidationReport:
        from sightline.validate.otdr import validate_otdr_dataset

        data = settings.otdr_data
        return validate_otdr_dataset(data, settings.project_root, list(data.splits))


WORKLOAD = OTDRWorkload()
