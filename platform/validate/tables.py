"""Flatten a COCO detection split into pandas tables that Great Expectations can check.

One row per image (with what the file on disk really holds), one per annotation box (with the
facts the cross-table checks need: does its image / category exist, how big is its image) and
one per category. Every row carries its split and the record ids a user needs to find it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

IMAGE_COLUMNS = [
    "split",
    "image_id",
    "file_name",
    "width",
    "height",
    "file_exists",
    "decodes",
    "actual_width",
    "actual_height",
    "decode_error",
]
BOX_COLUMNS = [
    "split",
    "annotation_id",
    "image_id",
    "category_id",
    "file_name",
    "bbox_well_formed",
    "x",
    "y",
    "w",
    "h",
    "right",
    "bottom",
    "image_exists",
    "category_exists",
    "image_width",
    "image_height",
]
CATEGORY_COLUMNS = ["split", "category_id", "name"]
# Columns holding record ids keep their JSON values as they are (object dtype): a float column
# would print id 7 as 7.0 as soon as one record lacks its id.
ID_COLUMNS = {"image_id", "annotation_id", "category_id"}


@dataclass(frozen=True)
class DetectionTables:
    """The three tables of one or more splits."""

    images: pd.DataFrame
    boxes: pd.DataFrame
    categories: pd.DataFrame

    @classmethod
    def concat(cls, parts: Sequence[DetectionTables]) -> DetectionTables:
        return cls(
            images=_concat([p.images for p in parts], IMAGE_COLUMNS),
            boxes=_concat([p.boxes for p in parts], BOX_COLUMNS),
            categories=_concat([p.categories for p in parts], CATEGORY_COLUMNS),
        )


@dataclass(frozen=True)
class ImageProbe:
    """What one image file holds. `decodes` is None when there is no file to decode."""

    exists: bool
    decodes: bool | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


def probe_image(path: Path) -> ImageProbe:
    """Read the file once; size from the header, then verify() and a full decode.

    verify() catches corrupt chunks (bad CRCs), load() catches truncated pixel data; PIL needs
    a fresh Image after verify(), hence two opens of the same in-memory bytes.
    """
    if not path.is_file():
        return ImageProbe(exists=False)
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return ImageProbe(exists=True, decodes=False, error=f"{type(exc).__name__}: {exc}")
    return ImageProbe(exists=True, decodes=True, width=width, height=height)


def probe_images(paths: Iterable[Path | None]) -> list[ImageProbe]:
    """Probe many files in a thread pool (PIL releases the GIL while decoding); order is kept."""
    with ThreadPoolExecutor() as pool:
        return list(pool.map(lambda p: probe_image(p) if p else ImageProbe(exists=False), paths))


def image_table(split: str, coco: dict[str, Any], image_dir: Path) -> pd.DataFrame:
    entries = _records(coco, "images")
    probes = probe_images(_image_path(image_dir, e.get("file_name")) for e in entries)
    rows = [
        {
            "split": split,
            "image_id": _scalar(entry.get("id")),
            "file_name": _scalar(entry.get("file_name")),
            "width": _number(entry.get("width")),
            "height": _number(entry.get("height")),
            "file_exists": probe.exists,
            "decodes": probe.decodes,
            "actual_width": probe.width,
            "actual_height": probe.height,
            "decode_error": probe.error,
        }
        for entry, probe in zip(entries, probes, strict=True)
    ]
    return _frame(rows, IMAGE_COLUMNS)


def box_table(split: str, coco: dict[str, Any], images: pd.DataFrame) -> pd.DataFrame:
    """One row per annotation; `images` is this split's image table (for sizes and names)."""
    image_by_id = {
        row.image_id: row
        for row in images.drop_duplicates("image_id").itertuples(index=False)
        if row.image_id is not None
    }
    category_ids = {_scalar(c.get("id")) for c in _records(coco, "categories")}
    rows = []
    for entry in _records(coco, "annotations"):
        image_id, category_id = _scalar(entry.get("image_id")), _scalar(entry.get("category_id"))
        image = image_by_id.get(image_id)
        bbox = _bbox(entry.get("bbox"))
        x, y, w, h = bbox or (math.nan,) * 4
        rows.append(
            {
                "split": split,
                "annotation_id": _scalar(entry.get("id")),
                "image_id": image_id,
                "category_id": category_id,
                "file_name": image.file_name if image else None,
                "bbox_well_formed": bbox is not None,
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "right": x + w,
                "bottom": y + h,
                "image_exists": image is not None,
                "category_exists": category_id is not None and category_id in category_ids,
                "image_width": image.width if image else math.nan,
                "image_height": image.height if image else math.nan,
            }
        )
    return _frame(rows, BOX_COLUMNS)


def category_table(split: str, coco: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {"split": split, "category_id": _scalar(c.get("id")), "name": _scalar(c.get("name"))}
        for c in _records(coco, "categories")
    ]
    return _frame(rows, CATEGORY_COLUMNS)


def split_tables(split: str, coco: dict[str, Any], image_dir: Path) -> DetectionTables:
    images = image_table(split, coco, image_dir)
    return DetectionTables(
        images=images,
        boxes=box_table(split, coco, images),
        categories=category_table(split, coco),
    )


def _records(coco: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list under `key`; entries that are not objects become empty records (null fields)."""
    value = coco.get(key) or []
    return [entry if isinstance(entry, dict) else {} for entry in value]


def _scalar(value: Any) -> int | str | None:
    """An id or name as written in the JSON; anything that cannot be a key becomes null."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    """COCO [x, y, w, h], or None when it is not a list of four finite numbers."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    numbers = tuple(_number(v) for v in value)
    if not all(math.isfinite(n) for n in numbers):
        return None
    return numbers  # type: ignore[return-value]


def _image_path(image_dir: Path, file_name: Any) -> Path | None:
    return image_dir / file_name if isinstance(file_name, str) and file_name else None


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for column in ID_COLUMNS.intersection(columns):
        frame[column] = pd.Series([row[column] for row in rows], dtype=object)
    return frame


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return _frame([], columns)
    return pd.concat(frames, ignore_index=True)
