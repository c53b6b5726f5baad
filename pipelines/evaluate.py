"""DVC stage `evaluate@<family>`: the task's metrics on the validation data, into DVC and
MLflow, next to the same network untrained (what "learning" is measured against).

python -m sightline.pipelines.evaluate --family faster_rcnn [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys

import mlflow
import torch
from rich.console import Console

from sightline.artifacts import load_trained, metrics_path, model_dir, write_json
from sightline.config import Settings
from sightline.models import build_model
from sightline.stage import run_stage
from sightline.track.runs import log_metrics, resume_run, use_tracking
from sightline.workloads import workload_of_family

console = Console(stderr=True)


def stage(settings: Settings, args: argparse.Namespace) -> int:
    model, record = load_trained(model_dir(settings, args.family))
    workload = workload_of_family(args.family)
    trained = workload.evaluate(settings, model, record, with_figures=True)
    torch.manual_seed(settings.seed)  # the same architecture, untrained, same seed
    untrained_model = build_model(record.family, record.num_classes, **record.model_params).eval()
    untrained = workload.evaluate(
        settings,
        untrained_model,
        record,
        with_figures=False,
        first=settings.evaluate.untrained_first,
    )
    metrics = {
        **trained.metrics,
        **{f"untrained_{name}": untrained.metrics[name] for name in workload.headline_metrics},
    }
    write_json(metrics_path(settings, args.family), metrics)

    use_tracking(settings.tracking_uri)
    with resume_run(record.run_id):
        log_metrics(metrics)
        for name, figure in trained.figures.items():
            mlflow.log_figure(figure, f"evaluation/{name}")
        for name, table in trained.tables.items():
            mlflow.log_dict(table, f"evaluation/{name}")
        mlflow.log_dict(metrics, "evaluation/metrics.json")
    headline = " ".join(
        f"{name}={metrics[name]:.3f} (untrained {metrics[f'untrained_{name}']:.3f})"
        for name in workload.headline_metrics
    )
    console.print(f"[bold]{args.family}[/]: {headline}", soft_wrap=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=True)


if __name__ == "__main__":
    sys.exit(main())
