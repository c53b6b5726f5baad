"""bench/serving.py's model-only measurement (the load itself is run by hand: minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sightline.config import load_settings
from tests.bench_scripts import bench_fixture

serving = bench_fixture("serving")


def test_the_batched_forward_gain_is_measured_on_the_registered_champions(
    serving, mlflow_store: str, tmp_path: Path
) -> None:
    serving.register_stand_ins(load_settings(Path("params.yaml")), tmp_path / "artifacts")
    serving.write_payloads(tmp_path / "payloads")
    gains = serving.batched_forward_gain(mlflow_store, tmp_path / "payloads", 4, seconds=0.05)
    for route in ("detect", "identify"):
        assert gains[f"{route}_single_per_s"] > 0 and gains[f"{route}_batched_per_s"] > 0
        assert gains[f"{route}_model_ms"] == pytest.approx(1000 / gains[f"{route}_single_per_s"])
    (family,) = gains["detect_families"]
    assert family == serving.STAND_INS["detection"]
    assert all(rate > 0 for rate in gains["detect_families"][family])


def test_images_per_second_counts_every_image_of_each_call(serving) -> None:
    calls: list[int] = []
    rate = serving.images_per_second(lambda images: calls.append(len(images)), None, 3, 0.01)
    assert set(calls) == {3} and rate > 0


def test_a_cell_times_only_answered_requests_that_carried_their_app_time(serving) -> None:
    samples = [(200, 30.0, 22.0), (200, 31.0, None), (503, 2.0, 1.0), (200, 40.0, 30.0)]
    cell = serving.Cell("identify", "on", 1, 1.0, samples)
    assert list(cell.app_ms()) == [22.0, 30.0]
    assert list(cell.overhead_ms()) == [8.0, 10.0]
    assert cell.ok_ms().size == 3
