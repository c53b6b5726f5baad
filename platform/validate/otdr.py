"""Great Expectations suites for an OTDR trace dataset (`<split>.json` + `<split>.npz`, or a
folder of .sor files: `otdr_data.format`).

The npz split files are read raw (not through `load_split`, which stops at the first bad
record); .sor files are read and labelled one by one as training reads them (a file that does
not read fails its split's "readable" check, named). Both are flattened into three tables and
checked with the shared GX machinery (suites.py):
  splits  one row per requested split: both files readable, the offsets cut the samples into
          the listed traces, the split has traces
  traces  trace ids present and unique; samples finite; a monotone distance axis (sample k of
          a trace lies at k * resolution_m: its range of the sample store runs forward and is
          not empty); resolution_m finite and > 0; num_samples matches the stored samples
  events  known types; labels inside their trace (0 <= start < end <= the trace's samples);
          no label listed twice in a trace (same type, start and end)
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from sightline.data.errors import DatasetError
from sightline.data.otdr import EVENT_TYPES, trace_record
from sightline.data.otdr_sor_folder import LabelRow, SorFolder
from sightline.data.sor import SorError
from sightline.data.sources import OTDRData
from sightline.validate.report import ValidationReport
from sightline.validate.suites import EITHER_MISSING, SuiteSet, TableSuite, is_true

SPLIT_COLUMNS = ["split", "files", "readable", "error", "trace_count", "event_count"]
TRACE_COLUMNS = [
    "split",
    "trace_index",
    "trace_id",
    "num_samples",
    "stored_samples",
    "resolution_m",
    "finite_samples",
    "axis_monotone",
]
EVENT_COLUMNS = [
    "split",
    "trace_index",
    "trace_id",
    "event_index",
    "type",
    "start",
    "end",
    "trace_samples",
]


def _split_checks() -> list[gxe.Expectation]:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="splits are requested"),
        is_true("readable", "split files are readable"),
        gxe.ExpectColumnValuesToBeBetween(
            column="trace_count", min_value=1, description="every split has traces"
        ),
    ]


def _trace_checks() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="trace_id", description="traces have ids"),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["split", "trace_id"], description="trace ids are unique"
        ),
        is_true("finite_samples", "trace samples are finite"),
        is_true("axis_monotone", "the distance axis is monotone"),
        gxe.ExpectColumnValuesToNotBeNull(
            column="resolution_m", description="traces have a finite resolution_m"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="resolution_m",
            min_value=0,
            strict_min=True,
            description="resolution_m is > 0",
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="num_samples",
            column_B="stored_samples",
            ignore_row_if=EITHER_MISSING,
            description="num_samples matches the samples stored for the trace",
        ),
    ]


def _event_checks() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column="type", value_set=list(EVENT_TYPES), description="event types are known"
        ),
        *(
            gxe.ExpectColumnValuesToNotBeNull(
                column=edge, description=f"events have a numeric {edge}"
            )
            for edge in ("start", "end")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="start", min_value=0, description="labels start inside the trace (start >= 0)"
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="end",
            column_B="start",
            ignore_row_if=EITHER_MISSING,
            description="labels are non-empty intervals (end > start)",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="trace_samples",
            column_B="end",
            or_equal=True,
            ignore_row_if=EITHER_MISSING,
            description="labels end inside the trace (end <= the trace's samples)",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["split", "trace_index", "type", "start", "end"],
            description="no label is listed twice in a trace",
        ),
    ]


SUITE_SET = SuiteSet(
    "otdr",
    {
        "splits": TableSuite(_split_checks, ["split", "files", "error"]),
        "traces": TableSuite(_trace_checks, ["split", "trace_index", "trace_id"]),
        "events": TableSuite(_event_checks, ["split", "trace_id", "event_index"]),
    },
)


def validate_otdr_dataset(cfg: OTDRData, project_root: Path, splits: list[str]) -> ValidationReport:
    """Check the requested splits of a trace dataset; never raises for bad data."""
    root = cfg.resolved_root(project_root)
    frames = (
        load_tables(root, splits) if cfg.format == "npz" else load_sor_tables(cfg, root, splits)
    )
    results = SUITE_SET.run_all(frames)
    return ValidationReport(
        dataset="otdr",
        splits=list(splits),
        success=all(r.success for r in results),
        row_counts={t: len(df) for t, df in frames.items() if t != "splits"},
        results=results,
    )


@dataclass(frozen=True)
class _RawSplit:
    records: list[dict[str, Any]]
    samples: np.ndarray
    offsets: np.ndarray


class _Unreadable(Exception):
    pass


def load_tables(root: Path, splits: list[str]) -> dict[str, pd.DataFrame]:
    """The splits, traces and events tables of the requested splits of the npz layout."""
    return _tables(splits, lambda split: _read_raw(root, split), lambda s: f"{s}.json, {s}.npz")


def load_sor_tables(cfg: OTDRData, root: Path, splits: list[str]) -> dict[str, pd.DataFrame]:
    """The same tables for a folder of .sor files: each split's files read and labelled as
    training reads them; every file that does not read is named in its split's error. The
    folder is listed and its labels CSV read once for all splits."""

    def files(split: str) -> str:
        return f".sor files of split {split!r} under {root}"

    try:
        folder = SorFolder.open(cfg, root)
        labels = folder.labels()
    except (DatasetError, SorError) as exc:
        failure = _Unreadable(str(exc))

        def unreadable(split: str) -> _RawSplit:
            raise failure

        return _tables(splits, unreadable, files)
    return _tables(splits, lambda split: _read_sor_split(folder, labels, split), files)


def _read_sor_split(
    folder: SorFolder, labels: dict[str, list[LabelRow]] | None, split: str
) -> _RawSplit:
    try:
        names = folder.split_files(split)
    except DatasetError as exc:
        raise _Unreadable(str(exc)) from None
    traces, problems = [], []
    for name in names:
        try:
            traces.append(folder.trace(name, labels))
        except (DatasetError, SorError) as exc:
            problems.append(str(exc))
    if problems:
        raise _Unreadable("; ".join(problems))
    lengths = [len(t.samples) for t in traces]
    return _RawSplit(
        records=[trace_record(t) for t in traces],
        samples=np.concatenate([t.samples for t in traces]) if traces else np.zeros(0, np.float32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    )


def _tables(
    splits: list[str], read: Callable[[str], _RawSplit], files: Callable[[str], str]
) -> dict[str, pd.DataFrame]:
    split_rows: list[dict[str, Any]] = []
    trace_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    for split in splits:
        row = {"split": split, "files": files(split), "readable": True}
        try:
            raw = read(split)
        except _Unreadable as exc:
            # No trace count: an unreadable split fails "readable", not also "has traces".
            split_rows.append({**row, "readable": False, "error": str(exc)})
            continue
        traces = [_trace_row(split, i, r, raw) for i, r in enumerate(raw.records)]
        events = [
            _event_row(trace, j, event)
            for trace, record in zip(traces, raw.records, strict=True)
            for j, event in enumerate(_events(record))
        ]
        trace_rows += traces
        event_rows += events
        split_rows.append({**row, "trace_count": len(traces), "event_count": len(events)})
    return {
        "splits": pd.DataFrame(split_rows, columns=SPLIT_COLUMNS),
        "traces": _frame(trace_rows, TRACE_COLUMNS, ids=("trace_id",)),
        "events": _frame(event_rows, EVENT_COLUMNS, ids=("trace_id", "type")),
    }


def _read_raw(root: Path, split: str) -> _RawSplit:
    meta_path, arrays_path = root / f"{split}.json", root / f"{split}.npz"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Unreadable(f"{meta_path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unreadable(f"{meta_path}: not readable JSON: {exc}") from None
    records = meta.get("traces") if isinstance(meta, dict) else None
    if not isinstance(records, list):
        raise _Unreadable(f"{meta_path}: 'traces' is missing or not a list")
    try:
        with np.load(arrays_path, allow_pickle=False) as arrays:
            samples, offsets = arrays["samples"], arrays["offsets"]
    except FileNotFoundError:
        raise _Unreadable(f"{arrays_path}: no such file") from None
    except KeyError as exc:
        raise _Unreadable(f"{arrays_path}: missing array {exc.args[0]!r}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _Unreadable(f"{arrays_path}: not a readable .npz: {exc}") from None
    if samples.ndim != 1 or offsets.shape != (len(records) + 1,):
        raise _Unreadable(
            f"{arrays_path}: offsets {offsets.shape} do not cut the samples into the "
            f"{len(records)} traces {meta_path.name} lists"
        )
    return _RawSplit([r if isinstance(r, dict) else {} for r in records], samples, offsets)


def _trace_row(split: str, index: int, record: dict[str, Any], raw: _RawSplit) -> dict[str, Any]:
    first, last = int(raw.offsets[index]), int(raw.offsets[index + 1])
    monotone = 0 <= first < last <= raw.samples.size
    samples = raw.samples[first:last] if monotone else raw.samples[:0]
    trace_id = record.get("trace_id")
    return {
        "split": split,
        "trace_index": index,
        "trace_id": trace_id if isinstance(trace_id, str) and trace_id else None,
        "num_samples": _number(record.get("num_samples")),
        "stored_samples": last - first if monotone else None,
        "resolution_m": _number(record.get("resolution_m")),
        "finite_samples": bool(np.isfinite(samples).all()) if monotone else None,
        "axis_monotone": monotone,
    }


def _events(record: dict[str, Any]) -> list[dict[str, Any]]:
    events = record.get("events")
    return [e if isinstance(e, dict) else {} for e in events] if isinstance(events, list) else []


def _event_row(trace: dict[str, Any], index: int, event: dict[str, Any]) -> dict[str, Any]:
    kind = event.get("type")
    return {
        "split": trace["split"],
        "trace_index": trace["trace_index"],
        "trace_id": trace["trace_id"],
        "event_index": index,
        "type": kind if isinstance(kind, str) else None,
        "start": _number(event.get("start")),
        "end": _number(event.get("end")),
        "trace_samples": trace["stored_samples"],
    }


def _number(value: Any) -> float | None:
    """A finite JSON number, else None (reported by the not-null checks)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _frame(rows: list[dict[str, Any]], columns: list[str], ids: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for column in ids:  # strings stay strings, a missing one stays None
        frame[column] = pd.Series([row[column] for row in rows], dtype=object)
    return frame
