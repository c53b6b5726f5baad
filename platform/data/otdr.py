"""OTDR traces: samples in dB along the fibre, their labelled events, and split files.

A trace is what an OTDR shows: one-way dB against distance, sampled every `resolution_m`
metres. Events are intervals of samples [start, end) with a type from `EVENT_TYPES`; the models
see them as label ids 1..4 (0 is "no event"). Traces read from Telcordia .sor files also carry the
instrument's own KeyEvents table (`key_events`), kept apart from the labels.

A split is two files: `<split>.npz` (all samples concatenated, float32, with offsets) and
`<split>.json` (per-trace metadata and events). Both are written with stable bytes.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sightline.data.errors import DatasetError

EVENT_TYPES = ("face_plate", "pass_through", "fiber_cut", "fiber_end")
LABEL_OF_TYPE = {name: index + 1 for index, name in enumerate(EVENT_TYPES)}
TYPE_OF_LABEL = {label: name for name, label in LABEL_OF_TYPE.items()}
NUM_CLASSES = len(EVENT_TYPES) + 1  # + background ("no event", label 0)
SPEED_OF_LIGHT_M_PER_S = 299_792_458.0
DEFAULT_GROUP_INDEX = 1.4682  # standard single-mode fibre at 1550 nm
SPLIT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Event:
    """One labelled event: samples [start, end) of a trace sampled every `resolution_m` metres.

    `loss_db` is the step loss the event adds (None where the fibre ends there: fiber_cut,
    fiber_end); `reflectance_db` is None for a non-reflective event.
    """

    type: str
    start: float
    end: float
    resolution_m: float
    loss_db: float | None = None
    reflectance_db: float | None = None

    def __post_init__(self) -> None:
        if self.type not in LABEL_OF_TYPE:
            raise ValueError(f"unknown event type {self.type!r}; known types: {EVENT_TYPES}")
        if not self.end > self.start >= 0:
            raise ValueError(f"event needs 0 <= start < end, got [{self.start}, {self.end})")
        if not self.resolution_m > 0:
            raise ValueError(f"event resolution_m must be > 0, got {self.resolution_m}")

    @property
    def label(self) -> int:
        return LABEL_OF_TYPE[self.type]

    @property
    def position_m(self) -> float:
        """Distance of the event's start from the first sample, in metres."""
        return self.start * self.resolution_m

    @property
    def extent_m(self) -> float:
        return (self.end - self.start) * self.resolution_m


@dataclass(frozen=True)
class KeyEvent:
    """A row of an instrument's KeyEvents table (.sor): its own analysis, not a label.

    `code` is the SR-4731 event code: code[0] '0' non-reflective, '1' reflective, '2' saturated
    reflective; code[1] 'E' end of fibre, 'F' found by software, 'M' manual, 'A' added by user.
    """

    number: int
    position_m: float  # from the first sample
    loss_db: float
    reflectance_db: float
    attenuation_db_per_km: float
    code: str
    loss_technique: str = "LS"
    comment: str = ""

    @property
    def reflective(self) -> bool:
        return self.code[:1] in ("1", "2")

    @property
    def is_end(self) -> bool:
        return self.code[1:2] == "E"


@dataclass(frozen=True)
class Trace:
    """One OTDR acquisition: `samples` (float32 dB, one-way) every `resolution_m` metres."""

    samples: np.ndarray
    resolution_m: float
    wavelength_nm: float
    pulse_width_ns: float
    events: list[Event] = field(default_factory=list)
    key_events: list[KeyEvent] = field(default_factory=list)
    group_index: float = DEFAULT_GROUP_INDEX
    trace_id: str = ""

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise ValueError(f"trace samples must be a non-empty 1-D array, got {samples.shape}")
        object.__setattr__(self, "samples", samples)
        if not self.resolution_m > 0:
            raise ValueError(f"trace resolution_m must be > 0, got {self.resolution_m}")
        for event in self.events:
            if not math.isclose(event.resolution_m, self.resolution_m, rel_tol=1e-9):
                raise ValueError(
                    f"event {event.type} is sampled every {event.resolution_m} m, the trace "
                    f"every {self.resolution_m} m"
                )
            if event.end > samples.size:
                raise ValueError(
                    f"event {event.type} [{event.start}, {event.end}) ends after the trace's "
                    f"{samples.size} samples"
                )

    @property
    def length_m(self) -> float:
        return len(self.samples) * self.resolution_m

    @property
    def pulse_extent_m(self) -> float:
        """Length of fibre the pulse covers at once (the width of an event it draws)."""
        return self.pulse_width_ns * 1e-9 * SPEED_OF_LIGHT_M_PER_S / (2 * self.group_index)

    @property
    def pulse_event_samples(self) -> float:
        """How many samples an event given by position only spans: one pulse, at least two."""
        return max(2.0, self.pulse_extent_m / self.resolution_m)

    def targets(self) -> dict[str, np.ndarray]:
        """The models' training target: segments (N, 2) float32 in samples, labels (N,) int64."""
        segments = np.array([[e.start, e.end] for e in self.events], dtype=np.float32)
        return {
            "segments": segments.reshape(-1, 2),
            "labels": np.array([e.label for e in self.events], dtype=np.int64),
        }


def save_split(traces: Sequence[Trace], out_dir: Path, split: str) -> tuple[Path, Path]:
    """Write `<split>.npz` and `<split>.json` under `out_dir`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(t.samples) for t in traces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    samples = np.concatenate([t.samples for t in traces]) if traces else np.zeros(0, np.float32)
    arrays_path = out_dir / f"{split}.npz"
    meta_path = out_dir / f"{split}.json"
    _write_npz(arrays_path, {"samples": samples.astype(np.float32), "offsets": offsets})
    meta = {
        "format_version": SPLIT_FORMAT_VERSION,
        "split": split,
        "event_types": list(EVENT_TYPES),
        "traces": [trace_record(t) for t in traces],
    }
    text = json.dumps(meta, sort_keys=True, separators=(",", ":")) + "\n"
    tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, meta_path)
    return arrays_path, meta_path


def load_split(root: Path, split: str) -> list[Trace]:
    """Read a split written by `save_split`; bad records raise DatasetError naming them."""
    root = Path(root)
    meta_path, arrays_path = root / f"{split}.json", root / f"{split}.npz"
    meta = _read_json(meta_path)
    records = meta.get("traces")
    if not isinstance(records, list):
        raise DatasetError.at(meta_path, "missing or not a list", field="traces")
    samples, offsets = _read_arrays(arrays_path, len(records))
    traces = []
    for index, record in enumerate(records):
        where = f"traces[{index}]"
        trace_samples = samples[offsets[index] : offsets[index + 1]]
        traces.append(_trace_from_record(record, trace_samples, meta_path, where))
    return traces


def trace_record(trace: Trace) -> dict[str, Any]:
    """The JSON record `save_split` stores for a trace (metadata and events; samples apart)."""
    return {
        "trace_id": trace.trace_id,
        "num_samples": len(trace.samples),
        "resolution_m": trace.resolution_m,
        "wavelength_nm": trace.wavelength_nm,
        "pulse_width_ns": trace.pulse_width_ns,
        "group_index": trace.group_index,
        "events": [
            {k: v for k, v in asdict(e).items() if k != "resolution_m"} for e in trace.events
        ],
        "key_events": [asdict(k) for k in trace.key_events],
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez stamps the current time into the zip; a fixed stamp keeps re-runs byte-identical.
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError.at(path, "no such OTDR split file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError.at(path, f"cannot read OTDR split metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise DatasetError.at(path, "top level must be a JSON object")
    return meta


def _read_arrays(path: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            samples, offsets = arrays["samples"], arrays["offsets"]
    except FileNotFoundError:
        raise DatasetError.at(path, "no such OTDR split file") from None
    except KeyError as exc:
        raise DatasetError.at(path, "missing array", field=str(exc.args[0])) from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError.at(path, f"cannot read OTDR samples: {exc}") from None
    if offsets.shape != (count + 1,) or offsets[-1] != samples.size or np.any(np.diff(offsets) < 0):
        raise DatasetError.at(
            path,
            f"offsets do not cut {samples.size} samples into the {count} traces the metadata lists",
            field="offsets",
        )
    return samples.astype(np.float32, copy=False), offsets


def _trace_from_record(record: Any, samples: np.ndarray, file: Path, where: str) -> Trace:
    if not isinstance(record, dict):
        raise DatasetError.at(file, "must be an object", record=where)
    numbers = {
        key: _number(record, key, file, where)
        for key in ("resolution_m", "wavelength_nm", "pulse_width_ns", "group_index")
    }
    if record.get("num_samples") != len(samples):
        raise DatasetError.at(
            file,
            f"says {record.get('num_samples')} samples, the .npz holds {len(samples)}",
            record=where,
            field="num_samples",
        )
    events = [
        _event(e, numbers["resolution_m"], len(samples), file, f"{where}.events[{i}]")
        for i, e in enumerate(_list(record, "events", file, where))
    ]
    key_events = [
        _key_event(k, file, f"{where}.key_events[{i}]")
        for i, k in enumerate(_list(record, "key_events", file, where))
    ]
    try:
        return Trace(
            samples=samples,
            events=events,
            key_events=key_events,
            trace_id=str(record.get("trace_id", "")),
            **numbers,
        )
    except ValueError as exc:
        raise DatasetError.at(file, str(exc), record=where) from None


def _event(raw: Any, resolution_m: float, num_samples: int, file: Path, where: str) -> Event:
    if not isinstance(raw, dict):
        raise DatasetError.at(file, "must be an object", record=where)
    if raw.get("type") not in LABEL_OF_TYPE:
        raise DatasetError.at(
            file,
            f"unknown event type {raw.get('type')!r} (known: {EVENT_TYPES})",
            record=where,
            field="type",
        )
    start, end = _number(raw, "start", file, where), _number(raw, "end", file, where)
    if not 0 <= start < end <= num_samples:
        raise DatasetError.at(
            file,
            f"[{start}, {end}) is not a non-empty interval inside the trace (0..{num_samples})",
            record=where,
            field="start/end",
        )
    return Event(
        type=raw["type"],
        start=start,
        end=end,
        resolution_m=resolution_m,
        loss_db=_optional_number(raw, "loss_db", file, where),
        reflectance_db=_optional_number(raw, "reflectance_db", file, where),
    )


def _key_event(raw: Any, file: Path, where: str) -> KeyEvent:
    if not isinstance(raw, dict):
        raise DatasetError.at(file, "must be an object", record=where)
    names = ("position_m", "loss_db", "reflectance_db", "attenuation_db_per_km")
    numbers = {name: _number(raw, name, file, where) for name in names}
    if not isinstance(raw.get("code"), str):
        raise DatasetError.at(file, "missing or not a string", record=where, field="code")
    return KeyEvent(
        number=int(_number(raw, "number", file, where)),
        code=raw["code"],
        loss_technique=str(raw.get("loss_technique", "")),
        comment=str(raw.get("comment", "")),
        **numbers,
    )


def _list(record: dict[str, Any], key: str, file: Path, where: str) -> list[Any]:
    value = record.get(key, [])
    if not isinstance(value, list):
        raise DatasetError.at(file, "must be a list", record=where, field=key)
    return value


def _number(record: dict[str, Any], key: str, file: Path, where: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DatasetError.at(
            file, f"missing or not a finite number: {value!r}", record=where, field=key
        )
    return float(value)


def _optional_number(record: dict[str, Any], key: str, file: Path, where: str) -> float | None:
    return None if record.get(key) is None else _number(record, key, file, where)
