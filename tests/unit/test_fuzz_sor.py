"""Fuzzing the .sor reader (Hypothesis): random bytes, and files of the real structure (the
project's writer, v1 and v2, and the real instruments' files under ../shared when present) with
bytes flipped, overwritten, inserted, deleted or cut. Whatever comes in, read_sor returns a
Trace or raises SorError naming the block at fault; never another exception."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sightline.data.otdr import KeyEvent, Trace
from sightline.data.sor import SorError, read_sor, sor_bytes
from tests.conftest import REPO_ROOT

REAL_FILES = sorted((REPO_ROOT.parent / "shared" / "data" / "otdr-real").glob("**/*.sor"))
# Per test; each example parses one small file in well under a millisecond. A longer search:
# SIGHTLINE_FUZZ_EXAMPLES=4000 pytest tests/unit/test_fuzz_sor.py
EXAMPLES = int(os.environ.get("SIGHTLINE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded 2-core machine must not turn slowness into a failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def written_file(version: int) -> bytes:
    """A small file of the real structure: every block the writer emits, key events included."""
    samples = np.linspace(-2.0, -9.0, 400, dtype=np.float32)
    samples[350:] = -30.0
    trace = Trace(
        samples=samples,
        resolution_m=0.5,
        wavelength_nm=1310.0,
        pulse_width_ns=30.0,
        group_index=1.468,
        key_events=[
            KeyEvent(1, 0.0, 0.0, -45.0, 0.0, "1F9999", "LS", "launch"),
            KeyEvent(2, 120.0, 0.3, 0.0, 0.2, "0F9999", "2P", "splice"),
            KeyEvent(3, 175.0, 0.0, -14.0, 0.2, "1E9999", "LS", ""),
        ],
        trace_id="fuzz",
    )
    return sor_bytes(trace, version)


SEEDS = {"v1": written_file(1), "v2": written_file(2)}


def assert_reads_or_names_the_block(data: bytes) -> None:
    try:
        trace = read_sor(data)
    except SorError as exc:
        assert exc.block, f"SorError without a block: {exc}"
        assert str(exc).startswith("<sor bytes>: block "), str(exc)
        return
    assert isinstance(trace, Trace) and trace.samples.size >= 1 and trace.resolution_m > 0


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` with 1-8 mutations: a byte flipped, a run overwritten with random bytes (or with
    0x00 / 0xFF, which hit counts and sizes hardest), bytes inserted or deleted, or the tail cut."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "overwrite", "extreme", "insert", "delete", "cut"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "extreme":
            data[at : at + 4] = draw(st.sampled_from([b"\x00", b"\xff"])) * 4
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


def test_the_seed_files_read_back() -> None:
    for data in SEEDS.values():
        assert read_sor(data).samples.size == 400


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_sor_error_naming_the_block(data: bytes) -> None:
    assert_reads_or_names_the_block(data)


@FUZZ
@given(data=st.binary(max_size=64).map(lambda tail: b"Map\0" + tail))
def test_random_bytes_after_a_version_2_header_raise_sor_error(data: bytes) -> None:
    assert_reads_or_names_the_block(data)


@pytest.mark.parametrize("version", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_written_files_raise_sor_error_naming_the_block(version: str, data) -> None:
    assert_reads_or_names_the_block(data.draw(mutated(SEEDS[version])))


@pytest.mark.skipif(not REAL_FILES, reason="no real .sor files under ../shared/data/otdr-real")
@FUZZ
@given(data=st.data())
def test_mutated_real_instrument_files_raise_sor_error_naming_the_block(data) -> None:
    path = data.draw(st.sampled_from(REAL_FILES))
    assert_reads_or_names_the_block(data.draw(mutated(path.read_bytes())))


def test_every_real_instrument_file_reads() -> None:
    if not REAL_FILES:
        pytest.skip("no real .sor files under ../shared/data/otdr-real")
    for path in REAL_FILES:
        assert read_sor(Path(path)).samples.size > 10_000, path
