"""bench/robustness.py's parts on tiny inputs: the image shifts, the shifted copies, the report
(the benchmark itself is run by hand after `dvc repro`)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def robustness():
    sys.path.insert(0, str(BENCH))  # the scripts import their shared helpers as `common`
    try:
        yield importlib.import_module("robustness")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_shifted_image_keeps_size_and_mode_and_changes_its_pixels(
    robustness, write_image, tmp_path: Path, mode: str
) -> None:
    source = write_image(tmp_path / "a.jpg", 40, 30, mode=mode)
    for name, shift in robustness.IMAGE_SHIFTS.items():
        target = tmp_path / name / "a.jpg"
        robustness.shifted_image(source, target, shift, np.random.default_rng(0))
        with Image.open(source) as before, Image.open(target.with_suffix(".png")) as after:
            assert after.size == before.size and after.mode == before.mode
            assert not np.array_equal(np.asarray(after), np.asarray(before))


def test_dark_lowers_and_noise_keeps_the_range(robustness) -> None:
    pixels = np.linspace(0.0, 1.0, 101)
    darker = robustness.dark(pixels, np.random.default_rng(0))
    assert (darker <= pixels + 1e-12).all() and darker.max() == pytest.approx(0.5)
    noisy = robustness.noisy(pixels, np.random.default_rng(0))
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and not np.allclose(noisy, pixels)


def test_an_identity_folder_is_copied_person_by_person(
    robustness, write_image, tmp_path: Path
) -> None:
    for person, image in (("ann", "1.png"), ("ann", "2.jpg"), ("bob", "1.png")):
        write_image(tmp_path / "faces" / person / image, 16, 16)
    (tmp_path / "faces" / "notes.txt").write_text("not an image")
    robustness.shifted_identity_folder(tmp_path / "faces", tmp_path / "out", robustness.dark)
    found = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")
    )
    assert found == ["ann/1.png", "ann/2.png", "bob/1.png"]


def test_the_report_gives_each_shift_its_change_from_in_distribution(robustness) -> None:
    rows = [
        robustness.Row(
            "otdr", "otdr_detector", "in distribution", {"map_50": 0.9, "loc_err_m_median": 1.0}
        ),
        robustness.Row(
            "otdr", "otdr_detector", "32k-64k samples", {"map_50": 0.7, "loc_err_m_median": 2.5}
        ),
    ]
    text = robustness.markdown(rows, load_before=0.5)
    assert "## otdr" in text and "## detection" not in text
    assert "map_50 0.700 (-0.200)" in text and "loc_err_m_median 2.500 (+1.500)" in text
    assert "map_50 0.900<br>" in text  # the reference itself has no change


def test_shift_names_become_valid_mlflow_metric_names(robustness) -> None:
    from mlflow.utils.validation import _validate_metric_name

    for name in [*robustness.IMAGE_SHIFTS, *robustness.OTDR_SHIFTS, "in distribution"]:
        slug = robustness.metric_slug(name)
        _validate_metric_name(f"detection.yolo.{slug}.map")  # raises on a bad name
        assert slug and " " not in slug
