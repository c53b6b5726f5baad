"""A tiny project (params + synthetic data) that trains in seconds, for integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT
from tests.detection_contract import TINY_RCNN

# Every 2-D family at a size that trains an epoch in seconds (the contract is what is tested).
TINY_FAMILIES: dict[str, dict[str, Any]] = {
    "faster_rcnn": TINY_RCNN,
    "mask_rcnn": {**TINY_RCNN, "mask_layers": [8, 8], "mask_dim_reduced": 8},
    "keypoint_rcnn": {**TINY_RCNN, "keypoint_layers": [8, 8]},
    "rcnn": {"image_size": 64, "crop_size": 16, "width": 8, "feature_dim": 32, "rois_per_image": 8},
    "fast_rcnn": {"image_size": 64, "width": 8, "representation_size": 32},
    "yolo": {"image_size": 64, "width": 8, "grid_stride": 16, "num_anchors": 3, "anchors": None},
    "ssd": {"image_size": 64, "width": 8, "stages": 2, "aspect_ratios": [[2], [2, 3], [2]]},
    "sliding_window": {
        "image_size": 64,
        "crop_size": 16,
        "width": 8,
        "hidden": 16,
        "window_sizes": [16, 32],
        "stride_fraction": 0.5,
    },
}


def tiny_params(**train_overrides: Any) -> dict[str, Any]:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["synth"]["detection"] = {"seed": 3, "image_size": 64, "train": 12, "val": 6, "test": 4}
    params["detection"]["families"] = ["faster_rcnn"]
    # The demo's per-group and per-family epochs and validation delay are the demo's: a tiny
    # test trains what `train` says.
    params["detection"]["train"] = {}
    params["detection"]["family_train"] = {}
    params["train"].update({"epochs": 2, "batch_size": 3, "warmup_iters": 2, **train_overrides})
    params["evaluate"]["grid_images"] = 2
    params["models"] = {family: dict(values) for family, values in TINY_FAMILIES.items()}
    params["profiles"] = {"demo": {}}  # every stage depends on the selected profile's block
    return params


def write_params(project: Path, params: dict[str, Any]) -> Path:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
