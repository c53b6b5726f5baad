"""What every benchmark in bench/ shares: training throughput from MLflow, and publishing the
report (docs/benchmarks/<name>.md plus an MLflow run tagged kind=benchmark).

Benchmarks run as scripts (`python bench/<name>.py`), so this module is imported as `common`.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping
from pathlib import Path

import mlflow
from matplotlib.figure import Figure
from mlflow import MlflowClient

from sightline.artifacts import proposals_dir
from sightline.config import Settings
from sightline.track.runs import experiment_id, local_artifact_root, use_tracking
from sightline.workloads import workload_for


def train_throughput(run_id: str, metric: str = "train_images_per_s") -> float:
    """Mean over the training epochs logged in the family's MLflow run (NaN if none)."""
    history = MlflowClient().get_metric_history(run_id, metric)
    return statistics.fmean(m.value for m in history) if history else float("nan")


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes (`--params`), described by its docstring's first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", default=None)
    return parser


def link_proposals(settings: Settings, scratch: Path) -> None:
    """The project's selective-search proposals (rcnn / fast_rcnn train and score on them)
    linked into the scratch project at `scratch`, where the project has them."""
    source = proposals_dir(settings)
    if source.is_dir():
        target = scratch / source.relative_to(settings.project_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source.resolve(), target_is_directory=True)


def replace_section(path: Path, key: str, text: str) -> str:
    """The report at `path` with its `key` section (between HTML comment markers) replaced by
    `text`, or appended when absent: several benchmarks share one page, each owns a section."""
    begin, end = f"<!-- begin:{key} -->", f"<!-- end:{key} -->"
    current = path.read_text() if path.exists() else f"# {path.stem.capitalize()}\n\n"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")  # e.g. a hand-written reading of the run
        return head + block + ("\n" + after if after else "")
    return current.rstrip("\n") + "\n\n" + block


def publish(
    settings: Settings,
    *,
    name: str,
    group: str,
    report: str,
    metrics: Mapping[str, float],
    figures: Mapping[str, Figure] | None = None,
) -> Path:
    """Write docs/benchmarks/<name>.md and log it, with the finite `metrics` (and `figures`),
    as a run named bench-<name> tagged kind=benchmark in the group's experiment; returns the
    report's path."""
    out = settings.path("docs/benchmarks") / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    use_tracking(settings.tracking_uri)
    exp = experiment_id(
        workload_for(group).experiment,
        local_artifact_root(settings.tracking_uri, settings.path("mlartifacts")),
    )
    with mlflow.start_run(experiment_id=exp, run_name=f"bench-{name}", tags={"kind": "benchmark"}):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})
        mlflow.log_text(report, f"{name}.md")
        for file_name, figure in (figures or {}).items():
            mlflow.log_figure(figure, file_name)
    return out
