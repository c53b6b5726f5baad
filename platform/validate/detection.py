"""Great Expectations suites for a detection dataset (any layout; sightline.data.layouts reads
it as COCO).

Four tables are checked, each with its own ExpectationSuite run on an in-memory pandas batch:
  splits      one row per requested split: its annotation file was readable, it has images
  images      files exist and decode, JSON sizes match the files, ids unique per split
  boxes       positive size, inside the image (BOX_TOLERANCE_PX), known image and category ids,
              ids unique per split
  categories  ids unique per split
The suites run in the one GX context of suites.py, built once per process.
"""

from __future__ import annotations

from pathlib import Path

import great_expectations.expectations as gxe
import pandas as pd

from sightline.data.errors import DatasetError
from sightline.data.layouts import find_dataset
from sightline.data.layouts.base import PIPELINE_SPLITS
from sightline.data.sources import DetectionData
from sightline.validate.report import ValidationReport
from sightline.validate.suites import EITHER_MISSING, SuiteSet, TableSuite, is_true
from sightline.validate.tables import DetectionTables, split_tables

# Boxes may overhang the image by this much (float rounding in converters and annotation tools).
BOX_TOLERANCE_PX = 1.0

SPLIT_COLUMNS = ["split", "annotation_file", "readable", "error", "image_count", "box_count"]


def _has_ids(column: str, kind: str) -> list[gxe.Expectation]:
    """Every record has an id and ids are unique within each split."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"{kind}s have ids"),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["split", column], description=f"{kind} ids are unique"
        ),
    ]


def _split_checks() -> list[gxe.Expectation]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="splits are requested"),
        is_true("readable", "annotation files are readable"),
        gxe.ExpectColumnValuesToBeBetween(
            column="image_count", min_value=1, description="every split has images"
        ),
    ]


def _image_checks() -> list[gxe.Expectation]:
    sizes = ("width", "height")
    return [
        *_has_ids("image_id", "image"),
        is_true("file_exists", "image files exist"),
        is_true("decodes", "image files decode"),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=size, description=f"images have a {size}")
            for size in sizes
        ),
        *(
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=size,
                column_B=f"actual_{size}",
                ignore_row_if=EITHER_MISSING,
                description=f"image {size} in the JSON matches the file",
            )
            for size in sizes
        ),
    ]


def _box_checks() -> list[gxe.Expectation]:
    tolerance = f"{BOX_TOLERANCE_PX:g} px"
    return [
        *_has_ids("annotation_id", "annotation"),
        is_true("image_exists", "annotations reference existing image ids"),
        is_true("category_exists", "annotations reference existing category ids"),
        is_true("bbox_well_formed", "bbox is a list of four numbers [x, y, w, h]"),
        *(
            gxe.ExpectColumnValuesToBeBetween(
                column=side, min_value=0, strict_min=True, description=f"boxes have positive {name}"
            )
            for side, name in (("w", "width"), ("h", "height"))
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(
                column=start,
                min_value=-BOX_TOLERANCE_PX,
                description=f"boxes start inside the image ({start} >= -{tolerance})",
            )
            for start in ("x", "y")
        ),
        *(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=f"{edge}_limit",
                column_B=edge,
                or_equal=True,
                ignore_row_if=EITHER_MISSING,
                description=f"boxes end inside the image ({edge} <= image {size} + {tolerance})",
            )
            for edge, size in (("right", "width"), ("bottom", "height"))
        ),
    ]


def _category_checks() -> list[gxe.Expectation]:
    return _has_ids("category_id", "category")


SUITES: dict[str, TableSuite] = {
    "splits": TableSuite(_split_checks, ["split", "annotation_file", "error"]),
    "images": TableSuite(_image_checks, ["split", "image_id", "file_name", "decode_error"]),
    "boxes": TableSuite(_box_checks, ["split", "annotation_id", "image_id", "file_name"]),
    "categories": TableSuite(_category_checks, ["split", "category_id", "name"]),
}
SUITE_SET = SuiteSet("detection", SUITES)


def validate_detection_dataset(
    cfg: DetectionData, project_root: Path, splits: list[str] | None = None
) -> ValidationReport:
    """Check the requested splits of a detection dataset (default: the splits it has); never
    raises for bad data."""
    split_frame, tables = load_tables(cfg, project_root, splits)
    frames = {
        "splits": split_frame,
        "images": tables.images,
        "boxes": _with_box_limits(tables.boxes),
        "categories": tables.categories,
    }
    results = SUITE_SET.run_all(frames)
    return ValidationReport(
        dataset="detection",
        splits=split_frame["split"].tolist(),
        success=all(r.success for r in results),
        row_counts={t: len(df) for t, df in frames.items() if t != "splits"},
        results=results,
    )


def _with_box_limits(boxes: pd.DataFrame) -> pd.DataFrame:
    """Where a box may end at the latest: its image's size plus the tolerance."""
    return boxes.assign(
        right_limit=boxes["image_width"] + BOX_TOLERANCE_PX,
        bottom_limit=boxes["image_height"] + BOX_TOLERANCE_PX,
    )


def load_tables(
    cfg: DetectionData, project_root: Path, splits: list[str] | None = None
) -> tuple[pd.DataFrame, DetectionTables]:
    """The per-split status table and the concatenated tables of every readable split; with
    no `splits`, those the dataset has (the pipeline's three when no layout reads at all)."""
    try:
        found = find_dataset(cfg, project_root)
    except DatasetError as exc:  # no layout could be read at all: every split is unreadable
        rows = [
            {"split": s, "readable": False, "error": str(exc)}
            for s in (PIPELINE_SPLITS if splits is None else splits)
        ]
        return pd.DataFrame(rows, columns=SPLIT_COLUMNS), DetectionTables.concat([])
    status_rows, parts = [], []
    for split in found.split_names if splits is None else splits:
        try:
            source = found.source(split)
        except DatasetError as exc:
            # No image count: an unreadable split fails "readable", not also "has images".
            status_rows.append(
                {
                    "split": split,
                    "annotation_file": cfg.splits.get(split, exc.file),
                    "readable": False,
                    "error": str(exc),
                }
            )
            continue
        part = split_tables(split, source.coco, source.image_dir)
        parts.append(part)
        status_rows.append(
            {
                "split": split,
                "annotation_file": source.origin,
                "readable": True,
                "image_count": len(part.images),
                "box_count": len(part.boxes),
            }
        )
    return pd.DataFrame(status_rows, columns=SPLIT_COLUMNS), DetectionTables.concat(parts)
