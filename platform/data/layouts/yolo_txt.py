"""YOLO / Ultralytics layouts: a data.yaml (class `names`; `train`/`val`/`test` as image
folders, image-list .txt files or lists of either, relative to its `path`) and one label .txt
per image in the parallel `labels/` folder (`.../images/x.jpg` -> `.../labels/x.txt`).

Label lines are `class cx cy w h` (normalised to the image) or a polygon `class x1 y1 x2 y2 ...`
(segmentation exports): its extent is the box and it is kept as the COCO segmentation. Category
ids are YOLO's class indices (0-based), so id 0 is a real class here. An image without a label
file has no objects (Ultralytics' rule: a background image).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, UnidentifiedImageError

from sightline.data.errors import DatasetError
from sightline.data.layouts.base import (
    IMAGE_SUFFIXES,
    Parts,
    SplitSource,
    image_files,
    split_alias,
)
from sightline.data.sources import DetectionData

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")


def yolo_yaml(root: Path) -> Path | None:
    """The dataset YAML: a usual name, else the one *.yaml in root that has `names`."""
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    for path in sorted(root.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and "names" in data:
            return path
    return None


def read_yolo(root: Path, cfg: DetectionData) -> Parts:
    path = yolo_yaml(root)
    if path is None:
        raise DatasetError.at(root, "no data.yaml (or other *.yaml with `names`) in it")
    spec = _load_yaml(path)
    names = _class_names(spec, path)
    base = _base_dir(spec, path)
    categories = [{"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(names)]
    sources: dict[str, SplitSource] = {}
    notes = [f"classes from {path.name}: {len(names)}"]
    next_id = 1  # image ids unique over the whole dataset
    for key in ("train", "val", "valid", "test"):
        if not spec.get(key):
            continue
        split = split_alias(key)
        images = _split_images(spec[key], base, path, key)
        coco, next_id = _to_coco(images, categories, next_id)
        image_dir = Path(os.path.commonpath([str(p.parent) for p in images])) if images else base
        for record in coco["images"]:
            record["file_name"] = os.path.relpath(record["file_name"], image_dir)
        sources[split] = SplitSource(coco, image_dir, f"{path} ({key}: {spec[key]})")
        notes.append(f"{split}: {len(images)} images from {spec[key]}")
    if not sources:
        raise DatasetError.at(path, "names no split (train, val, test)", field="train")
    return Parts("yolo", root, sources, notes)


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DatasetError.at(path, f"not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise DatasetError.at(path, "must be a mapping (names, train, val, ...)")
    return spec


def _class_names(spec: dict[str, Any], path: Path) -> list[str]:
    names = spec.get("names")
    if isinstance(names, dict):  # {0: person, 1: car}
        try:
            ordered = sorted((int(k), str(v)) for k, v in names.items())
        except ValueError:
            raise DatasetError.at(path, "keys must be class indices", field="names") from None
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise DatasetError.at(path, "class indices must be 0..N-1", field="names")
        return [v for _, v in ordered]
    if isinstance(names, list) and names and all(isinstance(n, str | int) for n in names):
        return [str(n) for n in names]
    raise DatasetError.at(path, "must be a list of class names or {index: name}", field="names")


def _base_dir(spec: dict[str, Any], path: Path) -> Path:
    """Where split paths are relative to: `path:` (itself relative to the YAML's folder)."""
    given = spec.get("path")
    if not given:
        return path.parent
    base = Path(str(given))
    return base if base.is_absolute() else path.parent / base


def _resolve(entry: str, base: Path) -> Path:
    candidate = base / entry
    if candidate.exists():
        return candidate
    # Roboflow writes `../train/images` next to a data.yaml that sits beside train/.
    stripped = Path(entry)
    while stripped.parts and stripped.parts[0] == "..":
        stripped = Path(*stripped.parts[1:])
    return base / stripped


def _split_images(entry: Any, base: Path, path: Path, key: str) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        where = _resolve(str(item), base)
        if where.is_dir():
            images += image_files(where)
        elif where.is_file() and where.suffix == ".txt":
            lines = [ln.strip() for ln in where.read_text(encoding="utf-8").splitlines()]
            images += [_resolve(ln, base) for ln in lines if ln]
        else:
            raise DatasetError.at(path, f"no image folder or list {where}", field=key)
    return [p for p in images if p.suffix.lower() in IMAGE_SUFFIXES]


def label_path(image: Path) -> Path:
    """.../images/a/b.jpg -> .../labels/a/b.txt (the last `images` folder in the path)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")  # labels beside the images


def _to_coco(
    images: list[Path], categories: list[dict[str, Any]], first_id: int
) -> tuple[dict[str, Any], int]:
    records, annotations = [], []
    for image_id, image in enumerate(images, start=first_id):
        width, height = _image_size(image)
        records.append({"id": image_id, "file_name": str(image), "width": width, "height": height})
        labels = label_path(image)
        if labels.is_file():
            for line_no, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    ann = _annotation(line, labels, line_no, width, height, len(categories))
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    coco = {"images": records, "annotations": annotations, "categories": categories}
    return coco, first_id + len(images)


def _image_size(image: Path) -> tuple[int, int]:
    try:
        with Image.open(image) as opened:  # reads the header only
            width, height = opened.size
            orientation = opened.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise DatasetError.at(image, "image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError.at(image, f"unreadable image: {exc}") from None
    # EXIF orientations 5-8 rotate by 90 degrees: the loader's image is then height x width.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _annotation(
    line: str, path: Path, line_no: int, width: int, height: int, num_classes: int
) -> dict[str, Any]:
    record = f"line {line_no}"
    fields = line.split()
    try:
        cls, values = int(fields[0]), [float(v) for v in fields[1:]]
    except ValueError:
        raise DatasetError.at(path, f"not numbers: {line.strip()!r}", record=record) from None
    if not 0 <= cls < num_classes:
        raise DatasetError.at(
            path, f"class {cls} is not in 0..{num_classes - 1}", record=record, field="class"
        )
    if len(values) == 4:
        cx, cy, w, h = values
        box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
        segmentation = None
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        box = [
            min(xs) * width,
            min(ys) * height,
            (max(xs) - min(xs)) * width,
            (max(ys) - min(ys)) * height,
        ]
        segmentation = [[v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]]
    else:
        raise DatasetError.at(
            path,
            f"expected `class cx cy w h` or a polygon `class x1 y1 x2 y2 x3 y3 ...`, got "
            f"{len(fields)} values",
            record=record,
        )
    if box[2] <= 0 or box[3] <= 0:
        raise DatasetError.at(path, f"box has no area: {line.strip()!r}", record=record)
    ann = {"category_id": cls, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
    if segmentation is not None:
        ann["segmentation"] = segmentation
    return ann
