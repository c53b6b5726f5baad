"""DVC stage `proposals`: selective search once per dataset version, and its recall.

python -m sightline.pipelines.proposals [--params params.yaml]

Writes artifacts/proposals/<split>.npz (what rcnn and fast_rcnn train and are scored on) and
metrics/proposals.json (recall at IoU 0.5 / 0.7 and proposals per image, per split).
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from sightline.artifacts import proposals_path, write_json
from sightline.config import Settings
from sightline.data.detection import DetectionSplit
from sightline.data.layouts import find_dataset
from sightline.data.proposals import compute_split_proposals, proposal_stats
from sightline.stage import run_stage

console = Console(stderr=True)

# The params.yaml keys this stage reads; dvc.yaml lists exactly these
# (tests/unit/test_dvc_params.py).
STAGE_PARAMS = ("proposals", "detection_data")


def stage(settings: Settings, args: argparse.Namespace) -> int:
    cfg = settings.proposals
    metrics: dict[str, float] = {}
    found = find_dataset(settings.detection_data, settings.project_root)
    for name in found.split_names:
        split = DetectionSplit(found.source(name))
        with console.status(f"selective search ({cfg.mode}) on {len(split)} {name} images ..."):
            proposals = compute_split_proposals(
                split,
                proposals_path(settings, name),
                mode=cfg.mode,
                max_proposals=cfg.max_proposals,
                min_size=cfg.min_size,
                max_side=cfg.max_side,
                workers=cfg.workers,
            )
        stats = proposal_stats(split, proposals, ious=(0.5, 0.7))
        metrics.update({f"{name}_{key}": value for key, value in stats.items()})
        console.print(f"{name}: {stats}")
    write_json(settings.path("metrics/proposals.json"), metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=False)


if __name__ == "__main__":
    sys.exit(main())
