"""The parent run's figure: the searched metric against each searched parameter."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure


def metric_vs_params_figure(points: list[tuple[dict[str, Any], float]], metric: str) -> Figure:
    """One panel per parameter; categorical values (e.g. anchor lists) on a labelled axis."""
    names = sorted({name for config, _ in points for name in config})
    figure = Figure(figsize=(4.5 * max(1, len(names)), 3.6), layout="constrained")
    axes = figure.subplots(1, max(1, len(names)), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        values = [str(config.get(name)) for config, _ in points]
        try:
            xs: list[Any] = [float(v) for v in values]
        except ValueError:
            labels = sorted(set(values))
            xs = [labels.index(v) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.scatter(xs, [score for _, score in points], color="tab:blue")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    figure.suptitle(f"{metric} of each finished trial")
    return figure
