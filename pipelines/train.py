"""DVC stage `train@<family>` (and `train_otdr@`, `train_faces@`): train one family through
Ray Train, tracked in one MLflow run of its task group's experiment.

python -m sightline.pipelines.train --family faster_rcnn [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from sightline.artifacts import ModelRecord, model_dir, save_trained
from sightline.config import Settings
from sightline.stage import run_stage
from sightline.track.runs import local_artifact_root, start_training_run, use_tracking
from sightline.train.family_run import lineage_tags, run_params, train_and_log, training_dataset
from sightline.workloads import workload_of_family

console = Console(stderr=True)


def train_family(settings: Settings, family_name: str) -> ModelRecord:
    workload = workload_of_family(family_name)
    data = workload.training_data(settings, family_name)
    use_tracking(settings.tracking_uri)
    tags = lineage_tags(settings, data)
    run_id = start_training_run(
        family_name,
        experiment=workload.experiment,
        params=run_params(settings, family_name, data),
        tags=tags,
        dataset=training_dataset(settings, data, tags),
        artifact_root=local_artifact_root(settings.tracking_uri, settings.path("mlartifacts")),
    )
    console.print(f"[bold]{family_name}[/]: MLflow run {run_id}")
    trained = train_and_log(settings, workload, family_name, data, run_id, tags=tags)
    directory = model_dir(settings, family_name)
    save_trained(directory, trained.model, trained.record)
    console.print(f"[bold]{family_name}[/]: trained and saved to {directory}", soft_wrap=True)
    return trained.record


def stage(settings: Settings, args: argparse.Namespace) -> int:
    train_family(settings, args.family)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=True)


if __name__ == "__main__":
    sys.exit(main())
