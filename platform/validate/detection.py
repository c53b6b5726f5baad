"""Great Expectations suites for a detection dataset (COCO; VOC is read as COCO by sightline.data).

Four tables are checked, each with its own ExpectationSuite run on an in-memory pandas batch:
  splits      one row per requested split: its annotation file was readable, it has images
  images      files exist and decode, JSON sizes match the files, ids unique per split
  boxes       positive size, inside the image (BOX_TOLERANCE_PX), known image and category ids,
              ids unique per split
  categories  ids unique per split
One ephemeral GX context (with its suites) is built per process and reused.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core import ExpectationValidationResult
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from sightline.config import DetectionData
from sightline.data.detection import load_split_source
from sightline.data.errors import DatasetError
from sightline.validate.report import EXAMPLE_ROWS, ExpectationOutcome, ValidationReport
from sightline.validate.tables import DetectionTables, split_tables

# Boxes may overhang the image by this much (float rounding in converters and annotation tools).
BOX_TOLERANCE_PX = 1.0

SPLIT_COLUMNS = ["split", "annotation_file", "readable", "error", "image_count", "box_count"]

# Rows may be ignored by a column-pair check only when a value is missing (e.g. an undecodable
# image has no actual size); other checks report the missing value.
EITHER_MISSING = "either_value_is_missing"


def _is_true(column: str, description: str) -> gxe.Expectation:
    """A boolean fact computed per row; null (not applicable) rows are skipped."""
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True], description=description)


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
        _is_true("readable", "annotation files are readable"),
        gxe.ExpectColumnValuesToBeBetween(
            column="image_count", min_value=1, description="every split has images"
        ),
    ]


def _image_checks() -> list[gxe.Expectation]:
    sizes = ("width", "height")
    return [
        *_has_ids("image_id", "image"),
        _is_true("file_exists", "image files exist"),
        _is_true("decodes", "image files decode"),
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
        _is_true("image_exists", "annotations reference existing image ids"),
        _is_true("category_exists", "annotations reference existing category ids"),
        _is_true("bbox_well_formed", "bbox is a list of four numbers [x, y, w, h]"),
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


@dataclass(frozen=True)
class TableSuite:
    checks: Callable[[], list[gxe.Expectation]]
    id_fields: list[str]  # what identifies a failing row in the report


SUITES: dict[str, TableSuite] = {
    "splits": TableSuite(_split_checks, ["split", "annotation_file", "error"]),
    "images": TableSuite(_image_checks, ["split", "image_id", "file_name", "decode_error"]),
    "boxes": TableSuite(_box_checks, ["split", "annotation_id", "image_id", "file_name"]),
    "categories": TableSuite(_category_checks, ["split", "category_id", "name"]),
}


@functools.cache
def _validation_definitions() -> dict[str, gx.ValidationDefinition]:
    """One ephemeral context, one dataframe asset + suite + validation definition per table."""
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    source = context.data_sources.add_pandas("sightline_detection")
    definitions = {}
    for table, spec in SUITES.items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = context.suites.add(gx.ExpectationSuite(name=f"detection_{table}"))
        for expectation in spec.checks():
            suite.add_expectation(expectation)
        definitions[table] = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"detection_{table}", data=batch, suite=suite)
        )
    return definitions


def validate_detection_dataset(
    cfg: DetectionData, project_root: Path, splits: list[str]
) -> ValidationReport:
    """Check the requested splits of a COCO detection dataset; never raises for bad data."""
    split_frame, tables = load_tables(cfg, project_root, splits)
    frames = {
        "splits": split_frame,
        "images": tables.images,
        "boxes": _with_box_limits(tables.boxes),
        "categories": tables.categories,
    }
    results = [outcome for table, df in frames.items() for outcome in run_suite(table, df)]
    return ValidationReport(
        dataset="detection",
        splits=list(splits),
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
    cfg: DetectionData, project_root: Path, splits: list[str]
) -> tuple[pd.DataFrame, DetectionTables]:
    """The per-split status table and the concatenated tables of every readable split."""
    status_rows, parts = [], []
    for split in splits:
        row = {"split": split, "annotation_file": cfg.splits.get(split), "readable": True}
        try:
            source = load_split_source(cfg, split, project_root)
        except DatasetError as exc:
            # No image count: an unreadable split fails "readable", not also "has images".
            status_rows.append({**row, "readable": False, "error": str(exc)})
            continue
        part = split_tables(split, source.coco, source.image_dir)
        parts.append(part)
        status_rows.append({**row, "image_count": len(part.images), "box_count": len(part.boxes)})
    return pd.DataFrame(status_rows, columns=SPLIT_COLUMNS), DetectionTables.concat(parts)


def run_suite(table: str, df: pd.DataFrame) -> list[ExpectationOutcome]:
    definition = _validation_definitions()[table]
    result = definition.run(
        batch_parameters={"dataframe": df},
        result_format={
            "result_format": "SUMMARY",
            "partial_unexpected_count": EXAMPLE_ROWS,
            "unexpected_index_column_names": SUITES[table].id_fields,
        },
    )
    return [_outcome(table, r) for r in result.results]


def _outcome(table: str, result: ExpectationValidationResult) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = config.kwargs
    columns = kwargs.get("column_list") or [
        kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs
    ]
    details = result.result or {}
    return ExpectationOutcome(
        table=table,
        expectation=config.type,
        description=config.description or config.type,
        columns=list(columns),
        success=bool(result.success),
        unexpected_count=int(details.get("unexpected_count") or 0),
        observed_value=_plain(details.get("observed_value")),
        examples=[
            _identity_first(_plain(row), SUITES[table].id_fields)
            for row in details.get("partial_unexpected_index_list") or []
        ],
        error=_exception_message(result.exception_info or {}),
    )


def _identity_first(row: dict[str, Any], id_fields: list[str]) -> dict[str, Any]:
    """Which record (split, ids, file) before the values that failed the check."""
    return {k: row[k] for k in id_fields if k in row} | {
        k: v for k, v in row.items() if k not in id_fields
    }


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX reports one exception as a flat dict, several as {metric id: flat dict}."""
    flat = [info] if "raised_exception" in info else list(info.values())
    messages = [str(e.get("exception_message")) for e in flat if e.get("raised_exception")]
    return "; ".join(messages) or None


def _plain(value: Any) -> Any:
    """JSON-ready Python values: numpy scalars unwrapped, NaN -> None, 64.0 -> 64."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    return value
