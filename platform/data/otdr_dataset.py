"""OTDR traces as a PyTorch dataset for the training loop (the 1-D detection contract).

An item is `(samples, target)`: samples a float32 tensor (L,) in dB, the target
{"segments": (N, 2) float32 in samples, "labels": (N,) int64 in 1..4}. Traces have different
lengths, so a batch stays a tuple of lists (`collate`), as 2-D detection batches do; the models
pad inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from sightline.data.otdr import EVENT_TYPES, Trace, load_split

Item = tuple[Tensor, dict[str, Tensor]]


class TraceDataset(Dataset):
    """The traces of one split, converted to tensors once (a split is a few MB)."""

    def __init__(self, traces: Sequence[Trace]) -> None:
        self.traces = list(traces)
        self._items = [_item(trace) for trace in self.traces]

    @classmethod
    def load(cls, root: Path, split: str) -> TraceDataset:
        return cls(load_split(root, split))

    @property
    def class_names(self) -> list[str]:
        return list(EVENT_TYPES)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Item:
        return self._items[index]


def _item(trace: Trace) -> Item:
    targets = trace.targets()
    return torch.from_numpy(trace.samples.copy()), {
        "segments": torch.from_numpy(targets["segments"]),
        "labels": torch.from_numpy(targets["labels"]),
    }


def collate(batch: list[Item]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    traces, targets = zip(*batch, strict=True)
    return list(traces), list(targets)
