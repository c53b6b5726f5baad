"""Benchmark: the detectors' accuracy ladder, explained. Each detector family trained until its
validation map stops improving (on a bounded budget), its map on the validation split after
every epoch (the learning curves), its map per object size, and the Faster R-CNN RPN's recall
at 150 / 300 / 1000 proposals against selective search's. Writes docs/benchmarks/ladder.md
(+ ladder-curves.png) and an MLflow run.

    python bench/ladder.py [--params params.yaml] [--families rcnn fast_rcnn faster_rcnn]
                           [--max-epochs 16] [--patience 4]
    sightline bench ladder

It reads the project's detection data and selective-search proposals (`dvc repro proposals`
makes them) and trains through the platform's own loop (Ray Train, the `train` settings of each
family as the train stage resolves them) with `epochs`, `keep_epoch: best` and `patience` from
the options above: one MLflow run per family in the experiment `sightline-bench-ladder`, whose
`val_*` metrics per step are the curves (compare them in the MLflow UI). The cosine schedule
spans the whole budget, so epoch k of these runs is not a k-epoch training; the demo's own
epoch count is marked for reference. The kept epoch is scored once more after the family's
post-training step (R-CNN's SVMs and box regressors), as the evaluate stage scores it.
Everything is measured on the validation split; the test split is never read.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from common import arguments, link_proposals, publish, replace_section
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from torch import nn
from torchvision.models.detection.transform import resize_boxes

from sightline.artifacts import proposals_path
from sightline.cluster import ensure_ray
from sightline.config import Settings, load_settings
from sightline.data.detection import DetectionSplit, load_task_split, task_dataset
from sightline.data.proposals import (
    Proposals,
    load_proposals,
    mean_proposals_per_image,
    proposal_recall,
    truth_boxes,
)
from sightline.track.runs import use_tracking
from sightline.train.family_run import lineage_tags, training_record
from sightline.train.job import job_for
from sightline.train.launcher import fit
from sightline.workloads import workload_for

EXPERIMENT = "sightline-bench-ladder"
SPLIT = "val"
RPN_TOP_N = (150, 300, 1000)
RECALL_IOUS = (0.5, 0.7)
SIZES = ("small", "medium", "large")  # COCO's areas: < 32^2, < 96^2, larger
RPN_FAMILY = "faster_rcnn"
RPN_BATCH = 8
ALL_ANCHORS = 10**7  # a pre-NMS cap above any anchor count: no cap


@dataclass
class Curve:
    """One family's training on the budget: the validation scores after every epoch."""

    family: str
    demo_epochs: int  # what the demo profile trains it for
    budget: int
    scores: list[dict[str, float]]  # per epoch, the `val_*` metrics without the prefix
    kept_epoch: int  # 0-based
    final: dict[str, float]  # the kept epoch after the post-training step, evaluate's way
    seconds: float
    model: nn.Module

    @property
    def maps(self) -> list[float]:
        return [s.get("map", math.nan) for s in self.scores]

    @property
    def best(self) -> float:
        return self.final.get("map", math.nan)

    @property
    def stopped_early(self) -> bool:
        return len(self.scores) < self.budget

    def at_demo_epochs(self) -> float:
        index = min(self.demo_epochs, len(self.scores)) - 1
        return self.maps[index] if index >= 0 else math.nan


def scratch_settings(settings: Settings, scratch: Path) -> Settings:
    """`settings` writing into `scratch` (Ray Train's storage, R-CNN's feature cache, the
    models): the project's data and proposals are read where they are, its DVC outputs are
    never touched."""
    (scratch / "artifacts").mkdir(parents=True)
    link_proposals(settings, scratch)
    data = settings.detection_data
    root = settings.path(data.root).resolve()
    return settings.model_copy(
        update={"project_root": scratch, "detection_data": data.model_copy(update={"root": root})}
    )


def train_curve(
    settings: Settings,
    scratch: Settings,
    family: str,
    max_epochs: int,
    patience: int,
    experiment: str,
) -> Curve:
    """Train `family` on the budget in `scratch` (scratch_settings), tracked in `settings`'
    MLflow store as a run of `experiment`."""
    group = workload_for("detection")
    data = group.training_data(scratch, family)
    demo_epochs = data.train.epochs
    recipe = {"epochs": max_epochs, "keep_epoch": "best", "patience": patience}
    data = dataclasses.replace(
        data, train=data.train.model_copy(update={**recipe, "validation_delay": 0})
    )
    client = MlflowClient(settings.tracking_uri)
    run_id = client.create_run(
        experiment,
        run_name=f"ladder-{family}",
        tags={"family": family, **lineage_tags(settings, data)},
    ).info.run_id
    client.log_batch(
        run_id, params=_params({"family": family, "demo_epochs": demo_epochs, **recipe})
    )
    job = job_for(
        scratch, data, family=family, run_id=run_id, selection_metric=group.primary_metric
    )
    started = time.perf_counter()
    outcome = fit(job, group, ray_address=settings.ray_address)
    seconds = time.perf_counter() - started
    scores = _validation_history(client, run_id)
    record = training_record(family, data, run_id)
    model = outcome.model
    record.extras = group.after_training(scratch, model, record)
    final = group.validation_scores(scratch, model, record)
    client.log_batch(run_id, metrics=[_metric(f"final_val_{k}", v) for k, v in final.items()])
    client.set_terminated(run_id)
    return Curve(
        family=family,
        demo_epochs=demo_epochs,
        budget=max_epochs,
        scores=scores,
        kept_epoch=int(outcome.metrics.get("selected_epoch", len(scores) - 1)),
        final=final,
        seconds=seconds,
        model=model,
    )


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(k, str(v)) for k, v in values.items()]


def _metric(key: str, value: float) -> Metric:
    return Metric(key, float(value), int(time.time() * 1000), 0)


def _validation_history(client: MlflowClient, run_id: str) -> list[dict[str, float]]:
    """The run's `val_<metric>` values by epoch (MLflow step), prefix dropped."""
    names = [k for k in client.get_run(run_id).data.metrics if k.startswith("val_")]
    by_epoch: dict[int, dict[str, float]] = {}
    for name in names:
        for point in client.get_metric_history(run_id, name):
            by_epoch.setdefault(point.step, {})[name.removeprefix("val_")] = point.value
    return [by_epoch[step] for step in sorted(by_epoch)]


# -- proposals: the RPN's against selective search's -------------------------------------------


def rpn_proposals(
    model: nn.Module, split: DetectionSplit, top_n: int, pre_nms: int | None = None
) -> Proposals:
    """The trained RPN's top `top_n` proposals per image after its NMS, in image pixels, from
    the `pre_nms` best-scored anchors (None: every anchor, so that only `top_n` limits them)."""
    rpn = model.rpn
    saved = dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n)
    rpn._pre_nms_top_n["testing"] = pre_nms or ALL_ANCHORS
    rpn._post_nms_top_n["testing"] = top_n
    dataset = task_dataset(split, "detect")
    found: Proposals = {}
    model.eval()
    try:
        with torch.no_grad():
            for first in range(0, len(dataset), RPN_BATCH):
                items = [dataset[i] for i in range(first, min(first + RPN_BATCH, len(dataset)))]
                originals = [tuple(image.shape[-2:]) for image, _ in items]
                images, _ = model.transform([image for image, _ in items])
                features = model.backbone(images.tensors)
                if isinstance(features, torch.Tensor):
                    features = OrderedDict([("0", features)])
                boxes, _ = rpn(images, features)
                for (_, target), box, size, original in zip(
                    items, boxes, images.image_sizes, originals, strict=True
                ):
                    found[int(target["image_id"])] = resize_boxes(box, size, original).numpy()
    finally:
        rpn._pre_nms_top_n, rpn._post_nms_top_n = saved
    return found


def first_n(proposals: Proposals, top_n: int) -> Proposals:
    """Selective search's proposals as the R-CNN families read them, cut to the first `top_n`
    (its own order)."""
    return {image_id: boxes[:top_n] for image_id, boxes in proposals.items()}


@dataclass
class RecallRow:
    key: str  # its MLflow metric prefix
    source: str
    top_n: int
    per_image: float
    recall: dict[float, float]


def proposal_table(
    settings: Settings, split: DetectionSplit, rpn_model: nn.Module | None
) -> list[RecallRow]:
    searched = load_proposals(proposals_path(settings, SPLIT))
    sources: list[tuple[str, str, int, Any]] = [
        ("selective_search", "selective search", n, lambda n=n: first_n(searched, n))
        for n in RPN_TOP_N
    ]
    if rpn_model is not None:
        pre, post = (
            rpn_model.rpn._pre_nms_top_n["testing"],
            rpn_model.rpn._post_nms_top_n["testing"],
        )
        sources.append(
            (
                "rpn_configured",
                f"{RPN_FAMILY} RPN as configured (pre-NMS {pre})",
                post,
                lambda: rpn_proposals(rpn_model, split, post, pre),
            )
        )
        sources += [
            (
                "rpn_all_anchors",
                f"{RPN_FAMILY} RPN, every anchor before NMS",
                n,
                lambda n=n: rpn_proposals(rpn_model, split, n),
            )
            for n in RPN_TOP_N
        ]
    rows = []
    for key, name, top_n, make in sources:
        boxes = make()
        recall = {iou: proposal_recall(split, boxes, iou) for iou in RECALL_IOUS}
        rows.append(RecallRow(key, name, top_n, mean_proposals_per_image(boxes), recall))
    return rows


def size_counts(split: DetectionSplit) -> dict[str, int]:
    """How many validation boxes fall in each COCO size range (area in pixels)."""
    counts = dict.fromkeys(SIZES, 0)
    for image_id in split.image_ids:
        for x1, y1, x2, y2 in truth_boxes(split, image_id).tolist():
            area = (x2 - x1) * (y2 - y1)
            counts["small" if area < 32**2 else "medium" if area < 96**2 else "large"] += 1
    return counts


# -- the report -------------------------------------------------------------------------------


def curves_figure(curves: list[Curve]) -> Figure:
    figure = Figure(figsize=(7.5, 4.5))
    axes = figure.subplots()
    for curve in curves:
        epochs = np.arange(1, len(curve.maps) + 1)
        (line,) = axes.plot(epochs, curve.maps, marker="o", markersize=3, label=curve.family)
        if curve.demo_epochs <= len(curve.maps):
            axes.plot(curve.demo_epochs, curve.at_demo_epochs(), "s", color=line.get_color())
    axes.set_xlabel("epoch (of a cosine schedule over the budget)")
    axes.set_ylabel(f"{SPLIT} map (in the training loop)")
    axes.set_title("Learning curves (squares: the demo's epoch count)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    return figure


def ladder(curves: list[Curve], score: Any) -> str:
    ranked = sorted(curves, key=score, reverse=True)
    return " > ".join(f"{c.family} {score(c):.3f}" for c in ranked)


def reversal(curves: list[Curve]) -> str:
    """Whether, and after how many epochs, an end-to-end family passes R-CNN's best."""
    by_family = {c.family: c for c in curves}
    if "rcnn" not in by_family:
        return "R-CNN was not trained in this run: no ladder to reverse."
    target = by_family["rcnn"].best
    lines = []
    for family in ("fast_rcnn", "faster_rcnn", "mask_rcnn", "yolo", "ssd"):
        curve = by_family.get(family)
        if curve is None:
            continue
        passed = next((i + 1 for i, m in enumerate(curve.maps) if m > target), None)
        if passed is None:
            lines.append(
                f"- {family}: does not pass R-CNN's {target:.3f} within {len(curve.maps)} "
                f"epochs (best in the loop {max(curve.maps):.3f})"
            )
        else:
            lines.append(f"- {family}: passes R-CNN's {target:.3f} at epoch {passed}")
    return "\n".join(lines)


def markdown(
    curves: list[Curve],
    recalls: list[RecallRow],
    sizes: dict[str, int],
    max_epochs: int,
    patience: int,
    load_before: float,
) -> str:
    lines = [
        f"Generated by `sightline bench ladder` (`python bench/ladder.py --max-epochs {max_epochs} "
        f"--patience {patience}`); one run, on the `{SPLIT}` split of the project's detection "
        f"data (the test split is not read); load average at the start {load_before:.1f} on "
        f"{os.cpu_count()} cores. Each family trained through the platform's loop with "
        f"`keep_epoch: best`, a budget of {max_epochs} epochs (cosine schedule over the budget) "
        f"and `patience: {patience}`; curves in docs/benchmarks/ladder-curves.png and in the "
        f"MLflow experiment `{EXPERIMENT}`.",
        "",
        "![learning curves](ladder-curves.png)",
        "",
        "## Learning curves",
        "",
        "| family | demo epochs | val map at the demo's epoch count | epochs run | kept epoch | "
        "val map, kept epoch (loop) | **val map, final** | map_small | map_medium | map_large | "
        "minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in curves:
        kept = c.scores[c.kept_epoch]["map"] if 0 <= c.kept_epoch < len(c.scores) else math.nan
        sized = [c.final.get(f"map_{size}", math.nan) for size in SIZES]
        lines.append(
            f"| {c.family} | {c.demo_epochs} | {c.at_demo_epochs():.3f} | {len(c.scores)}"
            f"{' (stopped)' if c.stopped_early else ''} | {c.kept_epoch + 1} | {kept:.3f} | "
            f"**{c.best:.3f}** | "
            + " | ".join(f"{v:.3f}" for v in sized)
            + f" | {c.seconds / 60:.1f} |"
        )
    lines += [
        "",
        "Per epoch (val map in the loop):",
        "",
        "| family | " + " | ".join(str(e) for e in range(1, max_epochs + 1)) + " |",
        "|---|" + "---|" * max_epochs,
    ]
    for c in curves:
        cells = [f"{m:.3f}" for m in c.maps] + [""] * (max_epochs - len(c.maps))
        lines.append(f"| {c.family} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "- final: the kept epoch after the family's post-training step (R-CNN's SVMs and box "
        "regressors), scored as the evaluate stage scores; the loop's score is before it.",
        "- validation boxes by COCO size: " + ", ".join(f"{k} {v}" for k, v in sizes.items()),
        "",
        "## The ladder",
        "",
        f"- at the demo's epoch counts (loop): {ladder(curves, Curve.at_demo_epochs)}",
        f"- at the kept epoch, final: {ladder(curves, lambda c: c.best)}",
        "",
        reversal(curves),
        "",
        "## Proposals: the RPN against selective search",
        "",
        f"Recall of the `{SPLIT}` boxes (fraction with a proposal at IoU >= t), at most N "
        "proposals per image; selective search's are its own first N, the RPN's its top N "
        "after its NMS (IoU 0.7), from the best pre-NMS anchors as configured or from all.",
        "",
        "| source | N | proposals/image | " + " | ".join(f"recall@{t}" for t in RECALL_IOUS) + " |",
        "|---|---|---|" + "---|" * len(RECALL_IOUS),
    ]
    for row in recalls:
        lines.append(
            f"| {row.source} | {row.top_n} | {row.per_image:.0f} | "
            + " | ".join(f"{row.recall[t]:.3f}" for t in RECALL_IOUS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--families", nargs="+", default=None, help="default: detection.families")
    parser.add_argument("--max-epochs", type=int, default=16)
    parser.add_argument("--patience", type=int, default=4)
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    group = workload_for("detection")
    families = args.families or group.families(settings)
    unknown = sorted(set(families) - set(group.families(settings)))
    if unknown:
        print(f"not detection families of this project: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not proposals_path(settings, SPLIT).exists():
        print("no selective-search proposals: run `dvc repro proposals` first", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    use_tracking(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    existing = client.get_experiment_by_name(EXPERIMENT)
    experiment = existing.experiment_id if existing else client.create_experiment(EXPERIMENT)
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)  # the loop's workers
    ensure_ray(settings.ray_address)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = scratch_settings(settings, Path(tmp))
            curves = [
                train_curve(settings, scratch, f, args.max_epochs, args.patience, experiment)
                for f in families
            ]
    finally:
        ray.shutdown()
    split = load_task_split(settings.detection_data, SPLIT, settings.project_root, "detect")
    rpn_model = next((c.model for c in curves if c.family == RPN_FAMILY), None)
    recalls = proposal_table(settings, split, rpn_model)
    report = markdown(
        curves, recalls, size_counts(split), args.max_epochs, args.patience, load_before
    )
    figure = curves_figure(curves)
    figure.savefig(settings.path("docs/benchmarks") / "ladder-curves.png", dpi=110)
    metrics = {f"{c.family}.final_val_map": c.best for c in curves}
    metrics |= {f"{c.family}.epochs_run": float(len(c.scores)) for c in curves}
    metrics |= {f"recall50.{r.key}.{r.top_n}": r.recall[0.5] for r in recalls}
    # The page keeps what follows the generated section (the reading of a run) across runs.
    page = replace_section(settings.path("docs/benchmarks/ladder.md"), "ladder", report)
    publish(
        settings,
        name="ladder",
        group="detection",
        report=page,
        metrics=metrics,
        figures={"ladder-curves.png": figure},
    )
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
