"""Pascal VOC (Annotations/*.xml, JPEGImages/, ImageSets/Main/<set>.txt) -> COCO dict.

Boxes: VOC corners are 1-based and inclusive, so pixel column `xmin` covers [xmin-1, xmin) in
COCO's continuous coordinates and the COCO box is [xmin-1, ymin-1, xmax-xmin+1, ymax-ymin+1].
'difficult' objects become `iscrowd: 1`: COCO evaluation then ignores them (neither a miss nor a
false positive, as VOC's own protocol does) and training drops them with the other crowd boxes.
Image ids are 1-based positions in the image-set file; category ids are 1-based positions in
`class_names`. VOC has no instance masks, so annotations carry no `segmentation`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sightline.data.errors import DatasetError

BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def parse_voc_xml(path: Path) -> dict[str, Any]:
    """One VOC annotation file -> {filename, width, height, objects: [{name, bbox, difficult}]}.

    `filename` is None when the file has no <filename>; `bbox` is VOC's [xmin, ymin, xmax, ymax].
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError.at(path, "no such annotation file") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise DatasetError.at(path, f"malformed XML at line {line} column {column}") from None
    size = _child(root, "size", path, "annotation")
    objects = [
        _parse_object(element, path, f"object #{index}")
        for index, element in enumerate(root.findall("object"))
    ]
    filename = root.findtext("filename")
    return {
        "filename": filename.strip() if filename and filename.strip() else None,
        "width": _positive_int(size, "width", path, "annotation", "size/width"),
        "height": _positive_int(size, "height", path, "annotation", "size/height"),
        "objects": objects,
    }


def voc_to_coco(
    voc_root: Path, image_set: str, class_names: list[str] | None = None
) -> dict[str, Any]:
    """Convert the images of one VOC image set to a COCO dict.

    Without `class_names` the categories are the sorted object names found in this image set;
    pass the names (e.g. from `voc_class_names` over all splits) to keep ids equal across splits.
    """
    voc_root = Path(voc_root)
    files = [annotation_path(voc_root, stem) for stem in read_image_set(voc_root, image_set)]
    return xml_files_to_coco(
        files, lambda xml, voc: voc["filename"] or f"{xml.stem}.jpg", class_names
    )


def xml_files_to_coco(
    xml_files: list[Path],
    image_name: Callable[[Path, dict[str, Any]], str],
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """VOC XML files -> one COCO dict; image ids are 1-based positions in `xml_files`,
    `image_name(xml_path, parsed)` gives each image's file_name."""
    parsed = [(path, parse_voc_xml(path)) for path in xml_files]
    names = class_names if class_names is not None else _object_names(p for _, p in parsed)
    category_id = {name: index + 1 for index, name in enumerate(names)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (path, voc) in enumerate(parsed, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": image_name(path, voc),
                "width": voc["width"],
                "height": voc["height"],
            }
        )
        for index, obj in enumerate(voc["objects"]):
            if obj["name"] not in category_id:
                raise DatasetError.at(
                    path,
                    f"class {obj['name']!r} is not one of {names}",
                    record=f"object #{index}",
                    field="name",
                )
            annotations.append(
                _coco_annotation(obj, len(annotations) + 1, image_id, category_id[obj["name"]])
            )
    categories = [
        {"id": cid, "name": name, "supercategory": "none"} for name, cid in category_id.items()
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def voc_class_names(voc_root: Path, image_sets: Iterable[str]) -> list[str]:
    """The sorted object names used over several image sets (one category list for all splits)."""
    voc_root = Path(voc_root)
    stems = {stem for image_set in image_sets for stem in read_image_set(voc_root, image_set)}
    return _object_names(parse_voc_xml(annotation_path(voc_root, stem)) for stem in sorted(stems))


def read_image_set(voc_root: Path, image_set: str) -> list[str]:
    """Image stems listed in ImageSets/Main/<image_set>.txt (first token of each line)."""
    path = Path(voc_root) / "ImageSets" / "Main" / f"{image_set}.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError.at(path, f"no such image set {image_set!r}") from None
    return [line.split()[0] for line in lines if line.strip()]


def annotation_path(voc_root: Path, stem: str) -> Path:
    return Path(voc_root) / "Annotations" / f"{stem}.xml"


def _coco_annotation(
    obj: dict[str, Any], ann_id: int, image_id: int, category_id: int
) -> dict[str, Any]:
    xmin, ymin, xmax, ymax = obj["bbox"]
    width, height = xmax - xmin + 1, ymax - ymin + 1
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [xmin - 1, ymin - 1, width, height],
        "area": width * height,
        "iscrowd": int(obj["difficult"]),
    }


def _object_names(parsed: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({obj["name"] for voc in parsed for obj in voc["objects"]})


def _parse_object(element: ET.Element, path: Path, record: str) -> dict[str, Any]:
    name = (element.findtext("name") or "").strip()
    if not name:
        raise DatasetError.at(path, "missing or empty", record=record, field="name")
    box = _child(element, "bndbox", path, record)
    xmin, ymin, xmax, ymax = (
        _number(box, key, path, record, f"bndbox/{key}") for key in BOX_FIELDS
    )
    if xmax < xmin or ymax < ymin:
        raise DatasetError.at(
            path,
            f"corners out of order: {[xmin, ymin, xmax, ymax]}",
            record=record,
            field="bndbox",
        )
    difficult = (element.findtext("difficult") or "0").strip()
    return {"name": name, "bbox": [xmin, ymin, xmax, ymax], "difficult": difficult == "1"}


def _child(element: ET.Element, tag: str, path: Path, record: str) -> ET.Element:
    child = element.find(tag)
    if child is None:
        raise DatasetError.at(path, "missing", record=record, field=tag)
    return child


def _number(element: ET.Element, tag: str, path: Path, record: str, field: str) -> int | float:
    text = (element.findtext(tag) or "").strip()
    try:
        value = float(text)
    except ValueError:
        problem = "missing" if not text else f"not a number: {text!r}"
        raise DatasetError.at(path, problem, record=record, field=field) from None
    return int(value) if value.is_integer() else value


def _positive_int(element: ET.Element, tag: str, path: Path, record: str, field: str) -> int:
    value = _number(element, tag, path, record, field)
    if not isinstance(value, int) or value <= 0:
        raise DatasetError.at(
            path, f"must be a positive integer, got {value}", record=record, field=field
        )
    return value
