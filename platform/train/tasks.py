"""Per-task pieces of the one training loop: the dataset and how a batch becomes a loss dict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sightline.train.job import TrainJob

Batch = Any
LossFn = Callable[[nn.Module, Batch, torch.device], dict[str, torch.Tensor]]


def distributed_loader(
    job: TrainJob, dataset: Dataset, collate: Callable[[list[Any]], Batch], rank: int, world: int
) -> DataLoader:
    """The default: each worker reads its shard of a shuffled epoch (DistributedSampler)."""
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=job.seed
    )
    return DataLoader(dataset, batch_size=job.train.batch_size, sampler=sampler, collate_fn=collate)


LoaderFn = Callable[[TrainJob, Dataset, Callable[[list[Any]], Batch], int, int], DataLoader]


@dataclass(frozen=True)
class TaskAdapter:
    """How a task's training data is read and batched, and how a batch becomes a loss dict.
    `loader` builds this worker's DataLoader; its sampler or batch sampler may have
    `set_epoch`, which the loop calls every epoch."""

    dataset: Callable[[TrainJob], Dataset]
    collate: Callable[[list[Any]], Batch]
    losses: LossFn
    loader: LoaderFn = distributed_loader


def _detection_dataset(job: TrainJob) -> Dataset:
    from sightline.config import DetectionData
    from sightline.data.detection import load_task_split, task_dataset

    data = DetectionData.model_validate(job.data)
    split = load_task_split(data, "train", Path(job.project_root), job.task)
    dataset = task_dataset(split, job.task)
    if job.proposals_path is None:
        return dataset
    from sightline.data.proposals import DatasetWithProposals, load_proposals

    return DatasetWithProposals(dataset, load_proposals(job.proposals_path), job.proposals_path)


def _detection_collate(batch: list[Any]) -> Batch:
    from sightline.data.detection import collate

    return collate(batch)


def _detection_losses(
    model: nn.Module, batch: Batch, device: torch.device
) -> dict[str, torch.Tensor]:
    images, targets = batch
    images = [img.to(device) for img in images]
    targets = [
        {k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets
    ]
    return model(images, targets)


ADAPTERS: dict[str, TaskAdapter] = {
    task: TaskAdapter(_detection_dataset, _detection_collate, _detection_losses)
    for task in ("detect", "segment", "keypoints")
}


def _events1d_dataset(job: TrainJob) -> Dataset:
    """The train split's traces: (L,) dB tensors and their segment/label targets."""
    from sightline.config import OTDRData
    from sightline.data.otdr_dataset import TraceDataset

    data = OTDRData.model_validate(job.data)
    root = data.root if data.root.is_absolute() else Path(job.project_root) / data.root
    return TraceDataset.load(root, "train")


def _events1d_collate(batch: list[Any]) -> Batch:
    from sightline.data.otdr_dataset import collate

    return collate(batch)


# Traces and targets move to the device exactly as images and box targets do.
ADAPTERS["events1d"] = TaskAdapter(_events1d_dataset, _events1d_collate, _detection_losses)


def _identity_dataset(job: TrainJob) -> Dataset:
    """The training identities' images (labels 0..P-1, the identities in sorted order)."""
    from sightline.config import IdentityData
    from sightline.data.identity import IdentityDataset, load_identity_splits

    data = IdentityData.model_validate(job.data)
    records, splits = load_identity_splits(
        data, Path(job.project_root), job.task_options["min_unseen_images"]
    )
    return IdentityDataset(
        splits.records(records, "train"), image_size=data.image_size, channels=data.channels
    )


def _identity_loader(
    job: TrainJob, dataset: Dataset, collate: Callable[[list[Any]], Batch], rank: int, world: int
) -> DataLoader:
    """P identities x K images per batch (positives and negatives in every batch), each rank
    its own batches of one shared shuffle."""
    from sightline.data.identity import IdentityBatchSampler

    sampler = IdentityBatchSampler(
        dataset.labels,  # type: ignore[attr-defined]
        identities_per_batch=job.task_options["identities_per_batch"],
        images_per_identity=job.task_options["images_per_identity"],
        seed=job.seed,
        num_replicas=world,
        rank=rank,
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)


def _identity_collate(batch: list[tuple[torch.Tensor, int]]) -> Batch:
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _identity_losses(
    model: nn.Module, batch: Batch, device: torch.device
) -> dict[str, torch.Tensor]:
    images, labels = batch
    return model(images.to(device), {"labels": labels.to(device)})


ADAPTERS["embed"] = TaskAdapter(
    _identity_dataset, _identity_collate, _identity_losses, loader=_identity_loader
)


def adapter_for(task: str) -> TaskAdapter:
    try:
        return ADAPTERS[task]
    except KeyError:
        raise KeyError(f"no training adapter for task {task!r}; have {sorted(ADAPTERS)}") from None
