"""Shared pieces of the detection-contract tests: tiny model sizes and a few SGD steps."""

from __future__ import annotations

import torch

# Faster R-CNN knobs small enough for an SGD step in milliseconds; the R-CNN variants add theirs.
TINY_RCNN = {
    "image_size": 64,
    "width": 8,
    "stages": 3,
    "anchor_sizes": [16, 32, 64],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "representation_size": 32,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 32,
}


def total_loss(model: torch.nn.Module, images, targets) -> torch.Tensor:
    return sum(model(images, targets).values())


def sgd_steps(model: torch.nn.Module, images, targets, steps: int, lr: float = 0.01) -> None:
    """Train on one fixed batch (the loss-dict contract: sum the named losses)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        loss = total_loss(model, images, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def two_image_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A square and a tall image with three boxes of classes 1 and 2 (fixed random pixels)."""
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 64, 64, generator=generator),
        torch.rand(3, 80, 48, generator=generator),
    ]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [40.0, 40.0, 50.0, 52.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[10.0, 20.0, 40.0, 70.0]]), "labels": torch.tensor([2])},
    ]  # fmt: skip
    return images, targets


def empty_target() -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
