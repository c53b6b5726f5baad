"""DVC stage `train@<family>`: train one family through Ray Train, tracked in one MLflow run.

python -m sightline.pipelines.train --family faster_rcnn [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from sightline.artifacts import ModelRecord, model_dir, save_trained
from sightline.config import Settings
from sightline.data.detection import load_task_split
from sightline.models.registry import family as lookup_family
from sightline.stage import run_stage
from sightline.track.lineage import dvc_data_hash, git_commit
from sightline.track.registry import log_model
from sightline.track.runs import local_artifact_root, resume_run, start_training_run, use_tracking
from sightline.train.job import job_for
from sightline.train.launcher import fit

console = Console(stderr=True)


def lineage_tags(settings: Settings) -> dict[str, str]:
    return {
        "git_commit": git_commit(settings.project_root),
        "dvc_data_hash": dvc_data_hash(
            settings.project_root, settings.path(settings.detection_data.root)
        ),
        "profile": settings.profile,
    }


def train_family(settings: Settings, family_name: str) -> ModelRecord:
    fam = lookup_family(family_name)
    split = load_task_split(settings.detection_data, "train", settings.project_root, fam.task)
    model_params = fam.params_from_data(settings.model_params(family_name), split.coco.dataset)
    use_tracking(settings.tracking_uri)
    tags = lineage_tags(settings)
    run_id = start_training_run(
        family_name,
        params={
            "family": family_name,
            "model": model_params,
            "train": settings.train.model_dump(mode="json"),
            "data": settings.detection_data.model_dump(mode="json"),
            "seed": settings.seed,
        },
        tags=tags,
        artifact_root=local_artifact_root(settings.tracking_uri, settings.path("mlartifacts")),
    )
    console.print(f"[bold]{family_name}[/]: MLflow run {run_id}; training on Ray ...")
    job = job_for(
        settings,
        family=family_name,
        num_classes=split.num_classes + 1,
        run_id=run_id,
        model_params=model_params,
    )
    outcome = fit(job, ray_address=settings.ray_address)
    metadata = {
        "task": fam.task,
        "class_names": split.class_names,
        "category_ids": split.category_ids,
    }
    with resume_run(run_id):
        model_uri = log_model(outcome.model, family=family_name, metadata=metadata)
    record = ModelRecord(
        family=family_name,
        task=fam.task,
        num_classes=job.num_classes,
        model_params=job.model_params,
        class_names=split.class_names,
        category_ids=split.category_ids,
        run_id=run_id,
        model_uri=model_uri,
        tags=tags,
    )
    save_trained(model_dir(settings, family_name), outcome.model, record)
    console.print(
        f"[bold]{family_name}[/]: trained; last epoch loss {outcome.metrics.get('loss'):.4f}"
    )
    return record


def stage(settings: Settings, args: argparse.Namespace) -> int:
    train_family(settings, args.family)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=True)


if __name__ == "__main__":
    sys.exit(main())
