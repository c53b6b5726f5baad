"""Benchmark: how each detector's inference cost grows with the work (the seed's argument).

R-CNN and Fast R-CNN time per image against proposals per image (the same images and boxes),
the sliding window against the number of windows it classifies, and every 2-D detector against
image size. Writes docs/benchmarks/detector-costs.md (+ PNG plots beside it) and an MLflow run.

    python bench/cost_curves.py [--params params.yaml]
    sightline bench cost_curves

Cost, not accuracy: the networks are built from the demo params with untrained weights (the
arithmetic per image is the same as a trained model's; an untrained R-CNN scores with its
softmax head since its SVMs are unfitted, which costs the same per region). One torch thread,
one image per call, median over the images, in one process, so the slopes and ratios are what
to read; absolute milliseconds depend on the machine and its load (printed).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from common import arguments, publish
from matplotlib import pyplot as plt
from pycocotools.coco import COCO
from torch import nn
from torch.nn import functional as F

from sightline.config import Settings, load_settings
from sightline.data.synth.detection import generate
from sightline.data.synth.params import SynthDetection
from sightline.models.registry import family as lookup_family
from sightline.models.sliding_window import WindowGrid

PROPOSAL_COUNTS = (50, 100, 300, 1000, 2000)
STRIDE_FRACTIONS = (0.66, 0.5, 0.33, 0.25, 0.18)
IMAGE_SIZES = (128, 256, 512, 1024)
SIZE_FAMILIES = ("rcnn", "fast_rcnn", "faster_rcnn", "mask_rcnn", "yolo", "ssd", "sliding_window")
# The sliding window's cost grows with the square of the image side at a fixed window grid:
# above this size one image takes minutes on CPU, so its curve stops here (the trend is clear).
SLIDING_WINDOW_MAX_SIZE = 512
CROP_SIZES = (32, 64, 128, 224)  # R-CNN's warp side; the paper's is 227 px (AlexNet)
IMAGES = 4
CLAIM_RATIO = 10.0  # the seed: Fast R-CNN tests ~10x (up to 213x) faster than R-CNN


@dataclass(frozen=True)
class Curve:
    family: str
    xs: list[float]
    ms: list[float]  # median milliseconds per image at each x

    def fit(self) -> tuple[float, float]:
        """Least-squares (intercept ms, slope ms per unit of x)."""
        slope, intercept = np.polyfit(self.xs, self.ms, 1)
        return float(intercept), float(slope)


def sample_images(count: int, seed: int = 0) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Synthetic scenes (128 px) and their COCO train set (for data-derived params, e.g. YOLO
    anchors)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), SynthDetection(seed=seed, train=count, val=0, test=0))
        coco = COCO(str(Path(tmp) / "annotations" / "train.json"))
        from PIL import Image

        images = []
        for img in coco.dataset["images"][:count]:
            with Image.open(Path(tmp) / "images" / img["file_name"]) as im:
                array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            images.append(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        return images, coco.dataset


def resized(images: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    return [
        F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        for img in images
    ]


def random_proposals(count: int, size: int, seed: int) -> torch.Tensor:
    """`count` xyxy boxes inside a size x size image, 8 px to half the image per side."""
    generator = torch.Generator().manual_seed(seed)
    wh = 8 + torch.rand(count, 2, generator=generator) * (size / 2 - 8)
    xy = torch.rand(count, 2, generator=generator) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def build(settings: Settings, name: str, coco: dict[str, Any], **overrides: Any) -> nn.Module:
    fam = lookup_family(name)
    params = fam.params_from_data({**settings.model_params(name), **overrides}, coco)
    params.pop("weights", None)
    model = fam.build(len(coco["categories"]) + 1, **params)
    return model.eval()


@torch.no_grad()
def median_ms(*calls: Callable[[int], Any], count: int, rounds: int = 2) -> list[float]:
    """Median wall time of each call(i) over i < count and `rounds` passes, the calls
    interleaved image by image (so machine load hits them alike), after one warm-up each."""
    for call in calls:
        call(0)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for index in range(count):
            for call, spent in zip(calls, times, strict=True):
                start = time.perf_counter()
                call(index)
                spent.append((time.perf_counter() - start) * 1000.0)
    return [statistics.median(spent) for spent in times]


def proposal_curves(
    settings: Settings, images: list[torch.Tensor], coco: dict[str, Any]
) -> list[Curve]:
    """R-CNN and Fast R-CNN on the same images and boxes, timed interleaved."""
    names = ("rcnn", "fast_rcnn")
    models = [build(settings, name, coco) for name in names]
    size = int(images[0].shape[-1])
    ms: list[list[float]] = [[] for _ in names]
    for count in PROPOSAL_COUNTS:
        boxes = [random_proposals(count, size, seed) for seed in range(len(images))]
        calls = [lambda i, m=model, b=boxes: m([images[i]], proposals=[b[i]]) for model in models]
        for curve_ms, value in zip(ms, median_ms(*calls, count=len(images)), strict=True):
            curve_ms.append(value)
    return [
        Curve(name, [float(c) for c in PROPOSAL_COUNTS], values)
        for name, values in zip(names, ms, strict=True)
    ]


def crop_curves(
    settings: Settings, images: list[torch.Tensor], coco: dict[str, Any]
) -> tuple[Curve, Curve]:
    """R-CNN ms per image at 300 proposals against its warp (crop) side, the per-region cost
    the seed's 10x-213x rests on; Fast R-CNN on the same boxes, interleaved, beside it."""
    size = int(images[0].shape[-1])
    boxes = [random_proposals(300, size, seed) for seed in range(len(images))]
    fast = build(settings, "fast_rcnn", coco)
    rcnn_ms, fast_ms = [], []
    for crop in CROP_SIZES:
        model = build(settings, "rcnn", coco, crop_size=crop)
        slow_call = lambda i, m=model: m([images[i]], proposals=[boxes[i]])  # noqa: E731
        fast_call = lambda i: fast([images[i]], proposals=[boxes[i]])  # noqa: E731
        slow, quick = median_ms(slow_call, fast_call, count=2)
        rcnn_ms.append(slow)
        fast_ms.append(quick)
    xs = [float(c) for c in CROP_SIZES]
    return Curve("rcnn", xs, rcnn_ms), Curve("fast_rcnn", xs, fast_ms)


def window_curve(
    settings: Settings, images: list[torch.Tensor], coco: dict[str, Any]
) -> tuple[Curve, list[float]]:
    params = settings.model_params("sliding_window")
    size = int(images[0].shape[-1])
    counts, ms = [], []
    for fraction in STRIDE_FRACTIONS:
        grid = WindowGrid(tuple(params["window_sizes"]), tuple(params["aspect_ratios"]), fraction)
        counts.append(float(grid.windows(size, size).shape[0]))
        model = build(settings, "sliding_window", coco, stride_fraction=fraction)
        ms += median_ms(lambda i, m=model: m([images[i]]), count=len(images))
    return Curve("sliding_window", counts, ms), list(STRIDE_FRACTIONS)


def size_curves(
    settings: Settings, images: list[torch.Tensor], coco: dict[str, Any]
) -> list[Curve]:
    curves = []
    for name in SIZE_FAMILIES:
        sizes = [s for s in IMAGE_SIZES if name != "sliding_window" or s <= SLIDING_WINDOW_MAX_SIZE]
        ms = []
        for size in sizes:
            model = build(settings, name, coco, image_size=size)
            scaled = resized(images, size)
            if lookup_family(name).uses_proposals:
                boxes = [random_proposals(300, size, seed) for seed in range(len(scaled))]
                run = lambda i, m=model, x=scaled, b=boxes: m([x[i]], proposals=[b[i]])  # noqa: E731
            else:
                run = lambda i, m=model, x=scaled: m([x[i]])  # noqa: E731
            ms += median_ms(run, count=2 if size >= 512 else len(scaled), rounds=1)
        curves.append(Curve(name, [float(s) for s in sizes], ms))
    return curves


def crossover(rcnn: Curve, fast: Curve, ratio: float = CLAIM_RATIO) -> float | None:
    """Proposals per image at which R-CNN's fitted time is `ratio` x Fast R-CNN's (None: never,
    when R-CNN's per-proposal cost is under `ratio` x Fast R-CNN's)."""
    a_r, b_r = rcnn.fit()
    a_f, b_f = fast.fit()
    if b_r <= ratio * b_f:
        return None
    count = (ratio * a_f - a_r) / (b_r - ratio * b_f)
    return max(count, 0.0)


def crop_verdict(rcnn: Curve, fast: Curve) -> str:
    ratios = [r / f for r, f in zip(rcnn.ms, fast.ms, strict=True)]
    reached = [int(x) for x, ratio in zip(rcnn.xs, ratios, strict=True) if ratio >= CLAIM_RATIO]
    if not reached:
        return "No crop side tried gives the seed's 10x at 300 proposals."
    return (
        f"At 300 proposals the seed's 10x holds from a **{reached[0]} px warp**: the claim is "
        "about the per-region CNN pass (the paper's 227 px AlexNet crops), which Fast R-CNN "
        "replaces by RoI pooling on one shared feature map."
    )


def plot(curves: list[Curve], xlabel: str, path: Path, *, log: bool = False) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    for curve in curves:
        axes.plot(curve.xs, curve.ms, marker="o", label=curve.family)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("ms per image (1 thread)")
    if log:
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(
    proposals: list[Curve],
    windows: Curve,
    fractions: list[float],
    sizes: list[Curve],
    crops: tuple[Curve, Curve],
    crop_size: int,
) -> str:
    rcnn, fast = proposals
    crop_rcnn, crop_fast = crops
    (a_r, b_r), (a_f, b_f) = rcnn.fit(), fast.fit()
    cross = crossover(rcnn, fast)
    asymptote = b_r / b_f if b_f > 0 else float("inf")
    lines = [
        "# Detector inference cost against the work",
        "",
        "Generated by `sightline bench cost_curves` (`python bench/cost_curves.py`), one run: "
        f"demo-profile networks (untrained weights: cost, not accuracy), {IMAGES} synthetic "
        "images, one image per call, one torch thread, median per image; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start.",
        "",
        "## R-CNN vs Fast R-CNN against proposals per image (128 px images)",
        "",
        "![proposals](cost-proposals.png)",
        "",
        _row(["proposals / image", *[int(x) for x in rcnn.xs]]),
        _row(["---"] * (len(rcnn.xs) + 1)),
        _row(["rcnn ms", *[f"{v:.1f}" for v in rcnn.ms]]),
        _row(["fast_rcnn ms", *[f"{v:.1f}" for v in fast.ms]]),
        _row(["ratio", *[f"{r / f:.1f}x" for r, f in zip(rcnn.ms, fast.ms, strict=True)]]),
        "",
        f"Fitted (least squares): R-CNN {a_r:.1f} ms + {b_r * 1000:.1f} µs per proposal; "
        f"Fast R-CNN {a_f:.1f} ms + {b_f * 1000:.1f} µs per proposal. R-CNN pays per region "
        f"(a warp and a CNN pass each); Fast R-CNN shares the convolution and pays only RoI "
        f"pooling and the FC heads per region, so the ratio tends to {asymptote:.1f}x with "
        "many proposals. "
        + (
            f"The seed's 10x holds from about **{cross:.0f} proposals per image** on this "
            "machine with these networks."
            if cross is not None
            else "With these networks the per-proposal costs differ by less than 10x, so "
            "**no proposal count** gives the seed's 10x: our R-CNN warps to "
            f"{crop_size} px crops through a small CNN, not 227 px through "
            "AlexNet; the seed's 213x comes from that per-region cost."
        ),
        "",
        "R-CNN's per-region cost against its warp side (300 proposals per image, Fast R-CNN "
        "on the same boxes timed interleaved):",
        "",
        _row(["crop side (px)", *[int(x) for x in crop_rcnn.xs]]),
        _row(["---"] * (len(crop_rcnn.xs) + 1)),
        _row(["rcnn ms", *[f"{v:.0f}" for v in crop_rcnn.ms]]),
        _row(["fast_rcnn ms", *[f"{v:.0f}" for v in crop_fast.ms]]),
        _row(
            [
                "rcnn / fast_rcnn",
                *[f"{r / f:.1f}x" for r, f in zip(crop_rcnn.ms, crop_fast.ms, strict=True)],
            ]
        ),
        "",
        crop_verdict(crop_rcnn, crop_fast),
        "",
        "## Sliding window against the number of windows (128 px images)",
        "",
        "![windows](cost-windows.png)",
        "",
        _row(["stride fraction", *fractions]),
        _row(["---"] * (len(fractions) + 1)),
        _row(["windows / image", *[int(x) for x in windows.xs]]),
        _row(["ms", *[f"{v:.1f}" for v in windows.ms]]),
        "",
        f"Fitted: {windows.fit()[0]:.1f} ms + {windows.fit()[1] * 1000:.1f} µs per window: the "
        "cost is linear in windows, and windows grow with the square of image side over stride.",
        "",
        "## Every detector against image size",
        "",
        "![image size](cost-image-size.png)",
        "",
        _row(["family", *[f"{s} px" for s in IMAGE_SIZES]]),
        _row(["---"] * (len(IMAGE_SIZES) + 1)),
    ]
    for curve in sizes:
        cells = {int(x): f"{v:.0f}" for x, v in zip(curve.xs, curve.ms, strict=True)}
        lines.append(_row([curve.family, *[cells.get(s, "—") for s in IMAGE_SIZES]]))
    lines += [
        "",
        "ms per image; R-CNN and Fast R-CNN with 300 proposals per image at every size; the "
        f"sliding window stops at {SLIDING_WINDOW_MAX_SIZE} px (its window grid is fixed in "
        "pixels, so windows, and time, grow with the square of the side).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images, coco = sample_images(IMAGES)
    proposals = proposal_curves(settings, images, coco)
    windows, fractions = window_curve(settings, images, coco)
    sizes = size_curves(settings, images, coco)
    crops = crop_curves(settings, images, coco)
    out = settings.path("docs/benchmarks")
    out.mkdir(parents=True, exist_ok=True)
    plot(proposals, "proposals per image", out / "cost-proposals.png")
    plot([windows], "windows per image", out / "cost-windows.png")
    plot(sizes, "image side (px)", out / "cost-image-size.png", log=True)
    text = report(
        proposals, windows, fractions, sizes, crops, int(settings.model_params("rcnn")["crop_size"])
    )
    rcnn, fast = proposals
    publish(
        settings,
        name="detector-costs",
        group="detection",
        report=text,
        metrics={
            "rcnn_us_per_proposal": rcnn.fit()[1] * 1000,
            "fast_rcnn_us_per_proposal": fast.fit()[1] * 1000,
            "sliding_window_us_per_window": windows.fit()[1] * 1000,
            "rcnn_vs_fast_at_2000": rcnn.ms[-1] / fast.ms[-1],
        },
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
