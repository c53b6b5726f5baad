"""The one TorchTrainer launcher: a TrainJob in, the trained model and last metrics out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import nn

from sightline.cluster import ensure_ray, gpus_available
from sightline.models import build_model
from sightline.models.registry import family as lookup_family
from sightline.train.job import TrainJob
from sightline.train.loop import load_checkpoint, train_loop_per_worker
from sightline.train.progress import shown_progress
from sightline.train.selection import kept_weights
from sightline.train.tasks import TaskGroup


@dataclass
class TrainOutcome:
    model: nn.Module
    metrics: dict[str, Any]
    checkpoint_path: str  # in Ray Train's storage (any node can read it): a next step's start


def scaling_for(job: TrainJob) -> ScalingConfig:
    """num_workers from params; use_gpu 'auto' means: yes if the cluster has a GPU per worker.
    Local mode (0 workers) trains on this process's own device (sightline.train.loop)."""
    if job.train.num_workers == 0:
        return ScalingConfig(num_workers=0)
    use_gpu = job.train.use_gpu
    if use_gpu == "auto":
        use_gpu = gpus_available() >= job.train.num_workers
    resources = None if use_gpu else {"CPU": job.train.threads_per_worker}
    return ScalingConfig(
        num_workers=job.train.num_workers, use_gpu=bool(use_gpu), resources_per_worker=resources
    )


def storage_uri(job: TrainJob) -> str:
    """Checkpoint storage: a URI (s3://, gs://) as given, a relative path from the project root."""
    if "://" in job.train.storage_path:
        return job.train.storage_path
    path = Path(job.train.storage_path)
    return str(path if path.is_absolute() else Path(job.project_root) / path)


def _local_run_dir(job: TrainJob, name: str) -> str:
    """Local mode's checkpoint folder (Ray Train copies none there): the run's folder in the
    storage, which must then be a path on this machine."""
    storage = storage_uri(job)
    if "://" in storage:
        raise ValueError(
            f"train.num_workers 0 (local mode) writes checkpoints on this machine; "
            f"train.storage_path must be a local path, not {storage!r}"
        )
    return str(Path(storage) / name)


def fit(
    job: TrainJob,
    group: TaskGroup,
    *,
    ray_address: str | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainOutcome:
    """Train the job with its task group's adapter; a family with a multi-step schedule
    (registry `steps`) trains once per step, each step from the previous step's weights, all
    logging into the job's run."""
    ensure_ray(ray_address)
    steps = lookup_family(job.family).training_steps(job.model_params)
    if not steps:
        return _fit_once(job, group, job.model_params, f"{job.family}-{job.run_id[:8]}", callbacks)
    outcome, offset = None, 0
    for step, epochs in steps:
        step_job = job.model_copy(
            update={
                "train": job.train.model_copy(update={"epochs": epochs or job.train.epochs}),
                "init_state": outcome.checkpoint_path if outcome else None,
                "epoch_offset": offset,
            }
        )
        params = {**job.model_params, "training_step": step}
        name = f"{job.family}-{job.run_id[:8]}-step{step}"
        outcome = _fit_once(step_job, group, params, name, callbacks)
        offset += step_job.train.epochs
    return outcome


def _fit_once(
    job: TrainJob,
    group: TaskGroup,
    build_params: dict[str, Any],
    name: str,
    callbacks: Sequence[Any],
) -> TrainOutcome:
    job = job.model_copy(update={"model_params": build_params})
    step = build_params.get("training_step")
    label = job.family if step is None else f"{job.family} step {step}"
    local_run_dir = _local_run_dir(job, name) if job.train.num_workers == 0 else None
    with shown_progress(label) as progress:  # per-batch progress from rank 0
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "job": job,
                "group": group,
                "progress": progress,
                "local_run_dir": local_run_dir,
            },
            scaling_config=scaling_for(job),
            run_config=RunConfig(
                name=name,
                storage_path=storage_uri(job),
                failure_config=FailureConfig(
                    max_failures=job.train.max_failures,
                    controller_failure_limit=job.train.controller_failure_limit,
                ),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                callbacks=list(callbacks),
            ),
        )
        threads = torch.get_num_threads()
        try:
            result = trainer.fit()
        finally:
            torch.set_num_threads(threads)  # local mode ran the loop (and its thread count) here
    if result.checkpoint is None:
        raise RuntimeError(f"training {job.family} produced no checkpoint")
    # The model as evaluated and served: built without any schedule step.
    params = {k: v for k, v in job.model_params.items() if k != "training_step"}
    model = build_model(job.family, job.num_classes, **params)
    with result.checkpoint.as_directory() as ckpt_dir:
        state = load_checkpoint(ckpt_dir)
    model.load_state_dict(kept_weights(state))
    return TrainOutcome(
        model=model.eval(), metrics=dict(result.metrics), checkpoint_path=result.checkpoint.path
    )
