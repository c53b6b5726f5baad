"""COCO annotation files: read (top-level structure only), write (stable bytes), index checks.

`read_coco` checks only what every later stage relies on: a JSON object with `images`,
`annotations` and `categories` lists. Content is never fixed here; the validation stage judges it.
`check_coco_index` is the small set of per-record checks a loader needs before it builds a
pycocotools index (ids present, unique and referenced correctly), so bad records fail at load time
with their id and field named rather than as a KeyError deep inside a training worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from numbers import Real
from pathlib import Path
from typing import Any

from sightline.data.errors import DatasetError

TOP_LEVEL_LISTS = ("images", "annotations", "categories")


def read_coco(path: Path) -> dict[str, Any]:
    """Load a COCO annotation JSON and check its top-level structure."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError.at(path, "no such annotation file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError.at(path, f"cannot read annotation file: {exc}") from None
    try:
        coco = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError.at(
            path, f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(coco, dict):
        raise DatasetError.at(path, f"top level must be a JSON object, got {type(coco).__name__}")
    for key in TOP_LEVEL_LISTS:
        if key not in coco:
            raise DatasetError.at(path, "missing top-level key", field=key)
        if not isinstance(coco[key], list):
            raise DatasetError.at(
                path, f"must be a list, got {type(coco[key]).__name__}", field=key
            )
    return coco


def write_coco(coco: dict[str, Any], path: Path) -> None:
    """Write a COCO dict with stable bytes (sorted keys, compact separators), atomically.

    Compact like the official COCO files: an indent would make json use its slow pure-Python
    encoder, several times slower on annotation files with many polygons.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(coco, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_coco_index(coco: dict[str, Any], source: str | Path) -> None:
    """Check the record fields a loader indexes by: ids, references, image sizes, boxes."""
    image_ids = _unique_ids(coco["images"], "image", source)
    category_ids = _unique_ids(coco["categories"], "category", source)
    _unique_ids(coco["annotations"], "annotation", source)
    for image in coco["images"]:
        record = f"image id {image['id']}"
        _require_str(image, "file_name", source, record)
        for key in ("width", "height"):
            _require_positive_int(image, key, source, record)
    for category in coco["categories"]:
        _require_str(category, "name", source, f"category id {category['id']}")
    for ann in coco["annotations"]:
        _check_annotation_refs(ann, image_ids, category_ids, source)


def _unique_ids(records: Iterable[Any], kind: str, source: str | Path) -> set[int]:
    seen: set[int] = set()
    for position, record in enumerate(records):
        where = f"{kind} #{position}"
        if not isinstance(record, dict):
            raise DatasetError.at(
                source, f"must be an object, got {type(record).__name__}", record=where
            )
        _require_int(record, "id", source, where)
        if record["id"] in seen:
            raise DatasetError.at(
                source, "duplicate id", record=f"{kind} id {record['id']}", field="id"
            )
        seen.add(record["id"])
    return seen


def _check_annotation_refs(
    ann: dict[str, Any], image_ids: set[int], category_ids: set[int], source: str | Path
) -> None:
    record = f"annotation id {ann['id']}"
    _require_int(ann, "image_id", source, record)
    if ann["image_id"] not in image_ids:
        raise DatasetError.at(
            source, f"no image with id {ann['image_id']}", record=record, field="image_id"
        )
    _require_int(ann, "category_id", source, record)
    if ann["category_id"] not in category_ids:
        raise DatasetError.at(
            source, f"no category with id {ann['category_id']}", record=record, field="category_id"
        )
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise DatasetError.at(
            source,
            f"must be [x, y, width, height] numbers, got {bbox!r}",
            record=record,
            field="bbox",
        )
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise DatasetError.at(
            source, f"width and height must be positive, got {bbox!r}", record=record, field="bbox"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _require_int(record: dict[str, Any], key: str, source: str | Path, where: str) -> None:
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DatasetError.at(source, f"must be an integer, got {value!r}", record=where, field=key)


def _require_positive_int(record: dict[str, Any], key: str, source: str | Path, where: str) -> None:
    _require_int(record, key, source, where)
    if record[key] <= 0:
        raise DatasetError.at(
            source, f"must be positive, got {record[key]}", record=where, field=key
        )


def _require_str(record: dict[str, Any], key: str, source: str | Path, where: str) -> None:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise DatasetError.at(
            source, f"must be a non-empty string, got {value!r}", record=where, field=key
        )
