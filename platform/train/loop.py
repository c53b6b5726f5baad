"""The one per-worker training loop for every model with the loss-dict contract.

Runs inside Ray Train workers: DDP via `prepare_model`, a DistributedSampler, a checkpoint
each epoch (model, optimiser, scheduler, epoch, the best epoch so far), resume from
`ray.train.get_checkpoint()` after a worker failure, per-epoch losses and validation scores
logged by rank 0 into the job's existing MLflow run, and the recipe's choice of the epoch kept
and early stop (sightline.train.selection).
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from mlflow import MlflowClient
from mlflow.entities import Metric
from torch import nn

from sightline.cluster import node_description
from sightline.models import build_model
from sightline.train.job import TrainJob
from sightline.train.progress import ProgressSender
from sightline.train.selection import VALIDATION_PREFIX, BestEpoch
from sightline.train.tasks import TaskGroup
from sightline.train.validation import validation_metrics

CHECKPOINT_FILE = "state.pt"


class UnsafeCheckpoint(ValueError):
    """A checkpoint file that is not plain tensors and numbers (e.g. a pickle that runs code)."""


def load_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's state (model, optimizer, scheduler, epoch), read weights-only: tensors,
    numbers, strings and containers, nothing else; a pickle payload is refused, never run."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0]
        raise UnsafeCheckpoint(
            f"{path} is not a weights-only checkpoint ({reason}); refusing to load it"
        ) from None


class InjectedFailure(RuntimeError):
    """Raised once, on purpose, to exercise recovery from a crashed worker."""


def _lr_lambda(warmup_iters: int, total_iters: int):
    """Linear warm-up, then cosine decay to 5% of the base rate (per iteration)."""

    def factor(it: int) -> float:
        if it < warmup_iters:
            return 0.1 + 0.9 * it / max(1, warmup_iters)
        progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _maybe_inject_failure(job: TrainJob, epoch: int, rank: int) -> None:
    if (
        job.train.inject_failure_at_epoch != epoch
        or rank != ray.train.get_context().get_world_size() - 1
    ):
        return
    marker = Path(job.marker_dir) / "failure_injected"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first attempt fails
    except FileExistsError:
        return
    os.close(fd)
    raise InjectedFailure(f"injected worker failure at epoch {epoch} (rank {rank})")


# The collectives below run on the training device: NCCL (GPU workers) reduces CUDA tensors only.


def _mean_across_workers(
    sums: dict[str, float], count: int, device: torch.device
) -> dict[str, float]:
    names = sorted(sums)
    values = [sums[n] for n in names] + [float(count)]
    packed = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(packed)
    total = max(1.0, packed[-1].item())
    return {n: packed[i].item() / total for i, n in enumerate(names)}


def _any_worker(flag: bool, device: torch.device) -> bool:
    """True on every worker when it is true on one (rank 0 decides to stop; all must)."""
    packed = torch.tensor([float(flag)], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())


@contextmanager
def _checkpoint_folder(local_run_dir: str | None, epoch: int) -> Iterator[str]:
    """Where an epoch's checkpoint is written before it is reported: a temporary folder that
    Ray Train copies into its storage; in local mode, which copies nothing, the run's own
    folder in that storage."""
    if local_run_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
        return
    folder = Path(local_run_dir) / f"checkpoint_{epoch:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    yield str(folder)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def train_loop_per_worker(config: dict[str, Any]) -> None:
    # Where a training's fixed cost goes (`sightline bench overhead`): the first epoch of an
    # attempt reports when the loop began (unix s) and its setup; every epoch its validation and
    # its checkpoint's save.
    entered_at = time.time()
    job: TrainJob = config["job"]
    group: TaskGroup = config["group"]  # the task group: its adapter and its evaluator
    torch.set_num_threads(job.train.threads_per_worker)
    torch.manual_seed(job.seed)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    adapter = group.train_adapter(job.task)

    dataset = adapter.dataset(job)
    loader = adapter.loader(job, dataset, adapter.collate, rank, world)
    # The shuffle and the augmentation (off for the final epochs) follow the epoch.
    epoch_aware = [
        part
        for part in (loader.sampler, loader.batch_sampler, loader.dataset)
        if hasattr(part, "set_epoch")
    ]

    model = build_model(job.family, job.num_classes, **job.model_params).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=job.train.lr, momentum=job.train.momentum, weight_decay=job.train.weight_decay
    )
    total_iters = job.train.epochs * max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(job.train.warmup_iters, total_iters)
    )

    selection = (
        BestEpoch(VALIDATION_PREFIX + job.selection_metric, job.train.patience)
        if job.selection_metric is not None
        else None
    )
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and job.init_state is not None:  # a schedule step: previous weights
        with ray.train.Checkpoint(job.init_state).as_directory() as ckpt_dir:
            state = load_checkpoint(ckpt_dir, device)
        model.load_state_dict(state["model"])
    tracker = MlflowClient(job.tracking_uri) if rank == 0 else None
    # Where each rank runs (a node, then its replacement after a node failure), in the run.
    MlflowClient(job.tracking_uri).set_tag(job.run_id, f"rank{rank}_node", node_description())
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            state = load_checkpoint(ckpt_dir, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if selection is not None:
            selection.restore(state.get("best"))
        start_epoch = state["epoch"] + 1
        if tracker is not None:
            tracker.set_tag(
                job.run_id, "resumed_from_epoch", str(state["epoch"] + job.epoch_offset)
            )

    model = ray.train.torch.prepare_model(model)
    progress = ProgressSender(
        config.get("progress") if rank == 0 else None, job.train.epochs, len(loader)
    )

    timing = {"loop_entered_at": entered_at, "setup_s": time.time() - entered_at}
    for epoch in range(start_epoch, job.train.epochs):
        _maybe_inject_failure(job, epoch, rank)
        for part in epoch_aware:
            part.set_epoch(epoch)
        model.train()
        sums: dict[str, float] = {}
        batches, images, started = 0, 0, time.perf_counter()
        for batch in loader:
            losses = adapter.losses(model, batch, device)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}: {losses}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, job.train.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            batches += 1
            images += len(batch[0])
            progress.batch(epoch, batches)
        metrics = _mean_across_workers(sums, batches, device)
        elapsed = time.perf_counter() - started
        metrics["train_images_per_s"] = images * world / max(elapsed, 1e-9)
        metrics["lr"] = scheduler.get_last_lr()[0]
        metrics.update(timing)
        timing = {}
        scored = job.validation_settings is not None and epoch >= job.validation_from_epoch
        if rank == 0 and scored:
            validation_started = time.perf_counter()
            metrics.update(validation_metrics(job, unwrap(model), group))
            metrics["validation_s"] = time.perf_counter() - validation_started
            if selection is not None:
                selection.update(epoch, metrics, unwrap(model))
                metrics.update(selection.report())
        stop = selection is not None and _any_worker(
            rank == 0 and selection.should_stop(epoch), device
        )
        if selection is not None:
            metrics["stopped_early"] = float(stop)

        report_checkpoint = None
        with _checkpoint_folder(config.get("local_run_dir"), epoch) as tmp:
            if rank == 0:
                save_started = time.perf_counter()
                torch.save(
                    {
                        "model": unwrap(model).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        **({"best": selection.state()} if selection is not None else {}),
                    },
                    Path(tmp) / CHECKPOINT_FILE,
                )
                metrics["checkpoint_save_s"] = time.perf_counter() - save_started
                report_checkpoint = ray.train.Checkpoint.from_directory(tmp)
                now, step = int(time.time() * 1000), epoch + job.epoch_offset
                tracker.log_batch(
                    job.run_id,
                    metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
                )
            ray.train.report({**metrics, "epoch": epoch}, checkpoint=report_checkpoint)
        progress.epoch(epoch, metrics)
        if stop:  # `patience` epochs without a better validation score
            break
