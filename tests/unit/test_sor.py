"""The SR-4731 .sor reader and writer: round trips (v1, v2), hand-built files, malformed input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from sightline.data.otdr import SPEED_OF_LIGHT_M_PER_S, Event, KeyEvent, Trace
from sightline.data.sor import (
    SorError,
    events_from_key_events,
    key_events_from_events,
    read_sor,
    sor_bytes,
    write_sor,
)

KEY_EVENTS = [
    KeyEvent(1, 0.0, 0.0, -48.5, 0.0, "1F9999", "LS", "launch"),
    KeyEvent(2, 1234.5, 0.25, 0.0, 0.198, "0F9999", "2P", "splice"),
    KeyEvent(3, 2100.0, 0.0, -14.2, 0.2, "1E9999", "LS", ""),
]


def hand_trace(**changes: object) -> Trace:
    samples = np.linspace(-4.0, -12.0, 3000, dtype=np.float32)
    samples[2600:] = -35.0
    values: dict[str, object] = {
        "samples": samples,
        "resolution_m": 0.8168,
        "wavelength_nm": 1550.0,
        "pulse_width_ns": 100.0,
        "group_index": 1.4682,
        "key_events": KEY_EVENTS,
        "trace_id": "hand",
    }
    values.update(changes)
    return Trace(**values)  # type: ignore[arg-type]


def assemble(blocks: dict[str, bytes], version: int) -> bytes:
    """A .sor file built by hand from block bodies, independently of the writer."""
    prefix = b"Map\0" if version == 2 else b""
    named = {
        name: (name.encode() + b"\0" if version == 2 else b"") + body
        for name, body in blocks.items()
    }
    entries = b"".join(
        name.encode() + b"\0" + struct.pack("<HI", 100 * version, len(body))
        for name, body in named.items()
    )
    map_size = len(prefix) + 8 + len(entries)
    head = prefix + struct.pack("<HIH", 100 * version, map_size, len(blocks) + 1)
    return head + entries + b"".join(named.values())


def v1_fixed_parameters(group_index: int = 146800, spacing: int = 1_000_000) -> bytes:
    """FxdParams v1: 1310 nm, one 100 ns pulse, 4 points; then the fields the reader skips."""
    head = struct.pack("<I2sHiH", 0, b"mt", 13100, 0, 1)
    arrays = struct.pack("<HII", 100, spacing, 4)
    tail = struct.pack("<IHIIiHhHHHH", group_index, 800, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    return head + arrays + tail


def v1_key_events(code: bytes = b"1E9999") -> bytes:
    event = struct.pack("<HIhhi6s2s", 1, 10_000, 200, 0, -14_000, code, b"LS") + b"end\0"
    summary = struct.pack("<iiIHiI", 0, 0, 0, 0, 0, 0)
    return struct.pack("<H", 1) + event + summary


def v1_data_points(count: int = 4) -> bytes:
    return struct.pack("<IHIH", 4, 1, count, 1000) + struct.pack("<4H", 0, 1000, 2000, 65535)


def v1_file(**blocks: bytes) -> bytes:
    parts = {
        "FxdParams": v1_fixed_parameters(),
        "KeyEvents": v1_key_events(),
        "DataPts": v1_data_points(),
    }
    parts.update(blocks)
    return assemble({k: v for k, v in parts.items() if v}, version=1)


@pytest.mark.parametrize("version", [1, 2])
def test_round_trip_keeps_samples_resolution_and_key_events(version: int) -> None:
    trace = hand_trace()
    back = read_sor(sor_bytes(trace, version))
    assert back.resolution_m == pytest.approx(trace.resolution_m, rel=1e-6)
    assert (back.wavelength_nm, back.pulse_width_ns) == (1550.0, 100.0)
    assert back.group_index == pytest.approx(1.4682)
    assert np.abs(back.samples - trace.samples).max() <= 0.0005 + 1e-6
    assert len(back.key_events) == 3
    for got, sent in zip(back.key_events, KEY_EVENTS, strict=True):
        assert got.position_m == pytest.approx(sent.position_m, abs=0.02)
        assert (got.number, got.code, got.loss_technique, got.comment) == (
            sent.number,
            sent.code,
            sent.loss_technique,
            sent.comment,
        )
        assert (got.loss_db, got.reflectance_db) == (sent.loss_db, sent.reflectance_db)
        assert got.attenuation_db_per_km == pytest.approx(sent.attenuation_db_per_km)
    assert back.key_events[2].is_end and back.key_events[2].reflective
    assert not back.key_events[1].reflective


def test_versions_differ_in_layout_as_the_standard_says() -> None:
    v1, v2 = sor_bytes(hand_trace(), 1), sor_bytes(hand_trace(), 2)
    assert v2.startswith(b"Map\0") and not v1.startswith(b"Map")
    assert struct.unpack_from("<H", v1)[0] == 100 and struct.unpack_from("<H", v2, 4)[0] == 200
    assert v2.count(b"FxdParams\0") == 2 and v1.count(b"FxdParams\0") == 1  # map + block body
    assert len(v2) > len(v1)


def test_write_and_read_a_file_on_disk(tmp_path: Path) -> None:
    path = write_sor(hand_trace(), tmp_path / "sub" / "link_a.sor", version=1)
    back = read_sor(path)
    assert back.trace_id == "link_a" and len(back.samples) == 3000


def test_deep_traces_get_a_larger_scale_factor() -> None:
    samples = np.linspace(0.0, -90.0, 500, dtype=np.float32)
    back = read_sor(sor_bytes(hand_trace(samples=samples, key_events=[])))
    assert back.samples.min() == pytest.approx(-90.0, abs=0.002)
    assert np.abs(back.samples - samples).max() < 0.002


def test_a_hand_built_v1_file_reads_with_the_standard_units() -> None:
    trace = read_sor(v1_file())
    # 1,000,000 x 100 ps per 10,000 samples = 10 ns per sample, at c / 1.468.
    assert trace.resolution_m == pytest.approx(10e-9 * SPEED_OF_LIGHT_M_PER_S / 1.468)
    assert (trace.wavelength_nm, trace.pulse_width_ns) == (1310.0, 100.0)
    assert trace.samples.tolist() == pytest.approx([0.0, -1.0, -2.0, -65.535])
    (event,) = trace.key_events
    assert event.position_m == pytest.approx(1e-6 * SPEED_OF_LIGHT_M_PER_S / 1.468)  # 1 µs
    assert (event.reflectance_db, event.attenuation_db_per_km, event.comment) == (
        -14.0,
        0.2,
        "end",
    )


def test_labelled_events_become_key_events_and_back() -> None:
    resolution = 0.5
    events = [
        Event("face_plate", 400, 420, resolution, loss_db=0.5, reflectance_db=-45.0),
        Event("pass_through", 800, 815, resolution, loss_db=0.2),
        Event("fiber_cut", 1200, 1230, resolution),
    ]
    trace = hand_trace(resolution_m=resolution, key_events=[], events=events)
    codes = [k.code for k in key_events_from_events(trace)]
    assert codes == ["1F9999", "0F9999", "0E9999"]
    back = read_sor(sor_bytes(trace))
    recovered = events_from_key_events(back)
    assert [e.type for e in recovered] == ["face_plate", "pass_through", "fiber_cut"]
    assert [e.start for e in recovered] == pytest.approx([400, 800, 1200], abs=0.05)
    assert recovered[0].reflectance_db == -45.0 and recovered[1].loss_db == 0.2


def test_the_launch_key_event_is_not_a_labelled_event() -> None:
    recovered = events_from_key_events(hand_trace())
    assert [e.type for e in recovered] == ["pass_through", "fiber_end"]


def test_levels_above_0_db_cannot_be_written() -> None:
    with pytest.raises(SorError, match="DataPts") as caught:
        sor_bytes(hand_trace(samples=np.array([0.5, -1.0, -2.0], dtype=np.float32)))
    assert caught.value.block == "DataPts"


@pytest.mark.parametrize(
    ("data", "block", "field"),
    [
        (b"", "Map", "revision"),
        (b"Map\0" + struct.pack("<HIH", 200, 99999, 3), "Map", "block size"),
        (v1_file(DataPts=b""), "DataPts", ""),
        (v1_file()[:-5], "DataPts", "size"),
        (v1_file(FxdParams=v1_fixed_parameters(group_index=0)), "FxdParams", "group index"),
        (v1_file(FxdParams=v1_fixed_parameters(spacing=0)), "FxdParams", "data spacing"),
        (v1_file(FxdParams=v1_fixed_parameters()[:18]), "FxdParams", "data spacing"),
        (v1_file(DataPts=v1_data_points(count=10)), "DataPts", "data points"),
        (v1_file(KeyEvents=v1_key_events(code=b"X?9999")), "KeyEvents", "event code"),
        (v1_file(GenParams=b"ENcable without end"), "GenParams", "cable id"),
    ],
)
def test_malformed_files_name_the_block_and_field(data: bytes, block: str, field: str) -> None:
    with pytest.raises(SorError, match=f"block {block!r}") as caught:
        read_sor(data)
    assert (caught.value.block, caught.value.field) == (block, field)


def test_a_v2_block_that_does_not_start_with_its_name_is_reported() -> None:
    data = bytearray(sor_bytes(hand_trace(), 2))
    body = data.index(b"FxdParams\0", data.index(b"FxdParams\0") + 1)
    data[body : body + 3] = b"Xxd"
    with pytest.raises(SorError, match="'FxdParams': field 'block name'"):
        read_sor(bytes(data))


def test_an_unreadable_path_is_a_sor_error(tmp_path: Path) -> None:
    with pytest.raises(SorError, match="cannot read"):
        read_sor(tmp_path / "absent.sor")
