"""DVC stage `train@<family>` (and `train_otdr@`, `train_faces@`): train one family through
Ray Train, tracked in one MLflow run of its task group's experiment.

python -m sightline.pipelines.train --family faster_rcnn [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys

import torch
from rich.console import Console

from sightline.artifacts import ModelRecord, model_dir, save_trained
from sightline.config import Settings
from sightline.models import build_model
from sightline.models.registry import family as lookup_family
from sightline.stage import run_stage
from sightline.track.lineage import dvc_data_hash, git_commit
from sightline.track.registry import log_model
from sightline.track.runs import (
    local_artifact_root,
    resume_run,
    start_training_run,
    task_group,
    use_tracking,
)
from sightline.train.job import job_for
from sightline.train.launcher import fit
from sightline.workloads import workload_for

console = Console(stderr=True)


def train_family(settings: Settings, family_name: str) -> ModelRecord:
    fam = lookup_family(family_name)
    group = task_group(family_name)
    workload = workload_for(group)
    data = workload.training_data(settings, family_name)
    train_settings = settings.train_for(group, family_name)
    use_tracking(settings.tracking_uri)
    tags = {
        "git_commit": git_commit(settings.project_root),
        "dvc_data_hash": dvc_data_hash(settings.project_root, data.data_root),
        "profile": settings.profile,
    }
    run_id = start_training_run(
        family_name,
        params={
            "family": family_name,
            "model": data.model_params,
            "train": train_settings.model_dump(mode="json"),
            "data": settings.data_for(group).model_dump(mode="json"),
            "task_options": data.task_options,
            "seed": settings.seed,
        },
        tags=tags,
        artifact_root=local_artifact_root(settings.tracking_uri, settings.path("mlartifacts")),
    )
    if fam.trainable:
        console.print(f"[bold]{family_name}[/]: MLflow run {run_id}; training on Ray ...")
        job = job_for(
            settings,
            family=family_name,
            num_classes=data.num_classes,
            run_id=run_id,
            model_params=data.model_params,
            task_options=data.task_options,
        )
        model = fit(job, ray_address=settings.ray_address).model
    else:
        console.print(f"[bold]{family_name}[/]: MLflow run {run_id}; nothing to learn")
        torch.manual_seed(settings.seed)
        model = build_model(family_name, data.num_classes, **data.model_params).eval()
    record = ModelRecord(
        family=family_name,
        task=fam.task,
        num_classes=data.num_classes,
        model_params=data.model_params,
        class_names=data.class_names,
        category_ids=data.category_ids,
        run_id=run_id,
        model_uri="",
        tags=tags,
    )
    record.extras = workload.after_training(settings, model, record)
    metadata = {
        "task": fam.task,
        "class_names": data.class_names,
        "category_ids": data.category_ids,
        **record.extras,
    }
    with resume_run(run_id):
        record.model_uri = log_model(model, family=family_name, metadata=metadata)
    directory = model_dir(settings, family_name)
    save_trained(directory, model, record)
    console.print(f"[bold]{family_name}[/]: trained and saved to {directory}")
    return record


def stage(settings: Settings, args: argparse.Namespace) -> int:
    train_family(settings, args.family)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=True)


if __name__ == "__main__":
    sys.exit(main())
