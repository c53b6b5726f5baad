"""OTDR on the platform: the trace dataset and training adapter, the SNR measure, the workload's
metrics, figures and registry values."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sightline.artifacts import ModelRecord
from sightline.config import Evaluate, OTDRData, Settings
from sightline.data.otdr import EVENT_TYPES, NUM_CLASSES, Trace, load_split
from sightline.data.otdr_dataset import TraceDataset, collate
from sightline.data.synth.otdr import generate, simulate_trace
from sightline.data.synth.params import SynthOTDR
from sightline.evaluate.otdr import SNR, SPACING, trace_snr_db
from sightline.train.job import job_for
from sightline.workloads import workload_for
from sightline.workloads.otdr import REGISTRY_METRICS
from tests.unit.test_otdr_models import TINY

SMALL = SynthOTDR(seed=4, train=4, val=6, test=2, num_samples=(1024, 2048))
DESIGN_METRICS = {"map_50", "loc_err_m_median", "loc_err_m_rmse", "false_alarms_per_km"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("otdr_project")
    generate(root / "data" / "otdr", SMALL)
    return Settings(
        project_root=root, otdr_data=OTDRData(root=Path("data/otdr")), evaluate=Evaluate()
    )


def record(family: str) -> ModelRecord:
    return ModelRecord(
        family=family,
        task="events1d",
        num_classes=NUM_CLASSES,
        model_params={},
        class_names=list(EVENT_TYPES),
        category_ids=[1, 2, 3, 4],
        run_id="r",
        model_uri="",
        tags={},
    )


class Oracle(nn.Module):
    """Returns each trace's true events (traces are told apart by their length)."""

    def __init__(self, traces: list[Trace], shift: float = 0.0) -> None:
        super().__init__()
        self.truth = {len(t.samples): t.targets() for t in traces}
        self.shift = shift

    def forward(self, traces: list[Tensor]) -> list[dict[str, Tensor]]:
        outputs = []
        for trace in traces:
            target = self.truth[trace.numel()]
            segments = torch.from_numpy(target["segments"]) + self.shift
            outputs.append(
                {
                    "segments": segments,
                    "labels": torch.from_numpy(target["labels"]),
                    "scores": torch.ones(len(segments)),
                }
            )
        return outputs


def test_dataset_items_follow_the_1d_contract(settings: Settings) -> None:
    dataset = TraceDataset.load(settings.path("data/otdr"), "train")
    traces = load_split(settings.path("data/otdr"), "train")

    samples, target = dataset[1]

    assert len(dataset) == 4 and dataset.class_names == list(EVENT_TYPES)
    assert samples.dtype == torch.float32 and samples.shape == (len(traces[1].samples),)
    assert target["segments"].shape == (len(traces[1].events), 2)
    assert target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [e.label for e in traces[1].events]
    batch = collate([dataset[0], dataset[1]])
    assert isinstance(batch, tuple) and len(batch[0]) == 2 and len(batch[1]) == 2


@pytest.mark.parametrize("family", sorted(TINY))
def test_adapter_turns_a_batch_into_the_family_losses(settings: Settings, family: str) -> None:
    otdr = workload_for("otdr")
    adapter = otdr.train_adapter("events1d")
    data = replace(otdr.training_data(settings, family), model_params=dict(TINY[family][1]))
    job = job_for(settings, data, family=family, run_id="r")
    dataset = adapter.dataset(job)
    loader = adapter.loader(job, dataset, adapter.collate, 0, 2)
    torch.manual_seed(0)
    model = TINY[family][0](NUM_CLASSES, **TINY[family][1]).train()

    batch = next(iter(loader))
    losses = adapter.losses(model, batch, torch.device("cpu"))

    assert len(dataset) == 4 and len(batch[0]) == 2  # this rank's half, at batch_size
    assert losses and all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())


def test_adapter_names_a_missing_split(settings: Settings, tmp_path: Path) -> None:
    otdr = workload_for("otdr")
    job = job_for(settings, otdr.training_data(settings, "otdr_window"), family="otdr_window",
                  run_id="r").model_copy(update={"project_root": tmp_path})  # fmt: skip
    with pytest.raises(ValueError, match=r"train\.json: no such OTDR split file"):
        otdr.train_adapter("events1d").dataset(job)


@pytest.mark.parametrize("snr_db", [14.0, 22.0, 30.0])
def test_snr_is_measured_as_the_simulator_draws_it(snr_db: float) -> None:
    cfg = SynthOTDR(
        snr_db=(snr_db, snr_db),
        min_end_margin_db=0.0,
        resolution_m=(0.5, 1.0),  # <= 4 km: the fibre's loss never forces a higher SNR
        num_samples=(2048, 4096),
    )
    measured = [trace_snr_db(simulate_trace(np.random.default_rng([9, i]), cfg)) for i in range(8)]

    # A trace whose first event sits right after the launch dead zone leaves too little plain
    # fibre for the launch level's fit; most traces are measured within 0.5 dB.
    close = [m for m in measured if math.isfinite(m) and abs(m - snr_db) < 0.5]
    assert len(close) >= 6
    assert abs(np.median(close) - snr_db) < 0.2


def test_snr_of_a_trace_without_a_fibre_end_is_nan() -> None:
    trace = Trace(np.zeros(600, np.float32), 1.0, 1550.0, 10.0)
    assert math.isnan(trace_snr_db(trace))


def test_snr_and_spacing_bands_cover_every_value_once() -> None:
    bands = SNR.bands()
    assert [name for name, _, _ in bands] == ["< 18 dB", "18-24 dB", ">= 24 dB"]
    for value in (-5.0, 17.9, 18.0, 23.99, 24.0, 60.0):
        assert sum(low <= value < high for _, low, high in bands) == 1
    spacing = SPACING.bands()
    assert [name for name, _, _ in spacing] == ["< 0.25 m", "0.25-1 m", "1-2.5 m", ">= 2.5 m"]
    for metres in (0.05, 0.25, 0.99, 1.0, 2.5, 5.0):
        assert sum(low <= metres < high for _, low, high in spacing) == 1


def test_training_data_counts_no_event_as_class_0(settings: Settings) -> None:
    data = workload_for("otdr").training_data(settings, "otdr_detector")
    assert data.num_classes == NUM_CLASSES == len(EVENT_TYPES) + 1
    assert data.class_names == list(EVENT_TYPES) and data.category_ids == [1, 2, 3, 4]
    assert data.data_root == settings.path("data/otdr")


def test_a_perfect_model_scores_1_and_no_localisation_error(settings: Settings) -> None:
    workload = workload_for("otdr")
    traces = load_split(settings.path("data/otdr"), "val")

    result = workload.evaluate(settings, Oracle(traces), record("oracle"), with_figures=True)

    metrics = result.metrics
    assert DESIGN_METRICS | {f"ap_50_{t}" for t in EVENT_TYPES} <= set(metrics)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert metrics["loc_err_m_median"] == 0 and metrics["loc_err_m_rmse"] == 0
    assert metrics["false_alarms_per_km"] == 0 and metrics["inference_ms_per_km"] > 0
    assert {"map_50_vs_snr.png", "traces.png"} <= set(result.figures)
    bands = result.tables["map_50_by_snr.json"]["bands"]
    assert sum(b["traces"] for b in bands) <= len(traces)
    assert all(b["map_50"] == pytest.approx(1.0) for b in bands)
    spacing = result.tables["map_50_by_spacing.json"]["bands"]
    assert sum(b["traces"] for b in spacing) == len(traces)  # every trace has a spacing
    assert all(b["map_50"] == pytest.approx(1.0) for b in spacing)
    for row in spacing:
        low, high = row["low"] or 0.0, row["high"] or math.inf
        assert low <= row["mean"] < high


def test_first_scores_only_the_split_s_first_traces(settings: Settings) -> None:
    """The untrained baseline's sample (evaluate.untrained_first): the first N traces only."""
    workload = workload_for("otdr")
    traces = load_split(settings.path("data/otdr"), "val")

    def scored(first: int | None) -> int:
        result = workload.evaluate(
            settings, Oracle(traces), record("oracle"), with_figures=False, first=first
        )
        return sum(band["traces"] for band in result.tables["map_50_by_snr.json"]["bands"])

    assert 0 < scored(2) <= 2 < scored(None)


def test_shifted_events_give_the_shift_as_localisation_error(settings: Settings) -> None:
    traces = load_split(settings.path("data/otdr"), "val")
    oracle = Oracle(traces, shift=1.0)  # one sample late: IoU stays >= 0.5 for these widths

    result = workload_for("otdr").evaluate(settings, oracle, record("late"), with_figures=False)

    metres = sorted({t.resolution_m for t in traces})
    assert metres[0] <= result.metrics["loc_err_m_median"] <= metres[-1]
    assert result.figures == {}


def test_registry_metrics_and_scope(settings: Settings) -> None:
    workload = workload_for("otdr")
    metrics = {name: 0.5 for name in REGISTRY_METRICS} | {"inference_ms_per_km": 3.0}

    tagged = workload.registry_metrics(metrics)

    assert set(tagged) == set(REGISTRY_METRICS) and "map_50" in tagged
    assert workload.headline_metrics == ("map_50",)
    scope = workload.eval_scope(settings, record("otdr_window"))
    assert scope == f"val:{','.join(EVENT_TYPES)}"


def test_local_mode_refuses_a_remote_checkpoint_storage(settings: Settings) -> None:
    from sightline.train.launcher import _local_run_dir

    otdr = workload_for("otdr")
    job = job_for(settings, otdr.training_data(settings, "otdr_window"), family="otdr_window",
                  run_id="r")  # fmt: skip
    local = job.model_copy(update={"train": job.train.model_copy(update={"num_workers": 0})})
    assert _local_run_dir(local, "run").endswith("run")
    remote = job.model_copy(
        update={"train": local.train.model_copy(update={"storage_path": "s3://bucket/ray"})}
    )
    with pytest.raises(ValueError, match=r"train.storage_path must be a local path.*s3://"):
        _local_run_dir(remote, "run")
