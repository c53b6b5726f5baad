"""The OTDR simulator: labels where the physics put them, determinism, and the split files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from sightline.data.errors import DatasetError
from sightline.data.otdr import EVENT_TYPES, Event, Trace, load_split, save_split
from sightline.data.synth.otdr import SPLITS, SynthOTDR, generate, simulate_trace

# The base physics on short traces of 0.25-4 m: no reels, ghosts or gainers (tested apart).
SMALL = SynthOTDR(
    num_samples=(2048, 4096),
    resolution_m=(0.25, 4.0),
    train=3,
    val=2,
    test=2,
    launch_reel_probability=0.0,
    receive_reel_probability=0.0,
    ghost_probability=0.0,
    gainer_probability=0.0,
)


def traces(cfg: SynthOTDR, count: int, seed: int = 0) -> list[Trace]:
    return [simulate_trace(np.random.default_rng([seed, i]), cfg) for i in range(count)]


def line_at(samples: np.ndarray, first: int, last: int, at: float) -> float:
    """The straight line fitted to samples[first:last], evaluated at sample `at`."""
    x = np.arange(first, last)
    slope, intercept = np.polyfit(x, samples[first:last].astype(np.float64), 1)
    return slope * at + intercept


def test_same_rng_gives_the_same_trace_and_another_seed_does_not() -> None:
    first = simulate_trace(np.random.default_rng(5), SMALL)
    again = simulate_trace(np.random.default_rng(5), SMALL)
    other = simulate_trace(np.random.default_rng(6), SMALL)
    assert np.array_equal(first.samples, again.samples)
    assert first.events == again.events
    assert not np.array_equal(first.samples[:100], other.samples[:100]) or (
        first.events != other.events
    )


def test_generate_writes_identical_bytes_for_the_same_seed(tmp_path: Path) -> None:
    assert generate(tmp_path / "a", SMALL) == {"train": 3, "val": 2, "test": 2}
    generate(tmp_path / "b", SMALL)
    for split in SPLITS:
        for suffix in (".npz", ".json"):
            name = f"{split}{suffix}"
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_generated_split_loads_back_as_the_simulated_traces(tmp_path: Path) -> None:
    generate(tmp_path, SMALL)
    loaded = load_split(tmp_path, "val")
    expected = simulate_trace(np.random.default_rng([SMALL.seed, SPLITS.index("val"), 1]), SMALL)
    assert [t.trace_id for t in loaded] == ["val_00000", "val_00001"]
    assert np.array_equal(loaded[1].samples, expected.samples)
    assert loaded[1].events == expected.events
    assert loaded[1].resolution_m == expected.resolution_m


def test_labels_are_ordered_disjoint_inside_and_end_with_the_fibre() -> None:
    for trace in traces(SynthOTDR(), 25):
        events = trace.events
        assert events and events[-1].type in ("fiber_cut", "fiber_end")
        assert all(e.type in ("face_plate", "pass_through") for e in events[:-1])
        assert all(a.end <= b.start for a, b in itertools.pairwise(events))
        assert events[-1].end <= len(trace.samples)
        assert 8192 <= len(trace.samples) <= 65536


def test_some_events_lie_closer_together_than_one_300_sample_window() -> None:
    close = [
        b.start - a.start
        for trace in traces(SynthOTDR(), 30)
        for a, b in itertools.pairwise(trace.events)
        if b.start - a.start < 300
    ]
    assert len(close) >= 3


def test_every_event_type_and_wavelength_and_real_acquisition_ranges_occur() -> None:
    drawn = traces(SynthOTDR(), 40)
    assert {e.type for t in drawn for e in t.events} == set(EVENT_TYPES)
    assert {t.wavelength_nm for t in drawn} == {1310.0, 1550.0, 1625.0}
    assert len({t.pulse_width_ns for t in drawn}) >= 6
    spacings = [t.resolution_m for t in drawn]
    assert 0.05 <= min(spacings) < 0.15 and 2.5 < max(spacings) <= 5.0
    pulses = [t.pulse_width_ns for t in drawn]
    assert min(pulses) <= 10 and max(pulses) >= 1000


def test_reels_put_a_connector_a_reel_length_from_each_end_of_the_fibre() -> None:
    cfg = SynthOTDR(
        num_samples=(8192, 8192),
        resolution_m=(1.0, 1.0),
        launch_reel_probability=1.0,
        receive_reel_probability=1.0,
        reel_length_m=(500.0, 500.0),
        events_per_trace=(0, 0),
        fibre_end_fraction=(0.8, 0.8),
    )
    for trace in traces(cfg, 4):
        *connectors, end = trace.events
        assert [e.type for e in connectors] == ["face_plate", "face_plate"]
        assert connectors[0].start == 500  # 500 m of launch reel at 1 m per sample
        assert end.start - connectors[1].end == 500  # the receive reel, then the fibre's end


def test_a_ghost_is_a_reflection_at_twice_the_strongest_ones_distance_and_no_event() -> None:
    base = dict(
        num_samples=(8192, 8192),
        resolution_m=(1.0, 1.0),
        events_per_trace=(0, 0),
        fiber_cut_probability=0.0,
        fibre_end_fraction=(0.3, 0.3),
        fiber_end_reflectance_db=(-14.0, -14.0),
        snr_db=(40.0, 40.0),
        launch_reel_probability=0.0,
        receive_reel_probability=0.0,
        ghost_level_db=(-10.0, -10.0),
    )
    with_ghost = simulate_trace(np.random.default_rng(1), SynthOTDR(**base, ghost_probability=1.0))
    without = simulate_trace(np.random.default_rng(1), SynthOTDR(**base, ghost_probability=0.0))
    end = int(with_ghost.events[-1].start)
    assert with_ghost.events == without.events  # the ghost is not labelled
    ghost = slice(2 * end, 2 * end + 10)
    assert with_ghost.samples[ghost].max() > without.samples[ghost].max() + 3.0
    quiet = slice(2 * end + 400, 2 * end + 800)  # away from the ghost: the same noise floor
    assert np.mean(with_ghost.samples[quiet]) == pytest.approx(
        np.mean(without.samples[quiet]), abs=0.5
    )


def test_the_launch_reflection_comes_first_and_events_after_its_dead_zone() -> None:
    saturated = 0
    for trace in traces(SMALL, 10):
        pulse = int(np.ceil(trace.pulse_extent_m / trace.resolution_m))
        first = int(trace.events[0].start)
        assert first > 2 * pulse
        launch_peak = trace.samples[: 2 * pulse].max()
        assert launch_peak > trace.samples[first - pulse : first].mean() + 3.0
        assert trace.samples.max() <= 0.0  # the receiver clips at its ceiling, <= 0 dB
        saturated += bool(launch_peak == trace.samples.max())  # the launch reflection is clipped
    assert saturated >= 3


@pytest.mark.parametrize(("wavelength", "low", "high"), [(1550, 0.17, 0.23), (1310, 0.31, 0.39)])
def test_backscatter_falls_with_the_fibre_attenuation(
    wavelength: int, low: float, high: float
) -> None:
    cfg = SMALL.model_copy(
        update={"wavelengths_nm": [wavelength], "snr_db": (45.0, 45.0), "events_per_trace": (0, 0)}
    )
    for trace in traces(cfg, 4):
        end = int(trace.events[-1].start)
        first, last = end // 3, end - 50  # plain fibre: after the dead zone, before the end
        x = np.arange(first, last) * trace.resolution_m / 1000
        slope = np.polyfit(x, trace.samples[first:last].astype(np.float64), 1)[0]
        assert low <= -slope <= high


@pytest.mark.parametrize("gainers", [0.0, 1.0])
def test_a_pass_through_is_a_step_loss_equal_to_its_label(gainers: float) -> None:
    """A gainer (an apparent gain at a splice between unlike fibres) steps up by its label."""
    cfg = SMALL.model_copy(
        update={
            "gainer_probability": gainers,
            "face_plate_probability": 0.0,
            "snr_db": (45.0, 45.0),
            "receiver_tail_fraction": 0.0,
            "speckle_db": 0.0,  # the fading ripple would blur a line fit by a few 0.01 dB
            "events_per_trace": (2, 4),
        }
    )
    fit = 60
    checked = 0
    for trace in traces(cfg, 12):
        events = trace.events
        for before, event, after in zip(events, events[1:], events[2:], strict=False):
            start, end = int(event.start), int(event.end)
            if start - fit - 4 < before.end or end + fit + 4 > after.start:
                continue  # neighbours too close for a clean fit
            level_before = line_at(trace.samples, start - fit - 2, start - 2, start)
            level_after = line_at(trace.samples, end + 2, end + fit + 2, start)
            assert level_before - level_after == pytest.approx(event.loss_db, abs=0.01)
            assert (event.loss_db < 0) == (gainers == 1.0)
            checked += 1
    assert checked >= 3


def test_a_fiber_end_reflects_then_only_noise_floor_follows() -> None:
    cfg = SMALL.model_copy(update={"fiber_cut_probability": 0.0, "fibre_end_fraction": (0.45, 0.7)})
    for trace in traces(cfg, 10):
        end = trace.events[-1]
        assert end.type == "fiber_end" and end.reflectance_db is not None
        start, stop = int(end.start), int(end.end)
        fibre_level = float(np.mean(trace.samples[start - 40 : start - 5]))
        assert trace.samples[start:stop].max() > fibre_level + 1.0  # the Fresnel reflection
        right_after = float(np.mean(trace.samples[stop : stop + 100]))
        floor = float(np.mean(trace.samples[-300:]))
        assert right_after == pytest.approx(floor, abs=1.0)  # nothing left of the event
        assert floor < fibre_level - cfg.min_end_margin_db + 1.0


def test_a_fiber_cut_drops_to_the_same_noise_floor() -> None:
    cfg = SMALL.model_copy(
        update={"fiber_cut_probability": 1.0, "fiber_cut_reflective_probability": 0.0}
    )
    for trace in traces(cfg, 6):
        cut = trace.events[-1]
        assert cut.type == "fiber_cut" and cut.reflectance_db is None and cut.loss_db is None
        stop = int(cut.end)
        assert np.mean(trace.samples[stop : stop + 100]) == pytest.approx(
            np.mean(trace.samples[-300:]), abs=1.0
        )


def test_noise_grows_with_distance() -> None:
    cfg = SMALL.model_copy(update={"events_per_trace": (0, 0), "snr_db": (14.0, 14.0)})
    for trace in traces(cfg, 4):
        end = int(trace.events[-1].start)
        near = np.diff(trace.samples[end // 4 : end // 4 + 200]).std()
        far = np.diff(trace.samples[end - 250 : end - 50]).std()
        assert far > near


@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"snr_db": (30.0, 10.0)}, "snr_db"),
        ({"wavelengths_nm": [1490]}, "1490"),
        ({"pulse_widths_ns": []}, "pulse_widths_ns"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_bad_settings_are_rejected_by_name(update: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        SynthOTDR(**update)


def test_save_and_load_round_trip_a_hand_made_split(tmp_path: Path) -> None:
    event = Event("face_plate", 10.0, 20.0, 0.5, loss_db=0.3, reflectance_db=-45.0)
    trace = Trace(np.linspace(-5, -6, 64), 0.5, 1550.0, 30.0, events=[event], trace_id="t0")
    save_split([trace, trace], tmp_path, "demo")
    loaded = load_split(tmp_path, "demo")
    assert len(loaded) == 2 and loaded[1].events == [event]
    assert loaded[0].events[0].position_m == 5.0 and loaded[0].events[0].extent_m == 5.0
    assert np.array_equal(loaded[0].samples, trace.samples)


def _corrupt(tmp_path: Path, change: dict[str, object]) -> Path:
    event = Event("pass_through", 10.0, 20.0, 1.0, loss_db=0.1)
    save_split([Trace(np.zeros(50) - 3, 1.0, 1310.0, 10.0, events=[event])], tmp_path, "bad")
    meta_path = tmp_path / "bad.json"
    meta = json.loads(meta_path.read_text())
    meta["traces"][0]["events"][0].update(change)
    meta_path.write_text(json.dumps(meta))
    return tmp_path


@pytest.mark.parametrize(
    ("change", "field"),
    [({"type": "ghost"}, "type"), ({"end": 80}, "start/end"), ({"loss_db": "big"}, "loss_db")],
)
def test_bad_event_records_name_the_record_and_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    root = _corrupt(tmp_path, change)
    with pytest.raises(DatasetError, match=r"traces\[0\]\.events\[0\]") as caught:
        load_split(root, "bad")
    assert caught.value.field == field


def test_samples_that_do_not_match_the_metadata_are_reported(tmp_path: Path) -> None:
    save_split([Trace(np.zeros(50) - 3, 1.0, 1310.0, 10.0)], tmp_path, "bad")
    meta = json.loads((tmp_path / "bad.json").read_text())
    meta["traces"].append(meta["traces"][0])
    (tmp_path / "bad.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="offsets"):
        load_split(tmp_path, "bad")
    with pytest.raises(DatasetError, match="no such OTDR split file"):
        load_split(tmp_path, "missing")
