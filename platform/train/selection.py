"""Which epoch's weights a training keeps, and when it stops: the recipe's `keep_epoch` and
`patience` (params.yaml `train`).

On a small real dataset the last epoch is rarely the best one: the model starts to fit the
training images' noise. With `keep_epoch: best` rank 0 scores the model on the validation split
after every epoch (the task group's primary metric, `val_<metric>` in the run) and keeps a copy
of the best weights so far; the model the train stage logs is that copy. `patience` stops the
training once that many epochs have passed without a better score. The copy travels in every
checkpoint, so a training resumed after a worker failure still knows its best epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

VALIDATION_PREFIX = "val_"  # per-epoch validation scores, apart from the evaluate stage's


@dataclass
class BestEpoch:
    """The best validation score so far (higher is better), its epoch and its weights."""

    metric: str  # the validation metric, e.g. "val_map"
    patience: int | None = None
    score: float = -math.inf
    epoch: int = -1
    weights: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        if self.metric not in metrics:
            raise KeyError(
                f"the validation scores have no {self.metric!r} to choose the epoch by "
                f"(they have {sorted(metrics)})"
            )
        score = metrics[self.metric]
        if math.isfinite(score) and score > self.score:
            self.score, self.epoch = score, epoch
            self.weights = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }

    def should_stop(self, epoch: int) -> bool:
        """Whether `patience` epochs have passed since the best one (after `epoch` ended)."""
        return self.patience is not None and self.epoch >= 0 and epoch - self.epoch >= self.patience

    def report(self) -> dict[str, float]:
        """What each epoch's report carries: the epoch kept so far and its score."""
        return {"selected_epoch": float(self.epoch), f"selected_{self.metric}": self.score}

    def state(self) -> dict[str, Any]:
        return {"model": self.weights, "epoch": self.epoch, "score": self.score}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state is not None and state.get("model") is not None:
            self.weights, self.epoch, self.score = state["model"], state["epoch"], state["score"]


def kept_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights to keep: the best epoch's where the training chose one."""
    best = state.get("best")
    if best is not None and best.get("model") is not None:
        return best["model"]
    return state["model"]
