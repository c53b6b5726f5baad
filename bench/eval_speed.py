"""Benchmark: COCO evaluation time, pycocotools vs faster-coco-eval, against the number of
images and of instances per image, and whether the twelve summary numbers agree exactly.
Writes the "Evaluation speed" section of docs/benchmarks/platform.md and an MLflow run.

    python bench/eval_speed.py [--params params.yaml]
    sightline bench eval_speed

The detections are the ground truth jittered (about 80 % found, 10 % with the wrong class)
plus false positives, scored at random: enough to exercise every matching branch. Cases: a
grid of images x instances (bbox), our synthetic detection set (bbox and segm from its
polygons), and a crowd / RLE case (segm and bbox with iscrowd regions). Both libraries run on
the same inputs in one process, interleaved (A, B, A, B), so the ratio is what to read.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import arguments, publish, replace_section
from faster_coco_eval import COCO as FastCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sightline.config import load_settings
from sightline.data.synth.detection import generate
from sightline.data.synth.params import SynthDetection

GridCase = tuple[int, int]  # images, instances per image
GRID: tuple[GridCase, ...] = ((50, 10), (200, 10), (800, 10), (200, 2), (200, 40))
REPEATS = 2
Dataset = dict[str, Any]
Results = list[dict[str, Any]]


@dataclass(frozen=True)
class Case:
    name: str
    iou_type: str
    ground_truth: Dataset
    detections: Results

    @property
    def instances(self) -> int:
        return len(self.ground_truth["annotations"])


@dataclass(frozen=True)
class Timing:
    case: Case
    pycocotools_s: float
    faster_s: float
    max_abs_difference: float

    @property
    def speedup(self) -> float:
        return self.pycocotools_s / self.faster_s

    @property
    def exact(self) -> bool:
        return self.max_abs_difference == 0.0


def _jitter(rng: np.random.Generator, box: list[float], scale: float = 0.1) -> list[float]:
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0.0, scale, 4) * [w, h, w, h]
    return [round(float(v), 2) for v in (x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh))]


def detections_for(ground_truth: Dataset, seed: int) -> Results:
    """Jittered ground truth plus half as many false positives per image, random scores."""
    rng = np.random.default_rng(seed)
    categories = [c["id"] for c in ground_truth["categories"]]
    sizes = {img["id"]: (img["width"], img["height"]) for img in ground_truth["images"]}
    results: Results = []
    for ann in ground_truth["annotations"]:
        if rng.random() < 0.8:
            wrong = rng.random() < 0.1
            category = int(rng.choice(categories)) if wrong else ann["category_id"]
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": category,
                    "bbox": _jitter(rng, ann["bbox"]),
                    "score": round(float(rng.random()), 5),
                }
            )
        if rng.random() < 0.5:
            width, height = sizes[ann["image_id"]]
            w, h = rng.uniform(2, width / 3), rng.uniform(2, height / 3)
            box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": int(rng.choice(categories)),
                    "bbox": [round(float(v), 2) for v in box],
                    "score": round(float(rng.random()), 5),
                }
            )
    return results


def grid_case(images: int, per_image: int, seed: int = 0, size: int = 512) -> Case:
    rng = np.random.default_rng(seed)
    annotations = []
    for image_id in range(1, images + 1):
        for _ in range(per_image):
            w, h = rng.uniform(4, size / 2.5, 2)
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
    ground_truth = {
        "images": [
            {"id": i, "width": size, "height": size, "file_name": f"{i}.png"}
            for i in range(1, images + 1)
        ],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in (1, 2, 3)],
    }
    name = f"{images} images x {per_image} instances"
    return Case(name, "bbox", ground_truth, detections_for(ground_truth, seed + 1))


def _rle_of(box: list[float], height: int, width: int) -> dict[str, Any]:
    x, y, w, h = (round(v) for v in box)
    mask = np.zeros((height, width), np.uint8)
    mask[max(0, y) : y + max(1, h), max(0, x) : x + max(1, w)] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def segm_detections(ground_truth: Dataset, seed: int) -> Results:
    """Box detections turned into rectangular RLE masks (what a mask head would return)."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in ground_truth["images"]}
    return [
        {
            **{k: v for k, v in det.items() if k != "bbox"},
            "segmentation": _rle_of(det["bbox"], *sizes[det["image_id"]]),
        }
        for det in detections_for(ground_truth, seed)
    ]


def crowd_case(seed: int = 3) -> Dataset:
    """Our synthetic-like boxes with every fourth annotation a crowd region stored as RLE."""
    ground_truth = grid_case(60, 4, seed=seed, size=96).ground_truth
    for index, ann in enumerate(ground_truth["annotations"]):
        ann["segmentation"] = _rle_of(ann["bbox"], 96, 96)
        ann["iscrowd"] = int(index % 4 == 3)
        ann["area"] = float(
            mask_utils.area(
                ann["segmentation"] | {"counts": ann["segmentation"]["counts"].encode()}
            )
        )
    return ground_truth


def synthetic_set(images: int, seed: int) -> Dataset:
    """The project's own synthetic detection data (polygons), generated into a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), SynthDetection(seed=seed, train=0, val=images, test=0))
        coco = COCO(str(Path(tmp) / "annotations" / "val.json"))
        return copy.deepcopy(coco.dataset)


def all_cases(synthetic_images: int = 100) -> list[Case]:
    cases = [grid_case(n, k) for n, k in GRID]
    ours = synthetic_set(synthetic_images, seed=7)
    cases.append(
        Case(f"synthetic set ({synthetic_images} images)", "bbox", ours, detections_for(ours, 8))
    )
    cases.append(
        Case(f"synthetic set ({synthetic_images} images)", "segm", ours, segm_detections(ours, 8))
    )
    crowd = crowd_case()
    cases.append(Case("crowd / RLE (60 images)", "bbox", crowd, detections_for(crowd, 9)))
    cases.append(Case("crowd / RLE (60 images)", "segm", crowd, segm_detections(crowd, 9)))
    return cases


def pycocotools_stats(case: Case) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(case.ground_truth)
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(case.detections)), case.iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], dtype=float)


def faster_stats(case: Case) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = FastCOCO(copy.deepcopy(case.ground_truth))
        evaluator = COCOeval_faster(
            gt, gt.loadRes(copy.deepcopy(case.detections)), case.iou_type, print_function=print
        )
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], dtype=float)


def _timed(run: Callable[[Case], np.ndarray], case: Case) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    stats = run(case)
    return stats, time.perf_counter() - start


def measure(case: Case, repeats: int = REPEATS) -> Timing:
    """Median time of each library over `repeats` interleaved runs, and their largest gap."""
    slow, fast, gap = [], [], 0.0
    for _ in range(repeats):
        a, ta = _timed(pycocotools_stats, case)
        b, tb = _timed(faster_stats, case)
        slow.append(ta)
        fast.append(tb)
        gap = max(gap, float(np.max(np.abs(a - b))))
    return Timing(case, statistics.median(slow), statistics.median(fast), gap)


def section(timings: list[Timing]) -> str:
    exact = all(t.exact for t in timings)
    rounded = all(t.max_abs_difference < 5e-7 for t in timings)
    lines = [
        "## Evaluation speed: pycocotools vs faster-coco-eval",
        "",
        "Generated by `sightline bench eval_speed` (`python bench/eval_speed.py`); one run, "
        f"both libraries interleaved, median of {REPEATS}; load average at the start "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| case | iouType | GT instances | pycocotools s | faster-coco-eval s | speed-up "
        "| max abs difference of the 12 numbers |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t.case.name} | {t.case.iou_type} | {t.case.instances} | {t.pycocotools_s:.3f} | "
            f"{t.faster_s:.3f} | {t.speedup:.1f}x | {t.max_abs_difference:.3g} |"
        )
    speedups = [t.speedup for t in timings]
    verdict = (
        "All twelve numbers agree exactly on every case: faster-coco-eval could be adopted."
        if exact
        else (
            "The twelve numbers do **not** agree exactly on every case"
            + (
                " (they differ in the last bits of a float, below the 6 decimals Sightline reports)"
                if rounded
                else ""
            )
            + ", so Sightline keeps pycocotools (the rule: adopt only on exact agreement). "
            "Evaluation is also a small part of an evaluate stage, whose time goes to prediction."
        )
    )
    lines += [
        "",
        f"Speed-up {min(speedups):.1f}x to {max(speedups):.1f}x "
        f"(median {statistics.median(speedups):.1f}x). {verdict}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    timings = [measure(case) for case in all_cases()]
    text = section(timings)
    report = replace_section(settings.path("docs/benchmarks/platform.md"), "eval_speed", text)
    publish(
        settings,
        name="platform",
        group="detection",
        report=report,
        metrics={
            "eval_speedup_median": statistics.median(t.speedup for t in timings),
            "eval_exact_cases": sum(t.exact for t in timings),
            "eval_cases": len(timings),
        },
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
