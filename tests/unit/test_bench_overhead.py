"""bench/overhead.py's pure helpers on tiny inputs (the benchmark itself is run by hand)."""

from __future__ import annotations

import math

from tests.bench_scripts import bench_fixture

overhead = bench_fixture("overhead")


def test_ratio_is_of_medians(overhead) -> None:
    assert overhead.ratio([1.0, 3.0, 100.0], [2.0, 2.0, 0.5]) == 1.5
    assert math.isnan(overhead.ratio([], [1.0]))
    assert math.isnan(overhead.ratio([1.0], [0.0]))


def test_timings_sum_per_part_and_shares_add_up(overhead) -> None:
    timings = overhead.Timings()
    assert overhead.timed(timings, "data", lambda: 7) == 7
    timings.add("data", 1.0)
    timings.add("forward", 3.0)
    assert timings.parts["data"] >= 1.0
    shares = overhead.shares(timings)
    assert set(shares) == {"data", "forward"}
    assert math.isclose(sum(shares.values()), 1.0)
    assert shares["forward"] > shares["data"]
    assert overhead.shares(overhead.Timings()) == {}


def test_fit_parts_split_the_wall_time_by_the_loops_own_timings(overhead) -> None:
    metrics = {
        "loop_entered_at": 1000.0 + 12.0,
        "setup_s": 3.0,
        "train_images_per_s": 48.0,
        "checkpoint_save_s": 0.5,
    }
    parts = overhead.fit_parts(called_at=1000.0, wall_s=30.0, images=96, metrics=metrics)
    assert parts == {
        "start": 12.0,
        "setup": 3.0,
        "batches": 2.0,
        "checkpoint save": 0.5,
        "report + teardown": 12.5,
    }
    assert set(parts) == set(overhead.FIT_PARTS)
