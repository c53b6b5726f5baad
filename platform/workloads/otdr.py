"""The OTDR group (events1d): trace splits, 1-D event metrics, map_50 per SNR band.

Label ids are 1..4 in `EVENT_TYPES` order ("no event" is 0). The operating point of the
localisation and false-alarm metrics is the score the server reports by default
(`serve.default_score_threshold`), so the numbers describe what a user of the endpoint gets.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from torch import nn

from sightline.artifacts import ModelRecord
from sightline.config import Settings
from sightline.data.otdr import EVENT_TYPES, LABEL_OF_TYPE, NUM_CLASSES, Trace, load_split
from sightline.evaluate.otdr import evaluate_traces
from sightline.workloads import Evaluation, TrainingData

REGISTRY_METRICS = (
    "map_50",
    *(f"ap_50_{name}" for name in EVENT_TYPES),
    "loc_err_m_median",
    "loc_err_m_rmse",
    "false_alarms_per_km",
)


def load_traces(settings: Settings, split: str) -> list[Trace]:
    return load_split(settings.path(settings.otdr_data.root), split)


class OTDRWorkload:
    group = "otdr"
    headline_metrics = ("map_50",)
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
            "evaluate": ("seed", "otdr_data", "evaluate.split", "serve.default_score_threshold"),
            "register": ("evaluate.split",),
        }
    )

    def training_data(self, settings: Settings, family: str) -> TrainingData:
        traces = load_traces(settings, "train")  # a missing or malformed split stops here, named
        return TrainingData(
            num_classes=NUM_CLASSES,
            class_names=list(EVENT_TYPES),
            category_ids=[LABEL_OF_TYPE[name] for name in EVENT_TYPES],
            data_root=settings.path(settings.otdr_data.root),
            model_params=settings.model_params(family),
            record_schema={"samples_db": "string", "resolution_m": "double", "events": "string"},
            split_sizes={"train_traces": len(traces)},
        )

    def after_training(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> dict[str, Any]:
        return {}

    def evaluate(
        self, settings: Settings, model: nn.Module, record: ModelRecord, *, with_figures: bool
    ) -> Evaluation:
        result = evaluate_traces(
            model,
            load_traces(settings, settings.evaluate.split),
            score_threshold=settings.serve.default_score_threshold,
            with_figures=with_figures,
            title=record.family,
        )
        return Evaluation(
            metrics=result.metrics,
            figures=result.figures,
            tables={"map_50_by_snr.json": {"bands": result.by_snr}},
        )

    def registry_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return {k: metrics[k] for k in REGISTRY_METRICS if k in metrics}

    def eval_scope(self, settings: Settings, record: ModelRecord) -> str:
        return f"{settings.evaluate.split}:{','.join(record.class_names)}"


WORKLOAD = OTDRWorkload()
