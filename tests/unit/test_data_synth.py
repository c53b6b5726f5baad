"""The synthetic detection generator: determinism, valid annotations, size classes, loadability."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sightline.config import DetectionData, SynthDetection
from sightline.data.detection import DetectionDataset, DetectionSplit
from sightline.data.synth.detection import CATEGORIES, PERSON, SPLITS, generate

SMALL, LARGE = 32**2, 96**2


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def load_split(root: Path, split: str) -> dict[str, Any]:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    cfg = SynthDetection(seed=3, image_size=96, train=3, val=2, test=2)
    assert generate(tmp_path / "a", cfg) == {"train": 3, "val": 2, "test": 2}
    generate(tmp_path / "b", cfg)
    first, second = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert len(first) == 3 + 2 + 2 + 3
    assert first == second


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    generate(tmp_path / "a", SynthDetection(seed=1, image_size=96, train=2, val=1, test=1))
    generate(tmp_path / "b", SynthDetection(seed=2, image_size=96, train=2, val=1, test=1))
    first, second = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


def test_split_sizes_do_not_change_other_splits(tmp_path: Path) -> None:
    generate(tmp_path / "a", SynthDetection(seed=1, image_size=96, train=2, val=1, test=1))
    generate(tmp_path / "b", SynthDetection(seed=1, image_size=96, train=4, val=1, test=1))
    assert tree_bytes(tmp_path / "a" / "images" / "val") == tree_bytes(
        tmp_path / "b" / "images" / "val"
    )


def test_rerun_with_fewer_images_leaves_no_stale_files(tmp_path: Path) -> None:
    generate(tmp_path, SynthDetection(seed=0, image_size=64, train=4, val=1, test=1))
    generate(tmp_path, SynthDetection(seed=0, image_size=64, train=2, val=1, test=1))
    assert sorted(p.name for p in (tmp_path / "images" / "train").iterdir()) == [
        "train_00000.png",
        "train_00001.png",
    ]


@pytest.mark.parametrize("split", SPLITS)
def test_every_record_is_valid(synth_detection_root: Path, split: str) -> None:
    coco = load_split(synth_detection_root, split)
    size = 128
    assert coco["categories"] == CATEGORIES
    image_ids = [image["id"] for image in coco["images"]]
    assert len(set(image_ids)) == len(image_ids)
    for index, image in enumerate(coco["images"]):
        assert image["file_name"] == f"{split}/{split}_{index:05d}.png"
        with Image.open(synth_detection_root / "images" / image["file_name"]) as pixels:
            assert (pixels.mode, pixels.size) == ("RGB", (image["width"], image["height"]))
    ann_ids = [ann["id"] for ann in coco["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    per_image = np.bincount([ann["image_id"] for ann in coco["annotations"]])
    assert set(image_ids) <= set(np.flatnonzero(per_image))
    assert per_image.max() <= 6
    for ann in coco["annotations"]:
        check_annotation(ann, size)


def check_annotation(ann: dict[str, Any], size: int) -> None:
    x, y, w, h = ann["bbox"]
    assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= size and y + h <= size
    assert 0 < ann["area"] <= w * h
    assert ann["iscrowd"] == 0
    assert ann["category_id"] in {c["id"] for c in CATEGORIES}
    polygons = ann["segmentation"]
    assert polygons and all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
    px, py, pw, ph = mask_utils.toBbox(rle)
    # The polygons trace the visible pixels: same box, about the same area.
    assert abs(px - x) <= 1 and abs(py - y) <= 1 and abs(pw - w) <= 1 and abs(ph - h) <= 1
    assert 0.8 * ann["area"] <= mask_utils.area(rle) <= 1.4 * ann["area"]
    if ann["category_id"] == PERSON:
        keypoints = np.array(ann["keypoints"]).reshape(-1, 3)
        assert keypoints.shape == (7, 3)
        assert ann["num_keypoints"] == 7
        assert set(keypoints[:, 2]) <= {1, 2}
        assert np.all((keypoints[:, :2] >= 0) & (keypoints[:, :2] <= size))
    else:
        assert "keypoints" not in ann


def test_each_split_has_every_coco_size_class(synth_detection_root: Path) -> None:
    for split in SPLITS:
        areas = np.array(
            [a["area"] for a in load_split(synth_detection_root, split)["annotations"]]
        )
        assert (areas < SMALL).any(), split
        assert ((areas >= SMALL) & (areas < LARGE)).any(), split
        assert (areas >= LARGE).any(), split


def test_scenes_vary_in_class_and_keypoint_visibility(tmp_path: Path) -> None:
    generate(tmp_path, SynthDetection(seed=0, image_size=128, train=40, val=0, test=0))
    anns = load_split(tmp_path, "train")["annotations"]
    assert {a["category_id"] for a in anns} == {c["id"] for c in CATEGORIES}
    visibility = {v for a in anns if a["category_id"] == PERSON for v in a["keypoints"][2::3]}
    assert visibility == {1, 2}  # some keypoints are hidden behind other objects
    assert len({len(a["segmentation"]) for a in anns}) > 1  # occlusion splits some outlines


def test_pycocotools_and_the_dataset_load_it(synth_detection_root: Path) -> None:
    COCO(str(synth_detection_root / "annotations" / "val.json"))
    cfg = DetectionData(root=synth_detection_root)
    split = DetectionSplit.load(cfg, "val", project_root=Path("/nonexistent"))
    assert split.class_names == [c["name"] for c in CATEGORIES]
    dataset = DetectionDataset(split, with_masks=True, with_keypoints=True)
    image, target = dataset[0]
    assert image.shape == (3, 128, 128)
    count = len(target["boxes"])
    assert count >= 1
    assert target["masks"].shape == (count, 128, 128)
    assert target["keypoints"].shape == (count, 7, 3)


def test_rejects_unusable_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate(tmp_path, SynthDetection(image_size=16))
    with pytest.raises(ValueError, match="seed"):
        generate(tmp_path, SynthDetection(seed=-1))
