"""What a detection dataset holds, as `sightline data inspect PATH` prints it: the layout found,
the splits and where they came from, boxes per class, box sizes in pixels, and the problems
that would hurt training (missing files, images in two splits, classes with no training box).

The box-size histogram is the evidence for image and anchor sizes: a detector whose smallest
anchor is 32 px will not learn boxes of 8.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sightline.data.layouts.base import FoundDataset

# Upper edges (px) of the box-size bins; size = sqrt(width * height), COCO's notion of scale.
SIZE_BINS = (8, 16, 32, 64, 128, 256, 512)
MISSING_SHOWN = 5  # missing files named in a problem line


@dataclass
class SplitSummary:
    images: int
    boxes: int
    images_without_boxes: int
    boxes_per_class: dict[str, int]
    drawn: bool


@dataclass
class DatasetSummary:
    format: str
    root: str
    classes: list[str]
    splits: dict[str, SplitSummary]
    size_histogram: dict[str, int]  # bin label -> boxes over all splits
    image_sizes: dict[str, int]  # "WxH" -> images, the most common first
    dropped_categories: list[str]
    notes: list[str]
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "splits"},
            "splits": {name: split.__dict__ for name, split in self.splits.items()},
        }


SIZE_BIN_LABELS = (
    *(f"{lower}-{upper}" for lower, upper in zip((0, *SIZE_BINS), SIZE_BINS, strict=False)),
    f">={SIZE_BINS[-1]}",
)


def size_bin(width: float, height: float) -> str:
    size = math.sqrt(max(width, 0.0) * max(height, 0.0))
    return SIZE_BIN_LABELS[bisect.bisect_right(SIZE_BINS, size)]


def summarize(found: FoundDataset) -> DatasetSummary:
    classes: dict[Any, str] = {}
    for source in found.splits.values():
        classes.update({c["id"]: str(c.get("name")) for c in source.coco["categories"]})
    sizes: Counter[str] = Counter()
    image_sizes: Counter[str] = Counter()
    splits: dict[str, SplitSummary] = {}
    problems = [f"split {name}: {error}" for name, error in found.errors.items()]
    seen_files: dict[Path, str] = {}
    for name, source in found.splits.items():
        coco = source.coco
        per_class: Counter[str] = Counter()
        with_boxes = set()
        for ann in coco["annotations"]:
            per_class[classes.get(ann.get("category_id"), f"id {ann.get('category_id')}")] += 1
            with_boxes.add(ann.get("image_id"))
            bbox = ann.get("bbox") or [0, 0, 0, 0]
            sizes[size_bin(bbox[2], bbox[3])] += 1
        missing = []
        for image in coco["images"]:
            image_sizes[f"{image.get('width')}x{image.get('height')}"] += 1
            path = source.image_dir / str(image.get("file_name"))
            if path in seen_files and seen_files[path] != name:
                problems.append(f"{path} is in both {seen_files[path]} and {name}")
            seen_files.setdefault(path, name)
            if not path.is_file():
                missing.append(str(path))
        if missing:
            problems.append(
                f"split {name}: {len(missing)} image files missing, e.g. {missing[:MISSING_SHOWN]}"
            )
        splits[name] = SplitSummary(
            images=len(coco["images"]),
            boxes=len(coco["annotations"]),
            images_without_boxes=sum(1 for im in coco["images"] if im["id"] not in with_boxes),
            boxes_per_class={c: per_class.get(c, 0) for c in classes.values()},
            drawn=name in found.drawn_splits,
        )
    train = splits.get("train")
    if train is not None:
        problems += [
            f"class {c!r} has no box in train: the model cannot learn it"
            for c, n in train.boxes_per_class.items()
            if n == 0
        ]
    for needed in ("train", "val"):
        if needed not in splits and needed not in found.errors:
            problems.append(f"no {needed} split")
    return DatasetSummary(
        format=found.format,
        root=str(found.root),
        classes=list(classes.values()),
        splits=splits,
        size_histogram={label: sizes.get(label, 0) for label in SIZE_BIN_LABELS},
        image_sizes=dict(image_sizes.most_common()),
        dropped_categories=[
            f"{c.get('name')} (id {c.get('id')})" for c in found.dropped_categories
        ],
        notes=list(found.notes),
        problems=problems,
    )


def renderables(summary: DatasetSummary) -> list[Any]:
    """The summary as rich tables and lines, for the console."""
    from rich.markup import escape
    from rich.table import Table

    out: list[Any] = [f"[bold]{summary.format}[/] dataset at {escape(summary.root)}"]
    out += [f"  {escape(note)}" for note in summary.notes]
    splits = Table(title="splits", title_justify="left")
    for column in ("split", "images", "boxes", "images without boxes", "from"):
        splits.add_column(column, justify="left" if column in ("split", "from") else "right")
    for name, split in summary.splits.items():
        source = "drawn by split_fractions" if split.drawn else "the data"
        splits.add_row(
            name, str(split.images), str(split.boxes), str(split.images_without_boxes), source
        )
    classes = Table(title="boxes per class", title_justify="left")
    classes.add_column("class")
    for name in summary.splits:
        classes.add_column(name, justify="right")
    for cls in summary.classes:
        classes.add_row(cls, *(str(s.boxes_per_class.get(cls, 0)) for s in summary.splits.values()))
    sizes = Table(title="box size sqrt(w*h), px", title_justify="left")
    sizes.add_column("size")
    sizes.add_column("boxes", justify="right")
    total = max(1, sum(summary.size_histogram.values()))
    for label, count in summary.size_histogram.items():
        sizes.add_row(label, f"{count}  {'#' * round(40 * count / total)}")
    out += [splits, classes, sizes]
    common = list(summary.image_sizes.items())[:5]
    out.append("image sizes: " + ", ".join(f"{size} ({n})" for size, n in common))
    if summary.dropped_categories:
        out.append(
            "categories without any annotation, dropped from the classes: "
            + ", ".join(summary.dropped_categories)
        )
    out += [f"[yellow]problem:[/] {escape(p)}" for p in summary.problems] or ["no problems found"]
    return out
