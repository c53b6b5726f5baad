"""Figures logged as MLflow artifacts: precision-recall curves and prediction grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure  # Figure objects, not pyplot: no global state, no GUI
from matplotlib.patches import Rectangle


def precision_recall_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set(xlabel="recall", ylabel="precision (mean over classes)", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def detection_grid_figure(
    images: Sequence[torch.Tensor],
    truths: Sequence[dict[str, torch.Tensor]],
    predictions: Sequence[dict[str, torch.Tensor]],
    class_names: Sequence[str],
    score_threshold: float,
) -> Figure:
    """Each image with true boxes (green) and predicted boxes above the threshold (red)."""
    cols = min(4, len(images))
    rows = max(1, -(-len(images) // cols))
    fig = Figure(figsize=(3 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, truth, pred in zip(axes.flat, images, truths, predictions, strict=False):
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        for box in truth["boxes"].tolist():
            ax.add_patch(_box(box, "lime"))
        keep = pred["scores"] >= score_threshold
        for box, label, score in zip(
            pred["boxes"][keep].tolist(),
            pred["labels"][keep].tolist(),
            pred["scores"][keep].tolist(),
            strict=True,
        ):
            ax.add_patch(_box(box, "red"))
            name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
            ax.text(
                box[0],
                box[1],
                f"{name} {score:.2f}",
                color="white",
                fontsize=6,
                bbox={"facecolor": "red", "alpha": 0.6, "pad": 1, "linewidth": 0},
            )
    fig.suptitle(f"green: truth, red: predicted (score >= {score_threshold})", fontsize=9)
    fig.tight_layout()
    return fig


def _box(xyxy: list[float], colour: str) -> Rectangle:
    x1, y1, x2, y2 = xyxy
    return Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2)
