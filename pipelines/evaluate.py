"""DVC stage `evaluate@<family>`: COCO metrics on the validation split, into DVC and MLflow.

python -m sightline.pipelines.evaluate --family faster_rcnn [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys

import mlflow
import torch
from rich.console import Console

from sightline.artifacts import load_trained, metrics_path, model_dir, proposals_for, write_json
from sightline.config import Settings
from sightline.data.detection import load_task_split
from sightline.evaluate.detection import evaluate_detector
from sightline.models import build_model
from sightline.stage import run_stage
from sightline.track.runs import log_metrics, resume_run, use_tracking

console = Console(stderr=True)


def stage(settings: Settings, args: argparse.Namespace) -> int:
    model, record = load_trained(model_dir(settings, args.family))
    split = load_task_split(
        settings.detection_data, settings.evaluate.split, settings.project_root, record.task
    )
    proposals = proposals_for(settings, args.family, settings.evaluate.split)

    trained = evaluate_detector(
        model,
        split,
        task=record.task,
        split_name=settings.evaluate.split,
        proposals=proposals,
        grid_images=settings.evaluate.grid_images,
        grid_score_threshold=settings.evaluate.grid_score_threshold,
    )
    # The same architecture, untrained (same seed): what "learning" is measured against.
    torch.manual_seed(settings.seed)
    untrained_model = build_model(record.family, record.num_classes, **record.model_params).eval()
    untrained = evaluate_detector(
        untrained_model, split, task=record.task, with_figures=False, proposals=proposals
    )
    metrics = {
        **trained.metrics,
        "untrained_map": untrained.metrics["map"],
        "untrained_map_50": untrained.metrics["map_50"],
    }
    write_json(metrics_path(settings, args.family), metrics)

    use_tracking(settings.tracking_uri)
    with resume_run(record.run_id):
        log_metrics(metrics)
        for name, figure in trained.figures.items():
            mlflow.log_figure(figure, f"evaluation/{name}")
        mlflow.log_dict(metrics, "evaluation/metrics.json")
    console.print(
        f"[bold]{args.family}[/] on {settings.evaluate.split}: map={metrics['map']:.3f} "
        f"map_50={metrics['map_50']:.3f} (untrained map_50={metrics['untrained_map_50']:.3f})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=True)


if __name__ == "__main__":
    sys.exit(main())
