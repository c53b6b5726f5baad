"""R-CNN's stage 2 on the platform (not end-to-end, as in the paper).

After the training loop has fine-tuned the CNN, every training region's features (selective-
search proposals and truth boxes) are computed once and cached on disk inside the model's DVC
output, as the paper cached its fc7 features; the per-class linear SVMs and least-squares box
regressors are then fitted from that cache (models/rcnn.py `fit_svms_and_regressors`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from sightline.artifacts import PostHocReport, model_dir, proposals_path
from sightline.config import Settings
from sightline.data.detection import load_task_split, task_dataset
from sightline.data.proposals import DatasetWithProposals, load_proposals
from sightline.models.rcnn import RCNN, collect_regions, fit_svms_and_regressors

FEATURES_FILE = "region_features.pt"

console = Console(stderr=True)


def cache_region_features(settings: Settings, model: RCNN, task: str, cache: Path) -> Path:
    """Features, labels and boxes of every training region, written to `cache`."""
    split = load_task_split(settings.detection_data, "train", settings.project_root, task)
    path = proposals_path(settings, "train")
    dataset = DatasetWithProposals(task_dataset(split, task), load_proposals(path), str(path))
    with console.status(f"R-CNN stage 2: features of the regions of {len(dataset)} images ..."):
        regions = collect_regions(model, (dataset[i] for i in range(len(dataset))))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vars(regions), cache)
    return cache


def fit_post_hoc(settings: Settings, model: RCNN, family: str, task: str) -> PostHocReport:
    """Cache the training regions' features, fit SVMs + box regressors from the cache; returns
    what stage 2 saw (stored with the model)."""
    cache = model_dir(settings, family) / FEATURES_FILE
    cache_region_features(settings, model, task, cache)
    rows = torch.load(cache, weights_only=True)
    report = fit_svms_and_regressors(model, **rows)
    console.print(
        f"R-CNN stage 2: {len(rows['features'])} cached regions; SVM hinge loss "
        f"{report.hinge_loss:.4f}; positives per class {report.positives}"
    )
    return PostHocReport(
        region_features=FEATURES_FILE,
        cached_regions=len(rows["features"]),
        svm_hinge_loss=report.hinge_loss,
        svm_positives=report.positives,
        svm_negatives=report.negatives,
        regression_rows=report.regression_rows,
    )
