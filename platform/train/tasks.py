"""What the one training loop asks of a task: its dataset, how samples are batched, how a batch
becomes a loss dict, and the task group that supplies them.

The task groups (sightline.workloads) hold the adapters and hand them in: training knows the
`TaskGroup` protocol, never the groups, so the dependency points one way (workloads -> train).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sightline.train.job import TrainJob

if TYPE_CHECKING:
    from sightline.artifacts import ModelRecord
    from sightline.config import Settings

# A batch is (inputs, targets); its first element has one entry per image / trace, which is
# what the loop counts for its throughput.
BatchT = TypeVar("BatchT", bound=tuple[Sized, Any])
Collate = Callable[[list[Any]], BatchT]
LossFn = Callable[[nn.Module, BatchT, torch.device], dict[str, torch.Tensor]]


def distributed_loader(
    job: TrainJob, dataset: Dataset, collate: Collate, rank: int, world: int
) -> DataLoader:
    """The default: each worker reads its shard of a shuffled epoch (DistributedSampler)."""
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=job.seed
    )
    return DataLoader(dataset, batch_size=job.train.batch_size, sampler=sampler, collate_fn=collate)


LoaderFn = Callable[[TrainJob, Dataset, Collate, int, int], DataLoader]


@dataclass(frozen=True)
class TaskAdapter(Generic[BatchT]):
    """How a task's training data is read and batched, and how a batch becomes a loss dict.
    `loader` builds this worker's DataLoader; its sampler or batch sampler may have
    `set_epoch`, which the loop calls every epoch."""

    dataset: Callable[[TrainJob], Dataset]
    collate: Collate[BatchT]
    losses: LossFn[BatchT]
    loader: LoaderFn = distributed_loader


# The loss-dict contract's batch: a list of inputs (images, traces) and one target dict each.
TargetsBatch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]


def targets_losses(
    model: nn.Module, batch: TargetsBatch, device: torch.device
) -> dict[str, torch.Tensor]:
    """`model(inputs, targets)` with inputs and target tensors moved to the device."""
    inputs, targets = batch
    moved = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return model([x.to(device) for x in inputs], moved)


class TaskGroup(Protocol):
    """What training needs from a task group (each `sightline.workloads` Workload is one)."""

    name: str
    primary_metric: str  # what the best epoch is chosen by (validation), and the registry

    def train_adapter(self, task: str) -> TaskAdapter[Any]: ...

    def validation_scores(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> dict[str, float]: ...

    def after_training(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> Mapping[str, Any]: ...
