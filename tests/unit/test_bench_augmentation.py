"""bench/augmentation.py's parts: the scratch project and the report (the benchmark trains
detectors: it is run by hand after `dvc repro`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sightline.artifacts import proposals_dir
from sightline.config import load_settings
from tests.bench_scripts import bench_fixture

augmentation = bench_fixture("augmentation")


def test_the_scratch_project_differs_only_in_augmentation_and_reads_the_same_data(
    augmentation, tmp_path: Path
) -> None:
    project = load_settings(Path("params.yaml"))
    params = augmentation.scratch_project(project, tmp_path / "scratch")
    scratch = load_settings(params)
    assert project.train_for("detection", "yolo").augment is not None
    assert scratch.train_for("detection", "yolo").augment is None
    same = scratch.train_for("detection", "yolo").model_dump(exclude={"augment"})
    assert same == project.train_for("detection", "yolo").model_dump(exclude={"augment"})
    assert scratch.path("data").resolve() == project.path("data").resolve()


def test_the_report_gives_with_minus_without_per_metric(augmentation) -> None:
    without = {"map": 0.2, "map_50": 0.4, "map_small": 0.1}
    with_ = {"map": 0.25, "map_50": 0.38, "map_small": 0.1}
    rows = {("yolo", "dark"): {"without": without, "with": with_}}
    context = {"when": "2026-12-02", "minutes": 3, "images": 100, "seeds": [1, 2]}
    text = augmentation.markdown(rows, {"hflip": 0.5}, {**context, "shifts": True})
    assert "| yolo | dark | 0.200 -> 0.250 (+0.050) | 0.400 -> 0.380 (-0.020) |" in text
    assert "100 images" in text and "`{'hflip': 0.5}`" in text
    assert "shifted copies" in text and "seeds [1, 2]" in text
    alone = augmentation.markdown(rows, {"hflip": 0.5}, {**context, "shifts": False})
    assert "shifted copies" not in alone  # --no-shifts: the test split alone


def test_the_scratch_project_reads_the_projects_proposals(augmentation, tmp_path: Path) -> None:
    project_root = tmp_path / "project"
    (project_root / "artifacts" / "proposals").mkdir(parents=True)
    (project_root / "data").mkdir()
    (project_root / "params.yaml").write_text(Path("params.yaml").read_text())
    project = load_settings(project_root / "params.yaml")
    params = augmentation.scratch_project(project, tmp_path / "scratch")
    linked = proposals_dir(load_settings(params))
    assert linked.is_symlink()
    assert linked.resolve() == (project_root / "artifacts" / "proposals").resolve()


def test_another_seed_keeps_the_recipe_and_the_data(augmentation, tmp_path: Path) -> None:
    project = load_settings(Path("params.yaml"))
    params = augmentation.scratch_project(project, tmp_path / "s", augment=True, seed=7)
    scratch = load_settings(params)
    assert scratch.seed == 7 != project.seed
    assert scratch.train_for("detection", "yolo") == project.train_for("detection", "yolo")
    assert scratch.synth == project.synth  # the data is drawn as before; only training varies


def test_seeds_are_averaged_metric_by_metric(augmentation) -> None:
    mean = augmentation.mean_metrics([{"map": 0.1, "map_50": 0.3}, {"map": 0.2, "map_50": 0.5}])
    assert mean == {"map": pytest.approx(0.15), "map_50": pytest.approx(0.4)}


def test_own_data_folds_draw_their_splits_and_train_every_family_the_same_epochs(
    augmentation, tmp_path: Path
) -> None:
    project = load_settings(Path("params.yaml"))
    data = augmentation.OwnData(tmp_path / "photos", (0.6, 0.2, 0.2), epochs=50)
    params = augmentation.own_data_project(project, tmp_path / "f2", data, 2, augment=False)
    scratch = load_settings(params)
    assert scratch.detection_data.format == "auto"
    assert Path(scratch.detection_data.root) == (tmp_path / "photos").resolve()
    assert scratch.detection_data.split_seed == 2
    assert scratch.detection_data.split_fractions == {"train": 0.6, "val": 0.2, "test": 0.2}
    for family in ("yolo", "faster_rcnn"):  # the demo's per-family epochs no longer apply
        train = scratch.train_for("detection", family)
        assert (train.epochs, train.keep_epoch, train.augment) == (50, "last", None)
    with_ = load_settings(
        augmentation.own_data_project(project, tmp_path / "w2", data, 2, augment=True)
    )
    assert with_.train_for("detection", "yolo").augment == project.train.augment


def test_the_own_data_report_names_the_dataset_folds_and_split_sizes(augmentation) -> None:
    arms = {"without": {"map": 0.02, "map_50": 0.05, "map_75": 0.01},
            "with": {"map": 0.08, "map_50": 0.33, "map_75": 0.03}}  # fmt: skip
    rows = {("yolo", "fold 1"): arms, ("yolo", "mean"): arms}
    data = augmentation.OwnData(Path("/data/fruit"), (0.6, 0.2, 0.2), epochs=200)
    context = {"when": "2026-12-03", "minutes": 20, "data": "/data/fruit", "images": 18,
               "arguments": "--data /data/fruit --families yolo",
               "layout": "coco", "split_images": "fold 1: 11 / 3 / 4"}  # fmt: skip
    text = augmentation.own_data_markdown(rows, {"hflip": 0.5}, data, context)
    assert "| yolo | fold 1 | 0.020 -> 0.080 (+0.060) | 0.050 -> 0.330 (+0.280) |" in text
    assert "| yolo | mean |" in text and "map_75 without -> with" in text
    assert "`sightline bench augmentation --data /data/fruit --families yolo`" in text
    assert "18 images" in text and "fold 1: 11 / 3 / 4" in text and "200 epochs" in text
