"""Telcordia SR-4731 (Bellcore) .sor files, versions 1 and 2: read into a Trace, write fixtures.

A .sor file is a Map block listing the blocks that follow (name, revision, size), then the blocks
in that order. Version 2 starts with the text "Map\\0" and repeats each block's name at the start
of its body; version 1 has neither. All numbers are little-endian; strings end with a NUL.

What the reader takes:
* FxdParams: pulse width, wavelength (0.1 nm), group index (1e-5) and the data spacing (the
  time for 10,000 samples in 100 ps units): one sample spans `spacing·1e-14 s · c / n` of fibre;
* DataPts: the first trace; a sample is `-value · (scale_factor / 1000) / 1000` dB;
* KeyEvents: the instrument's own event table (times of flight in 100 ps -> metres from the
  first sample), kept as `Trace.key_events`, not as labels;
* GenParams: the nominal wavelength, used when FxdParams gives none.
Other blocks (SupParams, LnkParams, vendors' own) are skipped unread; the checksum is not verified
(instruments disagree on what it covers). Anything malformed raises SorError naming the block
and field.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sightline.data.otdr import SPEED_OF_LIGHT_M_PER_S, Event, KeyEvent, Trace

SECONDS_PER_TIME_UNIT = 1e-10  # times of flight and offsets: 100 ps
SECONDS_PER_SPACING_UNIT = 1e-14  # data spacing: 100 ps per 10,000 samples
MAX_RAW_SAMPLE = 65535
REQUIRED_BLOCKS = ("FxdParams", "DataPts")
BLOCK_ORDER = ("GenParams", "SupParams", "FxdParams", "KeyEvents", "DataPts", "Cksum")

# (field, struct format or "str", versions it exists in). Arrays and lists are handled in code.
Spec = tuple[tuple[str, str, tuple[int, ...]], ...]
BOTH, V2 = (1, 2), (2,)
GEN_PARAMS: Spec = (
    ("language code", "2s", BOTH),
    ("cable id", "str", BOTH),
    ("fiber id", "str", BOTH),
    ("fiber type", "H", V2),
    ("nominal wavelength", "H", BOTH),
    ("originating location", "str", BOTH),
    ("terminating location", "str", BOTH),
    ("cable code", "str", BOTH),
    ("current data flag", "2s", BOTH),
    ("user offset", "i", BOTH),
    ("user offset distance", "i", V2),
    ("operator", "str", BOTH),
    ("comment", "str", BOTH),
)
SUP_PARAMS: Spec = tuple(
    (name, "str", BOTH)
    for name in (
        "supplier",
        "mainframe id",
        "mainframe serial",
        "module id",
        "module serial",
        "software revision",
        "other",
    )
)
FXD_HEAD: Spec = (
    ("date time", "I", BOTH),
    ("units of distance", "2s", BOTH),
    ("actual wavelength", "H", BOTH),
    ("acquisition offset", "i", BOTH),
    ("acquisition offset distance", "i", V2),
    ("number of pulse widths", "H", BOTH),
)
FXD_ARRAYS: Spec = (
    ("pulse widths", "H", BOTH),
    ("data spacing", "I", BOTH),
    ("number of data points", "I", BOTH),
)
FXD_TAIL: Spec = (
    ("group index", "I", BOTH),
    ("backscatter coefficient", "H", BOTH),
    ("number of averages", "I", BOTH),
    ("averaging time", "H", V2),
    ("acquisition range", "I", BOTH),
    ("acquisition range distance", "i", V2),
    ("front panel offset", "i", BOTH),
    ("noise floor level", "H", BOTH),
    ("noise floor scale factor", "h", BOTH),
    ("power offset first point", "H", BOTH),
    ("loss threshold", "H", BOTH),
    ("reflectance threshold", "H", BOTH),
    ("end of fiber threshold", "H", BOTH),
    ("trace type", "2s", V2),
    ("window coordinates", "4i", V2),
)
KEY_EVENT: Spec = (
    ("event number", "H", BOTH),
    ("event propagation time", "I", BOTH),
    ("attenuation coefficient", "h", BOTH),
    ("event loss", "h", BOTH),
    ("event reflectance", "i", BOTH),
    ("event code", "6s", BOTH),
    ("loss measurement technique", "2s", BOTH),
    ("marker locations", "5i", V2),
    ("comment", "str", BOTH),
)
KEY_EVENTS_SUMMARY: Spec = (
    ("end-to-end loss", "i", BOTH),
    ("end-to-end marker start", "i", BOTH),
    ("end-to-end marker end", "I", BOTH),
    ("optical return loss", "H", BOTH),
    ("optical return loss marker start", "i", BOTH),
    ("optical return loss marker end", "I", BOTH),
)


class SorError(ValueError):
    """A .sor file is malformed; the message names the source, block and field."""

    def __init__(self, source: str, problem: str, *, block: str = "", field: str = "") -> None:
        where = [source] + [f"block {block!r}"] * bool(block) + [f"field {field!r}"] * bool(field)
        super().__init__(": ".join([*where, problem]))
        self.source, self.block, self.field = source, block, field


class _Fields:
    """Reads a block's fields in order; running out of bytes names the field being read."""

    def __init__(self, data: bytes, source: str, block: str, version: int) -> None:
        self.data, self.source, self.block, self.version = data, source, block, version
        self.pos = 0

    def error(self, field: str, problem: str) -> SorError:
        return SorError(self.source, problem, block=self.block, field=field)

    def value(self, field: str, fmt: str) -> Any:
        if fmt == "str":
            return self.string(field)
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise self.error(
                field,
                f"needs {size} bytes at offset {self.pos}, the block has {len(self.data)}",
            )
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        if fmt.endswith("s"):
            return values[0].split(b"\0")[0].decode("latin-1")
        return values if len(values) > 1 else values[0]

    def string(self, field: str, encoding: str | None = None) -> str:
        """NUL-terminated text: UTF-8 when it decodes, else Latin-1; or exactly `encoding`."""
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.error(field, f"text starting at offset {self.pos} has no terminating NUL")
        raw = bytes(self.data[self.pos : end])
        self.pos = end + 1
        if encoding is not None:
            return raw.decode(encoding)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def fields(self, spec: Spec) -> dict[str, Any]:
        return {
            name: self.value(name, fmt) for name, fmt, versions in spec if self.version in versions
        }

    def array(self, field: str, fmt: str, count: int) -> list[int]:
        values = self.value(field, f"{count}{fmt}")
        return list(values) if count > 1 else [values]


@dataclass(frozen=True)
class _Layout:
    version: int  # 1 or 2
    blocks: dict[str, bytes]  # bodies, without the version 2 name prefix


def read_sor(source: str | Path | bytes) -> Trace:
    """Read a .sor file (path or its bytes) into a Trace with the instrument's key events."""
    if isinstance(source, bytes | bytearray):
        data, name, trace_id = bytes(source), "<sor bytes>", ""
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SorError(str(path), f"cannot read: {exc}") from None
        name, trace_id = str(path), path.stem
    layout = _read_layout(data, name)
    for block in REQUIRED_BLOCKS:
        if block not in layout.blocks:
            raise SorError(name, f"missing; the file has {sorted(layout.blocks)}", block=block)
    fields = {
        block: _Fields(layout.blocks[block], name, block, layout.version) for block in layout.blocks
    }
    fxd = _fixed_parameters(fields["FxdParams"])
    general = fields["GenParams"].fields(GEN_PARAMS) if "GenParams" in fields else {}
    wavelength_nm = fxd["actual wavelength"] / 10 or float(general.get("nominal wavelength", 0))
    metres_per_time_unit = SECONDS_PER_TIME_UNIT * SPEED_OF_LIGHT_M_PER_S / fxd["group index"]
    offset_m = fxd["acquisition offset"] * metres_per_time_unit
    key_events = (
        _key_events(fields["KeyEvents"], metres_per_time_unit, offset_m)
        if "KeyEvents" in fields
        else []
    )
    return Trace(
        samples=_data_points(fields["DataPts"]),
        resolution_m=fxd["data spacing"][0]
        * SECONDS_PER_SPACING_UNIT
        * SPEED_OF_LIGHT_M_PER_S
        / fxd["group index"],
        wavelength_nm=wavelength_nm,
        pulse_width_ns=float(fxd["pulse widths"][0]),
        group_index=fxd["group index"],
        key_events=key_events,
        trace_id=trace_id,
    )


def _read_layout(data: bytes, source: str) -> _Layout:
    version = 2 if data.startswith(b"Map\0") else 1
    header = 4 if version == 2 else 0
    fields = _Fields(data, source, "Map", version)
    fields.pos = header
    fields.value("revision", "H")
    map_size = fields.value("block size", "I")
    count = fields.value("number of blocks", "H")
    if not header + 8 <= map_size <= len(data):
        raise fields.error("block size", f"{map_size} does not fit a file of {len(data)} bytes")
    if count < 1:
        raise fields.error("number of blocks", "must count the Map block itself (>= 1)")
    fields.data = data[:map_size]
    entries = [
        (
            # Latin-1, one char per byte: the name round-trips to the bytes a v2 body repeats.
            fields.string("block name", encoding="latin-1"),
            fields.value("revision", "H"),
            fields.value("size", "I"),
        )
        for _ in range(count - 1)
    ]
    for position, (name, _revision, _size) in enumerate(entries, start=1):
        if not name:
            raise fields.error("block name", f"entry {position} of the block list has no name")
    blocks: dict[str, bytes] = {}
    offset = map_size
    for name, _revision, size in entries:
        if offset + size > len(data):
            raise SorError(
                source,
                f"{size} bytes at offset {offset} run past the end of the file ({len(data)} bytes)",
                block=name,
                field="size",
            )
        body = data[offset : offset + size]
        offset += size
        if version == 2:
            prefix = name.encode("latin-1") + b"\0"
            if not body.startswith(prefix):
                found = body[: len(prefix)].split(b"\0")[0].decode("latin-1")
                raise SorError(
                    source,
                    f"the block starts with {found!r}, not its name",
                    block=name,
                    field="block name",
                )
            body = body[len(prefix) :]
        blocks.setdefault(name, body)
    return _Layout(version, blocks)


def _fixed_parameters(fields: _Fields) -> dict[str, Any]:
    fxd = fields.fields(FXD_HEAD)
    count = fxd["number of pulse widths"]
    if count < 1:
        raise fields.error("number of pulse widths", "must be >= 1, got 0")
    for name, fmt, _ in FXD_ARRAYS:
        fxd[name] = fields.array(name, fmt, count)
    fxd.update(fields.fields(FXD_TAIL))
    if fxd["group index"] <= 0:
        raise fields.error("group index", "must be > 0 (units of 1e-5, e.g. 146800)")
    fxd["group index"] /= 1e5
    if fxd["data spacing"][0] <= 0:
        raise fields.error("data spacing", "must be > 0")
    if fxd["pulse widths"][0] <= 0:
        raise fields.error("pulse widths", "must be > 0 ns")
    return fxd


def _key_events(fields: _Fields, metres_per_time_unit: float, offset_m: float) -> list[KeyEvent]:
    count = fields.value("number of events", "H")
    events = []
    for _ in range(count):
        raw = fields.fields(KEY_EVENT)
        code = raw["event code"]
        if len(code) < 2 or code[0] not in "012":
            raise fields.error(
                "event code", f"event {raw['event number']}: {code!r} is not an SR-4731 code"
            )
        events.append(
            KeyEvent(
                number=raw["event number"],
                position_m=raw["event propagation time"] * metres_per_time_unit - offset_m,
                loss_db=raw["event loss"] / 1000,
                reflectance_db=raw["event reflectance"] / 1000,
                attenuation_db_per_km=raw["attenuation coefficient"] / 1000,
                code=code,
                loss_technique=raw["loss measurement technique"],
                comment=raw["comment"],
            )
        )
    return events


def _data_points(fields: _Fields) -> np.ndarray:
    fields.value("number of data points", "I")
    if fields.value("number of scale factors", "H") < 1:
        raise fields.error("number of scale factors", "must be >= 1, got 0")
    count = fields.value("points in trace", "I")
    scale = fields.value("scale factor", "H")
    if count < 1:
        raise fields.error("points in trace", "the trace has no points")
    available = (len(fields.data) - fields.pos) // 2
    if count > available:
        raise fields.error("data points", f"says {count} points, the block holds only {available}")
    raw = np.frombuffer(fields.data, dtype="<u2", count=count, offset=fields.pos)
    return (-raw.astype(np.float64) * (scale / 1000) / 1000).astype(np.float32)


def write_sor(trace: Trace, path: str | Path, version: int = 2) -> Path:
    """Write `trace` as a .sor file of `version` 1 or 2 (fixtures, exports); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sor_bytes(trace, version))
    return path


def sor_bytes(trace: Trace, version: int = 2) -> bytes:
    """The .sor encoding of `trace`; key events from the trace, else from its labelled events."""
    if version not in (1, 2):
        raise ValueError(f"SR-4731 version must be 1 or 2, got {version}")
    key_events = trace.key_events or key_events_from_events(trace)
    bodies = {
        "GenParams": _pack(GEN_PARAMS, version, _gen_values(trace)),
        "SupParams": _pack(SUP_PARAMS, version, {"supplier": "Sightline"}),
        "FxdParams": _fxd_body(trace, version),
        "KeyEvents": _key_events_body(trace, key_events, version),
        "DataPts": _data_points_body(trace),
    }
    revision = 100 * version
    names = [*bodies, "Cksum"]
    named = {
        name: (name.encode("latin-1") + b"\0" if version == 2 else b"") + body
        for name, body in bodies.items()
    }
    checksum_size = (6 if version == 2 else 0) + 2
    sizes = [len(named[name]) for name in bodies] + [checksum_size]
    entries = b"".join(
        name.encode("latin-1") + b"\0" + struct.pack("<HI", revision, size)
        for name, size in zip(names, sizes, strict=True)
    )
    header = b"Map\0" if version == 2 else b""
    map_size = len(header) + 8 + len(entries)
    map_block = header + struct.pack("<HIH", revision, map_size, len(names) + 1) + entries
    content = map_block + b"".join(named.values()) + (b"Cksum\0" if version == 2 else b"")
    return content + struct.pack("<H", binascii.crc_hqx(content, 0xFFFF))


def _pack(spec: Spec, version: int, values: dict[str, Any]) -> bytes:
    out = bytearray()
    for name, fmt, versions in spec:
        if version not in versions:
            continue
        value = values.get(name, _default(fmt))
        if fmt == "str":
            out += str(value).encode("utf-8") + b"\0"
        elif fmt.endswith("s"):
            out += struct.pack("<" + fmt, str(value).encode("latin-1"))
        elif isinstance(value, Iterable):
            out += struct.pack("<" + fmt, *value)
        else:
            out += struct.pack("<" + fmt, value)
    return bytes(out)


def _default(fmt: str) -> Any:
    if fmt == "str" or fmt.endswith("s"):
        return ""
    count = len(struct.unpack("<" + fmt, bytes(struct.calcsize("<" + fmt))))
    return (0,) * count if count > 1 else 0


def _gen_values(trace: Trace) -> dict[str, Any]:
    return {
        "language code": "EN",
        "cable id": trace.trace_id,
        "fiber type": 652,
        "nominal wavelength": round(trace.wavelength_nm),
        "current data flag": "BC",
    }


def _time_units(metres: float, group_index: float) -> int:
    return round(metres * group_index / (SECONDS_PER_TIME_UNIT * SPEED_OF_LIGHT_M_PER_S))


def _fxd_body(trace: Trace, version: int) -> bytes:
    spacing = round(
        trace.resolution_m * trace.group_index / (SECONDS_PER_SPACING_UNIT * SPEED_OF_LIGHT_M_PER_S)
    )
    values = {
        "units of distance": "mt",
        "actual wavelength": round(trace.wavelength_nm * 10),
        "number of pulse widths": 1,
        "pulse widths": [round(trace.pulse_width_ns)],
        "data spacing": [spacing],
        "number of data points": [len(trace.samples)],
        "group index": round(trace.group_index * 1e5),
        "backscatter coefficient": 800,
        "number of averages": 1,
        "acquisition range": _time_units(trace.length_m, trace.group_index),
        "trace type": "ST",
        "window coordinates": (0, 0, 0, 0),
    }
    head = _pack(FXD_HEAD, version, values)
    arrays = b"".join(struct.pack(f"<{fmt}", values[name][0]) for name, fmt, _ in FXD_ARRAYS)
    return head + arrays + _pack(FXD_TAIL, version, values)


def _key_events_body(trace: Trace, key_events: list[KeyEvent], version: int) -> bytes:
    rows = [
        _pack(
            KEY_EVENT,
            version,
            {
                "event number": event.number,
                "event propagation time": _time_units(event.position_m, trace.group_index),
                "attenuation coefficient": round(event.attenuation_db_per_km * 1000),
                "event loss": round(event.loss_db * 1000),
                "event reflectance": round(event.reflectance_db * 1000),
                "event code": event.code,
                "loss measurement technique": event.loss_technique,
                "marker locations": (0, 0, 0, 0, 0),
                "comment": event.comment,
            },
        )
        for event in key_events
    ]
    total_loss = round(sum(e.loss_db for e in key_events) * 1000)
    summary = _pack(KEY_EVENTS_SUMMARY, version, {"end-to-end loss": total_loss})
    return struct.pack("<H", len(key_events)) + b"".join(rows) + summary


def _data_points_body(trace: Trace) -> bytes:
    samples = trace.samples.astype(np.float64)
    if samples.max() > 0:
        raise SorError(
            trace.trace_id or "<trace>",
            f"samples up to {samples.max():.3f} dB; .sor stores levels <= 0 dB only",
            block="DataPts",
            field="data points",
        )
    # dB = -value * (scale / 1000) / 1000: the smallest scale that fits the deepest sample.
    scale = max(1000, int(np.ceil(-samples.min() * 1e6 / MAX_RAW_SAMPLE)))
    raw = np.clip(np.round(-samples * 1e6 / scale), 0, MAX_RAW_SAMPLE).astype("<u2")
    header = struct.pack("<IHIH", len(raw), 1, len(raw), scale)
    return header + raw.tobytes()


def key_events_from_events(trace: Trace) -> list[KeyEvent]:
    """An instrument-style event table for a labelled trace (what write_sor stores for it)."""
    rows = []
    for number, event in enumerate(trace.events, start=1):
        ends_fibre = event.type in ("fiber_cut", "fiber_end")
        reflective = event.reflectance_db is not None
        rows.append(
            KeyEvent(
                number=number,
                position_m=event.position_m,
                loss_db=event.loss_db or 0.0,
                reflectance_db=event.reflectance_db or 0.0,
                attenuation_db_per_km=0.0,
                code=f"{int(reflective)}{'E' if ends_fibre else 'F'}9999",
            )
        )
    return rows


def events_from_key_events(trace: Trace) -> list[Event]:
    """The instrument's key events as labelled events (a reference for real files).

    Reflective ends become fiber_end, non-reflective ends fiber_cut, other reflective events
    face_plate, the rest pass_through. Each spans one pulse; the launch event at the first
    sample is not one of the four types and is left out.
    """
    width = trace.pulse_event_samples
    events = []
    for key in trace.key_events:
        start = key.position_m / trace.resolution_m
        if start < 1 or start >= len(trace.samples):
            continue
        if key.is_end:
            kind = "fiber_end" if key.reflective else "fiber_cut"
        else:
            kind = "face_plate" if key.reflective else "pass_through"
        events.append(
            Event(
                type=kind,
                start=start,
                end=min(start + width, float(len(trace.samples))),
                resolution_m=trace.resolution_m,
                loss_db=None if key.is_end else key.loss_db,
                reflectance_db=key.reflectance_db if key.reflective else None,
            )
        )
    return events
