"""Detection datasets written in the layouts users bring (sightline.data.layouts), from one COCO
dataset: what `format: auto` must read without restructuring. Each writer follows the layout's
own tool (Roboflow's export, labelImg, Ultralytics), not our reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

Coco = dict[str, Any]


def read_synthetic(
    source: Path, names: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, Coco]:
    """The synthetic layout (source/annotations/<split>.json, images under source/images/)."""
    return {s: json.loads((source / "annotations" / f"{s}.json").read_text()) for s in names}


def _images(coco: Coco) -> list[dict[str, Any]]:
    return sorted(coco["images"], key=lambda im: im["id"])


def write_roboflow(dest: Path, image_root: Path, splits: dict[str, Coco]) -> Path:
    """Roboflow's COCO export: train/ valid/ test/ with `_annotations.coco.json` beside the JPEGs
    and flat file names; ids from 0, and a category id 0 for the dataset itself (Roboflow's
    "supercategory" entry), which no annotation uses."""
    folders = {"train": "train", "val": "valid", "test": "test"}
    for split, coco in splits.items():
        folder = dest / folders[split]
        folder.mkdir(parents=True)
        id_of = {im["id"]: i for i, im in enumerate(_images(coco))}
        images = []
        for image in _images(coco):
            name = Path(image["file_name"]).name
            shutil.copy(image_root / image["file_name"], folder / name)
            images.append({**image, "id": id_of[image["id"]], "file_name": name})
        annotations = [
            {**a, "id": i, "image_id": id_of[a["image_id"]]}
            for i, a in enumerate(coco["annotations"])
        ]
        categories = [{"id": 0, "name": "shapes", "supercategory": "none"}] + [
            {**c, "supercategory": "shapes"} for c in coco["categories"]
        ]
        (folder / "_annotations.coco.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    return dest


def voc_xml(image: dict[str, Any], objects: list[tuple[str, list[float]]]) -> str:
    parts = [
        f"<annotation><folder>images</folder><filename>{Path(image['file_name']).name}</filename>",
        f"<size><width>{image['width']}</width><height>{image['height']}</height>",
        "<depth>3</depth></size>",
    ]
    for name, (x, y, w, h) in objects:
        # labelImg writes 1-based inclusive integer corners.
        xmin, ymin = round(x) + 1, round(y) + 1
        xmax, ymax = round(x + w), round(y + h)
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def _objects(coco: Coco, image_id: int) -> list[tuple[str, list[float]]]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return [
        (names[a["category_id"]], a["bbox"])
        for a in coco["annotations"]
        if a["image_id"] == image_id
    ]


def write_labelimg(dest: Path, image_root: Path, splits: dict[str, Coco], lists: bool) -> Path:
    """labelImg's folder: images/ + annotations/<stem>.xml, no ImageSets; with `lists`, the
    splits as CSV files (filename,split header) beside them, else none (drawn by the reader)."""
    (dest / "images").mkdir(parents=True)
    (dest / "annotations").mkdir()
    for split, coco in splits.items():
        rows = ["filename"]
        for image in _images(coco):
            name = Path(image["file_name"]).name
            shutil.copy(image_root / image["file_name"], dest / "images" / name)
            xml = voc_xml(image, _objects(coco, image["id"]))
            (dest / "annotations" / f"{Path(name).stem}.xml").write_text(xml)
            rows.append(name)
        if lists:
            (dest / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return dest


def write_voc_devkit(dest: Path, image_root: Path, splits: dict[str, Coco]) -> Path:
    """VOCdevkit/VOC2007: Annotations/, JPEGImages/, ImageSets/Main/<split>.txt."""
    year = dest / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / folder).mkdir(parents=True)
    for split, coco in splits.items():
        stems = []
        for image in _images(coco):
            name = Path(image["file_name"]).name
            shutil.copy(image_root / image["file_name"], year / "JPEGImages" / name)
            xml = voc_xml(image, _objects(coco, image["id"]))
            (year / "Annotations" / f"{Path(name).stem}.xml").write_text(xml)
            stems.append(Path(name).stem)
        (year / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return dest


def write_yolo(dest: Path, image_root: Path, splits: dict[str, Coco]) -> Path:
    """Ultralytics: data.yaml (path, train/val/test, names) + images/<split>/, labels/<split>/
    with `class cx cy w h` normalised lines; class index = position in the category list."""
    first = next(iter(splits.values()))
    index = {c["id"]: i for i, c in enumerate(first["categories"])}
    spec: dict[str, Any] = {
        "path": ".",
        "names": {i: c["name"] for i, c in enumerate(first["categories"])},
    }
    for split, coco in splits.items():
        (dest / "images" / split).mkdir(parents=True)
        (dest / "labels" / split).mkdir(parents=True)
        spec[split] = f"images/{split}"
        for image in _images(coco):
            name = Path(image["file_name"]).name
            shutil.copy(image_root / image["file_name"], dest / "images" / split / name)
            lines = []
            for a in coco["annotations"]:
                if a["image_id"] != image["id"]:
                    continue
                x, y, w, h = a["bbox"]
                cx, cy = (x + w / 2) / image["width"], (y + h / 2) / image["height"]
                lines.append(
                    f"{index[a['category_id']]} {cx:.6f} {cy:.6f} "
                    f"{w / image['width']:.6f} {h / image['height']:.6f}"
                )
            if lines:  # Ultralytics writes no file for a background image
                (dest / "labels" / split / f"{Path(name).stem}.txt").write_text("\n".join(lines))
    (dest / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def write_single_coco(dest: Path, image_root: Path, splits: dict[str, Coco]) -> Path:
    """One COCO file for everything (no splits), images under images/."""
    images, annotations, next_image, categories = [], [], 1, None
    for coco in splits.values():
        categories = coco["categories"]
        new_id = {}
        for image in _images(coco):
            new_id[image["id"]] = next_image
            images.append({**image, "id": next_image})
            target = dest / "images" / image["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(image_root / image["file_name"], target)
            next_image += 1
        annotations += [
            {**a, "id": len(annotations) + i + 1, "image_id": new_id[a["image_id"]]}
            for i, a in enumerate(coco["annotations"])
        ]
    (dest / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return dest
