"""bench/ladder.py's parts on tiny inputs: the RPN's proposals, selective search's cut, the
ladder and reversal statements (the benchmark itself is run by hand: it trains every family)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sightline.data.detection import DetectionSplit, SplitSource
from sightline.models import build_model
from tests.bench_scripts import bench_fixture

ladder = bench_fixture("ladder")


@pytest.fixture
def val_split(synth_detection_root: Path) -> DetectionSplit:
    from sightline.data.coco import read_coco

    coco = read_coco(synth_detection_root / "annotations" / "val.json")
    return DetectionSplit(SplitSource(coco, synth_detection_root / "images", origin="val.json"))


def curve(ladder, family: str, maps: list[float], final: float, demo_epochs: int = 2):
    return ladder.Curve(
        family=family,
        demo_epochs=demo_epochs,
        budget=len(maps) + 1,
        scores=[{"map": m} for m in maps],
        kept_epoch=int(np.argmax(maps)),
        final={"map": final},
        seconds=1.0,
        model=torch.nn.Identity(),
    )


def test_rpn_proposals_are_at_most_top_n_per_image_in_image_pixels(ladder, val_split) -> None:
    torch.manual_seed(0)
    model = build_model("faster_rcnn", val_split.num_classes + 1, image_size=128, width=8)
    before = dict(model.rpn._post_nms_top_n)
    found = ladder.rpn_proposals(model, val_split, top_n=20)
    assert set(found) == set(val_split.image_ids)
    for boxes in found.values():
        assert boxes.shape[1] == 4 and 0 < len(boxes) <= 20
        assert (boxes >= 0).all() and (boxes <= 128).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
    assert model.rpn._post_nms_top_n == before  # the model is left as it was


def test_selective_search_is_cut_to_its_first_n(ladder) -> None:
    proposals = {1: np.arange(40, dtype=np.float32).reshape(10, 4), 2: np.zeros((0, 4))}
    cut = ladder.first_n(proposals, 3)
    assert cut[1].tolist() == proposals[1][:3].tolist() and len(cut[2]) == 0


def test_size_counts_use_cocos_areas(ladder, val_split) -> None:
    counts = ladder.size_counts(val_split)
    boxes = sum(len(val_split.coco.imgToAnns[i]) for i in val_split.image_ids)
    assert set(counts) == {"small", "medium", "large"} and sum(counts.values()) == boxes


def test_ladder_and_reversal_read_the_curves(ladder) -> None:
    rcnn = curve(ladder, "rcnn", [0.2, 0.4, 0.45], final=0.5)
    faster = curve(ladder, "faster_rcnn", [0.1, 0.3, 0.55, 0.6], final=0.6)
    fast = curve(ladder, "fast_rcnn", [0.1, 0.2], final=0.3)
    order = ladder.ladder([rcnn, faster, fast], lambda c: c.best)
    assert order == "faster_rcnn 0.600 > rcnn 0.500 > fast_rcnn 0.300"
    assert math.isclose(rcnn.at_demo_epochs(), 0.4)
    text = ladder.reversal([rcnn, faster, fast])
    assert "faster_rcnn: passes R-CNN's 0.500 at epoch 3" in text
    assert "fast_rcnn: does not pass R-CNN's 0.500 within 2 epochs" in text
    assert "no ladder" in ladder.reversal([faster])
