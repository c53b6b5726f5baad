"""Trace splits from either layout `otdr_data.format` names; `format: sor` reads an archive of
Telcordia .sor files as it is.

`load_trace_split(cfg, split, project_root)` is the one way the OTDR stages read a split:
- npz: the synthetic `<root>/<split>.json + .npz` layout (sightline.data.otdr.load_split);
- sor: every `*.sor` under `root` (recursively, any case of the suffix). If `root` has split
  sub-folders (train/, val/ or valid/, test/: sightline.data.splits.split_alias), each is a
  split (files outside them are not read); otherwise every file is drawn into a split by
  `split_fractions` and `split_seed` from a hash of its path relative to root (the draw does
  not depend on the order files are listed in).

Labels of a .sor file: its instrument's KeyEvents table mapped to our four types
(sightline.data.sor.events_from_key_events), or, with `otdr_data.labels`, rows of a sidecar CSV
(relative to root) with columns `file` (path relative to root), `type` (one of EVENT_TYPES),
`position_m` (metres from the first sample) and optionally `extent_m` (default: one pulse). A
row with `file` alone (type and position empty) lists a file that has no events. A file the CSV
does not list keeps its KeyEvents labels; one with no KeyEvents either is an error naming it.
Each file's trace id is its path relative to root.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sightline.data.errors import DatasetError
from sightline.data.otdr import EVENT_TYPES, LABEL_OF_TYPE, Event, Trace, load_split
from sightline.data.sor import SorError, events_from_key_events, read_sor
from sightline.data.sources import OTDRData
from sightline.data.splits import draw_by_fraction, split_alias

SOR_SUFFIX = ".sor"
LABEL_COLUMNS = ("file", "type", "position_m")
OPTIONAL_LABEL_COLUMNS = ("extent_m",)


def load_trace_split(cfg: OTDRData, split: str, project_root: Path) -> list[Trace]:
    """The traces of one split, in the layout `cfg.format` names; bad data raises
    DatasetError or SorError naming the file, record and field."""
    root = cfg.resolved_root(project_root)
    if cfg.format == "npz":
        return load_split(root, split)
    folder = SorFolder.open(cfg, root)
    labels = folder.labels()
    return [folder.trace(name, labels) for name in folder.split_files(split)]


@dataclass(frozen=True)
class LabelRow:
    """One event of the sidecar CSV, as written (metres); `line` is its line in the CSV."""

    type: str
    position_m: float
    extent_m: float | None
    line: int


@dataclass(frozen=True)
class SorFolder:
    """A folder of .sor files and how its files fall into splits."""

    cfg: OTDRData
    root: Path
    splits: dict[str, list[str]]  # split -> file paths relative to root (posix), sorted
    from_folders: bool  # the splits are the root's sub-folders (else drawn by fraction)

    @classmethod
    def open(cls, cfg: OTDRData, root: Path) -> SorFolder:
        if not root.is_dir():
            raise DatasetError.at(root, "no such folder of .sor files", field="otdr_data.root")
        files = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() == SOR_SUFFIX and p.is_file()
        )
        if not files:
            raise DatasetError.at(root, "no .sor files under this folder", field="otdr_data.root")
        folders = _split_folders(root)
        if folders:
            splits = {
                split: [f for f in files if f.split("/", 1)[0] == folder]
                for split, folder in folders.items()
            }
            return cls(cfg, root, splits, from_folders=True)
        drawn = draw_by_fraction(files, str, cfg.split_fractions, cfg.split_seed)
        splits = {name: drawn.get(name, []) for name in cfg.split_fractions}  # a 0 share: empty
        return cls(cfg, root, splits, from_folders=False)

    @property
    def files(self) -> list[str]:
        return sorted(name for names in self.splits.values() for name in names)

    def split_files(self, split: str) -> list[str]:
        if split not in self.splits:
            how = "split sub-folders" if self.from_folders else "otdr_data.split_fractions"
            raise DatasetError.at(
                self.root,
                f"no split {split!r}; the {how} give {sorted(self.splits)}",
                field="otdr_data.splits",
            )
        return self.splits[split]

    def labels(self) -> dict[str, list[LabelRow]] | None:
        """The sidecar CSV's rows per file, or None when labels come from KeyEvents only."""
        if self.cfg.labels is None:
            return None
        return read_label_csv(self.root / self.cfg.labels, set(self.files))

    def trace(self, name: str, labels: dict[str, list[LabelRow]] | None) -> Trace:
        """One file read and labelled (CSV rows if it has any listed, else its KeyEvents)."""
        path = self.root / name
        trace = read_sor(path)
        csv_path = self.root / self.cfg.labels if self.cfg.labels else None
        if labels is not None and name in labels:
            events = [_event(trace, row, csv_path, name) for row in labels[name]]
        elif trace.key_events:
            events = events_from_key_events(trace)
        else:
            where = f"the labels CSV {csv_path} does not list it" if csv_path else "no labels CSV"
            raise DatasetError.at(
                path,
                f"no KeyEvents table to take labels from, and {where} (otdr_data.labels)",
                field="KeyEvents",
            )
        return dataclasses.replace(trace, events=events, trace_id=name)


def _split_folders(root: Path) -> dict[str, str]:
    folders: dict[str, str] = {}
    for child in sorted(root.iterdir()):
        split = split_alias(child.name) if child.is_dir() else None
        if split is None:
            continue
        if split in folders:
            raise DatasetError.at(
                root,
                f"two sub-folders name split {split!r}: {folders[split]}/ and {child.name}/",
                field="otdr_data.root",
            )
        folders[split] = child.name
    return folders


def read_label_csv(path: Path, files: set[str]) -> dict[str, list[LabelRow]]:
    """The sidecar CSV's events per file; a bad row raises DatasetError naming line and field."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError.at(path, "no such labels CSV", field="otdr_data.labels") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError.at(path, f"cannot read the labels CSV: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in LABEL_COLUMNS if c not in header]
    if missing:
        raise DatasetError.at(
            path, f"missing column(s) {missing}; the header has {header}", field=missing[0]
        )
    unknown = [c for c in header if c not in (*LABEL_COLUMNS, *OPTIONAL_LABEL_COLUMNS)]
    if unknown:
        raise DatasetError.at(path, f"unknown column(s) {unknown}", field=unknown[0])
    reader.fieldnames = header
    rows: dict[str, list[LabelRow]] = {}
    for raw in reader:
        where = f"line {reader.line_num}"
        if None in raw:  # DictReader's key for values past the header's columns
            raise DatasetError.at(
                path, f"more values than the header's {len(header)} columns", record=where
            )
        values = {key: (value or "").strip() for key, value in raw.items()}
        name = values["file"]
        if not name:
            raise DatasetError.at(path, "empty file name", record=where, field="file")
        if name not in files:
            raise DatasetError.at(
                path, f"{name!r} is not a .sor file under {path.parent}", record=where, field="file"
            )
        listed = rows.setdefault(name, [])
        if not any(values.get(c) for c in ("type", "position_m", *OPTIONAL_LABEL_COLUMNS)):
            continue  # the file is listed: it has no events
        if values["type"] not in LABEL_OF_TYPE:
            raise DatasetError.at(
                path,
                f"unknown event type {values['type']!r} (known: {EVENT_TYPES})",
                record=where,
                field="type",
            )
        position = _csv_number(values, "position_m", path, where)
        if position is None or position < 0:
            raise DatasetError.at(
                path, "needs a distance >= 0 in metres", record=where, field="position_m"
            )
        extent = _csv_number(values, "extent_m", path, where)
        if extent is not None and extent <= 0:
            raise DatasetError.at(path, "must be > 0 metres", record=where, field="extent_m")
        listed.append(LabelRow(values["type"], position, extent, reader.line_num))
    return rows


def _csv_number(values: dict[str, str], key: str, path: Path, where: str) -> float | None:
    text = values.get(key, "")
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DatasetError.at(path, f"not a finite number: {text!r}", record=where, field=key)
    return number


def _event(trace: Trace, row: LabelRow, csv_path: Path | None, name: str) -> Event:
    start = row.position_m / trace.resolution_m
    samples = len(trace.samples)
    if start >= samples:
        raise DatasetError.at(
            csv_path or name,
            f"{row.position_m} m is past the end of {name} ({trace.length_m:.1f} m)",
            record=f"line {row.line}",
            field="position_m",
        )
    width = row.extent_m / trace.resolution_m if row.extent_m else trace.pulse_event_samples
    return Event(
        type=row.type,
        start=start,
        end=min(start + width, float(samples)),
        resolution_m=trace.resolution_m,
    )


def describe_sor_folder(cfg: OTDRData, project_root: Path) -> dict[str, Any]:
    """What a `format: sor` dataset holds, for `sightline data inspect`; never raises for bad
    files: they are listed under `problems`."""
    root = cfg.resolved_root(project_root)
    summary: dict[str, Any] = {"format": "sor", "root": str(root), "problems": []}
    try:
        folder = SorFolder.open(cfg, root)
        labels = folder.labels()
    except (DatasetError, SorError) as exc:
        summary["problems"].append(str(exc))
        return summary
    events: Counter[str] = Counter()
    spacing: list[float] = []
    lengths: list[int] = []
    for name in folder.files:
        try:
            trace = folder.trace(name, labels)
        except (DatasetError, SorError) as exc:
            summary["problems"].append(str(exc))
            continue
        events.update(event.type for event in trace.events)
        spacing.append(trace.resolution_m)
        lengths.append(len(trace.samples))
    summary.update(
        splits_from="sub-folders" if folder.from_folders else "drawn by split_fractions",
        labels_from=f"CSV {cfg.labels} (else KeyEvents)" if cfg.labels else "KeyEvents",
        files_per_split={split: len(names) for split, names in folder.splits.items()},
        events_per_type={name: events.get(name, 0) for name in EVENT_TYPES},
        sample_spacing_m=[min(spacing), max(spacing)] if spacing else None,
        samples=[min(lengths), max(lengths)] if lengths else None,
    )
    return summary
