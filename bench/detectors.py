"""Benchmark: every trained 2-D family on the same test split, in one process, and the seed's
claims checked on our own numbers. Writes docs/benchmarks/detectors.md and an MLflow run.

    python bench/detectors.py [--params params.yaml] [--split test]
    sightline bench detectors

Timings are taken in this one run with the same thread count for every family, so the ratios
between families are what to read; absolute milliseconds depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import torch
from common import publish, train_throughput

from sightline.artifacts import load_trained, model_dir, proposals_for
from sightline.config import Settings, load_settings
from sightline.data.detection import DetectionSplit, load_rgb_image, load_task_split
from sightline.data.proposals import mean_proposals_per_image
from sightline.evaluate.detection import evaluate_detector
from sightline.models import FAMILIES
from sightline.models.selective_search import SelectiveSearch
from sightline.track.runs import use_tracking

COLUMNS = ["map", "map_50", "map_small", "train_images_per_s", "inference_ms_per_image"]
SEARCH_SAMPLE = 20  # images timed for selective search (it runs once per dataset version)
# The params.yaml keys this benchmark reads; dvc.yaml lists exactly these (a literal: the test
# reads it without running the script's imports).
STAGE_PARAMS = ("detection_data", "proposals")


@dataclass
class Row:
    family: str
    task: str
    metrics: dict[str, float]
    parameters: int
    proposals_per_image: float | None
    notes: list[str] = field(default_factory=list)


def proposals_per_image(model: torch.nn.Module, proposals: dict | None) -> float | None:
    """Selective-search boxes per image, or the RPN's top-N at test time; None without any."""
    if proposals is not None:
        return mean_proposals_per_image(proposals)
    rpn = getattr(model, "rpn", None)
    if rpn is not None:
        return float(rpn._post_nms_top_n["testing"])
    return None


def selective_search_ms(settings: Settings, split_name: str) -> float:
    """Selective search per image, as the `proposals` stage runs it (one process)."""
    cfg = settings.proposals
    search = SelectiveSearch(cfg.mode, cfg.max_proposals, cfg.min_size, cfg.max_side)
    split = DetectionSplit.load(settings.detection_data, split_name, settings.project_root)
    ids = split.image_ids[:SEARCH_SAMPLE]
    images = [load_rgb_image(split.image_path(i), f"image id {i}") for i in ids]
    started = time.perf_counter()
    for image in images:
        search(image)
    return 1000 * (time.perf_counter() - started) / max(1, len(images))


def measure(settings: Settings, family: str, split_name: str) -> Row | None:
    directory = model_dir(settings, family)
    if not (directory / "model.json").is_file():
        return None
    model, record = load_trained(directory)
    split = load_task_split(settings.detection_data, split_name, settings.project_root, record.task)
    proposals = proposals_for(settings, family, split_name)
    evaluation = evaluate_detector(
        model, split, task=record.task, with_figures=False, proposals=proposals
    )
    metrics = {**evaluation.metrics, "train_images_per_s": train_throughput(record.run_id)}
    if proposals is not None:  # precomputed: its time is measured once, apart from the model's
        metrics["selective_search_ms_per_image"] = selective_search_ms(settings, split_name)
    notes = ["scored on its keypoint class only"] if record.task == "keypoints" else []
    return Row(
        family=family,
        task=record.task,
        metrics=metrics,
        parameters=sum(p.numel() for p in model.parameters()),
        proposals_per_image=proposals_per_image(model, proposals),
        notes=notes,
    )


def claims(rows: dict[str, Row]) -> list[tuple[str, str]]:
    """The seed's claims judged on the numbers above ('not measured' if a family is missing)."""

    def ms(family: str) -> float:
        return rows[family].metrics["inference_ms_per_image"]

    def with_search(family: str) -> float:
        return ms(family) + rows[family].metrics.get("selective_search_ms_per_image", 0.0)

    def box_map(family: str) -> float:
        return rows[family].metrics["map"]

    def judged(needed: list[str], holds, detail) -> str:
        missing = [f for f in needed if f not in rows]
        if missing:
            return f"not measured ({', '.join(missing)} not trained)"
        return f"{'holds' if holds() else 'DOES NOT HOLD'}: {detail()}"

    detection = [f for f, r in rows.items() if r.task != "keypoints"]
    return [
        (
            "Fast R-CNN tests at least 10x faster than R-CNN on the same proposals",
            judged(
                ["rcnn", "fast_rcnn"],
                lambda: ms("rcnn") >= 10 * ms("fast_rcnn"),
                lambda: f"R-CNN / Fast R-CNN = {ms('rcnn') / ms('fast_rcnn'):.1f}x",
            ),
        ),
        (
            "Faster R-CNN is faster than Fast R-CNN with selective search, at no worse map",
            judged(
                ["faster_rcnn", "fast_rcnn"],
                lambda: (
                    ms("faster_rcnn") < with_search("fast_rcnn")
                    and box_map("faster_rcnn") >= box_map("fast_rcnn")
                ),
                lambda: (
                    f"Fast R-CNN + selective search / Faster R-CNN = "
                    f"{with_search('fast_rcnn') / ms('faster_rcnn'):.1f}x "
                    f"({ms('fast_rcnn'):.1f} + {with_search('fast_rcnn') - ms('fast_rcnn'):.1f} ms "
                    f"vs {ms('faster_rcnn'):.1f} ms); map "
                    f"{box_map('faster_rcnn'):.3f} vs {box_map('fast_rcnn'):.3f}"
                ),
            ),
        ),
        (
            "YOLO is faster than Faster R-CNN",
            judged(
                ["yolo", "faster_rcnn"],
                lambda: ms("yolo") < ms("faster_rcnn"),
                lambda: f"Faster R-CNN / YOLO = {ms('faster_rcnn') / ms('yolo'):.1f}x",
            ),
        ),
        (
            "Sliding window is the least accurate detector",
            judged(
                ["sliding_window", *[f for f in detection if f != "sliding_window"][:1]],
                lambda: box_map("sliding_window") <= min(box_map(f) for f in detection),
                lambda: "map " + ", ".join(f"{f} {box_map(f):.3f}" for f in detection),
            ),
        ),
    ]


def markdown(
    rows: dict[str, Row], verdicts: list[tuple[str, str]], split: str, threads: int
) -> str:
    header = ["family", "task", *COLUMNS, "selective search ms/image", "parameters"]
    header.append("proposals/image")
    lines = [
        "# Detector families, side by side",
        "",
        f"Synthetic `{split}` split, demo profile, CPU, {threads} torch thread(s), one process",
        "(`python bench/detectors.py`). Inference time is per image at batch 4, on precomputed",
        "proposals for rcnn / fast_rcnn (selective search, timed apart, is its own column); train",
        "images/s is the mean over the family's training epochs (2 Ray Train workers, MLflow run).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows.values():
        cells = [row.family, row.task]
        cells += [f"{row.metrics.get(c, float('nan')):.3f}" for c in COLUMNS[:3]]
        cells += [
            f"{row.metrics['train_images_per_s']:.1f}",
            f"{row.metrics['inference_ms_per_image']:.1f}",
        ]
        search = row.metrics.get("selective_search_ms_per_image")
        cells.append("-" if search is None else f"{search:.1f}")
        cells += [
            f"{row.parameters:,}",
            "-" if row.proposals_per_image is None else f"{row.proposals_per_image:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{r.family}`: {'; '.join(r.notes)}" for r in rows.values() if r.notes]
    lines += ["", *notes, *([""] if notes else []), "## The seed's claims on our numbers", ""]
    lines += [f"- {claim}: **{verdict}**" for claim, verdict in verdicts]
    lines += [
        "",
        "Numbers are reported as measured; the benchmark is not tuned to agree with the claims.",
        "",
        "How each family's inference cost grows with proposals, windows and image size (the "
        "seed's argument, with fitted per-proposal costs): [detector-costs.md](detector-costs.md)"
        " (`sightline bench cost_curves`).",
        "",
        "Why the end-to-end families trail R-CNN at the demo's epoch counts, with every family's "
        "learning curve on a longer budget, map per object size and the RPN's recall against "
        "selective search's: [ladder.md](ladder.md) (`sightline bench ladder`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default=None)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    use_tracking(settings.tracking_uri)
    torch.set_num_threads(1)
    families = [f for f, fam in FAMILIES.items() if fam.task in ("detect", "segment", "keypoints")]
    rows = {f: row for f in families if (row := measure(settings, f, args.split)) is not None}
    if not rows:
        print(
            "no trained detector found under artifacts/models; run `dvc repro` first",
            file=sys.stderr,
        )
        return 2
    verdicts = claims(rows)
    report = markdown(rows, verdicts, args.split, torch.get_num_threads())
    metrics = {f"{r.family}.{k}": v for r in rows.values() for k, v in r.metrics.items()}
    metrics |= {f"{r.family}.parameters": r.parameters for r in rows.values()}
    publish(settings, name="detectors", group="detection", report=report, metrics=metrics)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
