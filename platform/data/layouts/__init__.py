"""Detection datasets in the layouts people have, read without restructuring.

`detection_data.format` names a layout, or `auto` finds it from the folder. A layout reader
(one module each) returns what the data itself says; `base.finish` then draws the splits the
data does not have and gives every split one category list. Everything downstream (validation,
proposals, training, evaluation, `sightline data inspect`) reads the result as COCO dicts.

| format   | what is in `root`                                                         |
|----------|---------------------------------------------------------------------------|
| coco     | COCO JSON: one per split (`splits`, or found by name), or one for all      |
| roboflow | `train/ valid/ test/`, each `_annotations.coco.json` beside its images     |
| voc      | a VOC devkit year folder: Annotations/, JPEGImages/, ImageSets/Main/       |
| labelimg | images + one VOC .xml per image (side by side or images/ + annotations/)   |
| yolo     | data.yaml (names, train/val/test) + labels/*.txt beside images/            |

Adding a layout: one reader module returning `Parts`, one line in READERS and one in `_detect`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sightline.data.errors import DatasetError
from sightline.data.layouts.base import FoundDataset, Parts, SplitSource, finish
from sightline.data.layouts.coco_files import (
    coco_json_files,
    is_roboflow,
    read_coco_files,
    read_roboflow,
)
from sightline.data.layouts.voc_folders import (
    labelimg_folders,
    read_labelimg,
    read_voc_devkit,
    voc_devkit_root,
)
from sightline.data.layouts.yolo_txt import read_yolo, yolo_yaml
from sightline.data.sources import DetectionData

READERS: dict[str, Callable[[Path, DetectionData], Parts]] = {
    "coco": read_coco_files,
    "roboflow": read_roboflow,
    "voc": read_voc_devkit,
    "labelimg": read_labelimg,
    "yolo": read_yolo,
}

__all__ = ["READERS", "FoundDataset", "SplitSource", "detect_format", "find_dataset"]


def detect_format(root: Path) -> str:
    """The layout of a folder; the most specific marker wins (a YOLO or Roboflow export may
    also hold loose JSON or XML files)."""
    if not root.is_dir():
        raise DatasetError.at(root, "no such dataset folder", field="detection_data.root")
    if yolo_yaml(root) is not None:
        return "yolo"
    if is_roboflow(root):
        return "roboflow"
    if voc_devkit_root(root) is not None:
        return "voc"
    if coco_json_files(root):
        return "coco"
    if labelimg_folders(root) is not None:
        return "labelimg"
    raise DatasetError.at(
        root,
        "no detection dataset layout found: looked for a YOLO data.yaml, Roboflow "
        "<split>/_annotations.coco.json, a VOC devkit (Annotations/ + JPEGImages/), COCO JSON "
        "(here or in annotations/) and labelImg .xml files",
        field="detection_data.root",
    )


def find_dataset(cfg: DetectionData, project_root: Path) -> FoundDataset:
    """Read the configured detection dataset: every split, as COCO dicts."""
    root = cfg.resolved_root(project_root)
    fmt = cfg.format
    if fmt == "auto":
        # Splits given as annotation files say the layout themselves.
        given = list(cfg.splits.values())
        fmt = "coco" if given and all(p.endswith(".json") for p in given) else detect_format(root)
    return finish(
        READERS[fmt](root, cfg), cfg.split_fractions, cfg.split_seed, configured=bool(cfg.splits)
    )
