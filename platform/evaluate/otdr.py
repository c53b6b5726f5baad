"""An OTDR event detector scored on a split of traces: the 1-D event metrics (events1d.py),
the same per SNR band and per sample-spacing band, inference time per km of fibre, and figures
for MLflow.

Real acquisitions span 0.05-5 m per sample (short pulses on a patch cord, long ones on 100 km of
fibre), and a detector that learnt one spacing may miss events at another: the spacing bands
say where it holds.

SNR is measured on each labelled trace, as the simulator defines it (the launch level above
the noise floor, in displayed dB): the noise floor from the samples after the labelled fibre
end (their median is 5·log10(0.6745·σ) for Gaussian noise), the launch level from a straight
line fitted to the plain fibre before the first event (its second half, past the launch dead
zone) and read at the first sample. A trace without both gets NaN and no band.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from sightline.data.otdr import EVENT_TYPES, Trace
from sightline.evaluate.events1d import evaluate_events

END_TYPES = ("fiber_end", "fiber_cut")
SNR_BAND_EDGES_DB = (18.0, 24.0)  # -> "< 18 dB", "18-24 dB", ">= 24 dB"
SPACING_BAND_EDGES_M = (0.25, 1.0, 2.5)  # -> "< 0.25 m", "0.25-1 m", "1-2.5 m", ">= 2.5 m"
MIN_FLOOR_SAMPLES = 32
MIN_FIBRE_SAMPLES = 16
HALF_NORMAL_MEDIAN = 0.6745  # median of |N(0, 1)|
TRACES_IN_FIGURE = 4


@dataclass
class TraceEvaluation:
    metrics: dict[str, float]
    # One row per band: {"band", "low", "high", "traces", "mean", "map_50", ...}.
    by_snr: list[dict[str, Any]]
    by_spacing: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)


def predict(model: nn.Module, traces: Sequence[Trace]) -> tuple[list[dict[str, Any]], float]:
    """The model's events for each trace (one trace per call, as served) and the seconds taken."""
    model.eval()
    outputs = []
    started = time.perf_counter()
    with torch.inference_mode():
        for trace in traces:
            output = model([torch.from_numpy(trace.samples.copy())])[0]
            outputs.append({k: v.detach().cpu() for k, v in output.items()})
    return outputs, time.perf_counter() - started


def trace_snr_db(trace: Trace) -> float:
    """Launch level above the noise floor in dB (see the module docstring), or NaN."""
    samples = trace.samples.astype(np.float64)
    ends = [e for e in trace.events if e.type in END_TYPES]
    if not ends:
        return math.nan
    floor = samples[math.ceil(ends[-1].end) :]
    first = int(min(e.start for e in trace.events))
    low = first // 2
    if len(floor) < MIN_FLOOR_SAMPLES or first - low < MIN_FIBRE_SAMPLES:
        return math.nan
    noise_db = float(np.median(floor)) - 5 * math.log10(HALF_NORMAL_MEDIAN)
    _, launch_db = np.polyfit(np.arange(low, first), samples[low:first], 1)
    return float(launch_db) - noise_db


def trace_spacing_m(trace: Trace) -> float:
    """Metres of fibre per sample."""
    return trace.resolution_m


@dataclass(frozen=True)
class Banding:
    """How traces are grouped for the per-band scores: a value per trace, cut at `edges`."""

    name: str  # "snr", "spacing": the MLflow table `map_50_by_<name>.json`
    unit: str
    edges: tuple[float, ...]
    value: Callable[[Trace], float]

    def bands(self) -> list[tuple[str, float, float]]:
        """(name, low, high) of each band; the outer bands are open."""
        edges, unit = self.edges, self.unit
        bounds = [-math.inf, *edges, math.inf]
        names = [f"< {edges[0]:g} {unit}"]
        names += [f"{a:g}-{b:g} {unit}" for a, b in itertools.pairwise(edges)]
        names += [f">= {edges[-1]:g} {unit}"]
        return [(n, lo, hi) for n, (lo, hi) in zip(names, itertools.pairwise(bounds), strict=True)]


SNR = Banding("snr", "dB", SNR_BAND_EDGES_DB, trace_snr_db)
SPACING = Banding("spacing", "m", SPACING_BAND_EDGES_M, trace_spacing_m)


def evaluate_traces(
    model: nn.Module,
    traces: Sequence[Trace],
    *,
    score_threshold: float,
    with_figures: bool,
    title: str = "",
) -> TraceEvaluation:
    """The event metrics of `model` on `traces`, overall and per SNR band."""
    if not traces:
        raise ValueError("no traces to evaluate on")
    predictions, seconds = predict(model, traces)
    metrics = score(traces, predictions, score_threshold)
    total_km = sum(t.length_m for t in traces) / 1000
    metrics["inference_ms_per_km"] = 1000 * seconds / total_km
    by_snr = scores_by_band(traces, predictions, score_threshold, SNR)
    by_spacing = scores_by_band(traces, predictions, score_threshold, SPACING)
    figures = {}
    if with_figures:
        figures["map_50_vs_snr.png"] = map_vs_snr_figure({title or "model": by_snr})
        figures["traces.png"] = traces_figure(traces, predictions, score_threshold)
    return TraceEvaluation(metrics=metrics, by_snr=by_snr, by_spacing=by_spacing, figures=figures)


def score(
    traces: Sequence[Trace],
    predictions: Sequence[dict[str, Any]],
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """evaluate_events on labelled traces (named map_50 etc. whatever `iou_threshold` is)."""
    return evaluate_events(
        [t.targets() for t in traces],
        predictions,
        [t.resolution_m for t in traces],
        [t.length_m for t in traces],
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
    )


def scores_by_band(
    traces: Sequence[Trace],
    predictions: Sequence[dict[str, Any]],
    score_threshold: float,
    banding: Banding,
) -> list[dict[str, Any]]:
    """The event metrics of each band's traces (bands without a trace are left out; a trace
    whose value is NaN, e.g. an SNR without a noise floor, is in no band)."""
    values = np.array([banding.value(t) for t in traces])
    rows = []
    for name, low, high in banding.bands():
        members = np.flatnonzero((values >= low) & (values < high))
        if not len(members):
            continue
        band = score(
            [traces[i] for i in members], [predictions[i] for i in members], score_threshold
        )
        rows.append(
            {
                "band": name,
                "low": None if math.isinf(low) else low,
                "high": None if math.isinf(high) else high,
                "traces": len(members),
                "mean": float(values[members].mean()),
                **band,
            }
        )
    return rows


def map_vs_snr_figure(series: dict[str, list[dict[str, Any]]]) -> Figure:
    """map_50 per SNR band, one line per model, plotted at each band's mean SNR."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for name, rows in series.items():
        ax.plot(
            [r["mean"] for r in rows],
            [max(r["map_50"], 0.0) for r in rows],
            "o-",
            label=name,
        )
        for row in rows:
            ax.annotate(row["band"], (row["mean"], max(row["map_50"], 0.0)), fontsize=6)
    ax.set(xlabel="trace SNR (launch level above the noise floor, dB)", ylabel="map_50")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("map_50 vs SNR")
    fig.tight_layout()
    return fig


def traces_figure(
    traces: Sequence[Trace],
    predictions: Sequence[dict[str, Any]],
    score_threshold: float,
    count: int = TRACES_IN_FIGURE,
) -> Figure:
    """The first traces, dB vs km: true events shaded green, reported events (score above
    the threshold) as red bars with their type."""
    shown = list(range(min(count, len(traces))))
    fig = Figure(figsize=(9, 2.2 * len(shown)))
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    for ax, index in zip(axes, shown, strict=True):
        trace, output = traces[index], predictions[index]
        km = trace.resolution_m / 1000
        ax.plot(np.arange(len(trace.samples)) * km, trace.samples, lw=0.6, color="black")
        for event in trace.events:
            ax.axvspan(event.start * km, event.end * km, color="lime", alpha=0.35)
        keep = np.asarray(output["scores"]) >= score_threshold
        top = float(np.max(trace.samples))
        for (start, end), label in zip(
            np.asarray(output["segments"])[keep], np.asarray(output["labels"])[keep], strict=True
        ):
            ax.hlines(top + 0.5, start * km, end * km, color="red", lw=4)
            ax.text(start * km, top + 1.0, EVENT_TYPES[int(label) - 1], color="red", fontsize=6)
        ax.set(ylabel="dB", title=trace.trace_id or f"trace {index}")
    axes[-1].set_xlabel("distance (km)")
    fig.tight_layout()
    return fig
