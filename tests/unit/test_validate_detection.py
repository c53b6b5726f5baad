"""Great Expectations checks of COCO detection datasets, on tiny datasets built in tmp_path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sightline.config import DetectionData
from sightline.pipelines.validate import main
from sightline.validate.detection import validate_detection_dataset
from sightline.validate.report import ExpectationOutcome, ValidationReport
from sightline.validate.tables import ImageProbe, probe_image

IMAGE_SIZE = (32, 24)  # width, height


def write_png(path: Path, seed: int, size: tuple[int, int] = IMAGE_SIZE) -> None:
    # Noise does not compress, so a truncated copy really loses pixel data.
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_coco(root: Path, split: str = "train") -> dict[str, Any]:
    """Three images with two boxes each (one overhanging by less than the tolerance)."""
    width, height = IMAGE_SIZE
    images = []
    for image_id in (1, 2, 3):
        file_name = f"{split}/img_{image_id}.png"
        write_png(root / "images" / file_name, seed=image_id)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    annotations = []
    for image in images:
        for box in ([2, 3, 10, 8], [-0.5, 4, width + 1.0, height - 4]):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image["id"], "category_id": 1, "bbox": box}
            )
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_split(root: Path, coco: dict[str, Any] | str, split: str = "train") -> None:
    path = root / "annotations" / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(coco if isinstance(coco, str) else json.dumps(coco))


def data_config(root: Path, splits: tuple[str, ...] = ("train",)) -> DetectionData:
    return DetectionData(
        format="coco",
        root=root,
        images="images",
        splits={s: f"annotations/{s}.json" for s in splits},
    )


def validate(root: Path, splits: tuple[str, ...] = ("train",)) -> ValidationReport:
    return validate_detection_dataset(data_config(root, splits), root, list(splits))


def failed(report: ValidationReport, description: str) -> ExpectationOutcome:
    matching = [r for r in report.failures if r.description.startswith(description)]
    failing = [r.description for r in report.failures]
    assert matching, f"expected {description!r} to fail; failing: {failing}"
    return matching[0]


def test_valid_dataset_passes_every_check(tmp_path: Path) -> None:
    for split in ("train", "val"):  # the same ids in two splits are fine
        write_split(tmp_path, make_coco(tmp_path, split), split)

    report = validate(tmp_path, ("train", "val"))

    assert report.success, report.summary()
    # "dog" has no annotation in any split: dropped from the classes (data.layouts.base).
    assert report.row_counts == {"images": 6, "boxes": 12, "categories": 2}
    assert all(r.success for r in report.results)
    assert "passed" in report.summary()


def remove_file(root: Path, coco: dict[str, Any]) -> None:
    (root / "images" / coco["images"][1]["file_name"]).unlink()


def garbage_file(root: Path, coco: dict[str, Any]) -> None:
    (root / "images" / coco["images"][1]["file_name"]).write_bytes(b"this is not an image")


def truncate_png(root: Path, coco: dict[str, Any]) -> None:
    path = root / "images" / coco["images"][1]["file_name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def json_width_wrong(root: Path, coco: dict[str, Any]) -> None:
    coco["images"][1]["width"] = 64


def zero_width_box(root: Path, coco: dict[str, Any]) -> None:
    coco["annotations"][2]["bbox"] = [5, 5, 0, 4]


def box_outside_image(root: Path, coco: dict[str, Any]) -> None:
    coco["annotations"][2]["bbox"] = [20, 2, 14, 4]  # right edge 34 > 32 + 1


def unknown_category(root: Path, coco: dict[str, Any]) -> None:
    coco["annotations"][2]["category_id"] = 99


def duplicate_image_id(root: Path, coco: dict[str, Any]) -> None:
    coco["images"][2]["id"] = 2


def duplicate_annotation_id(root: Path, coco: dict[str, Any]) -> None:
    coco["annotations"][3]["id"] = 3


def unknown_image(root: Path, coco: dict[str, Any]) -> None:
    coco["annotations"][2]["image_id"] = 42


def empty_split(root: Path, coco: dict[str, Any]) -> None:
    coco["images"], coco["annotations"] = [], []


Breakage = Callable[[Path, dict[str, Any]], None]


# (breakage, the check that must fail, fields of a failing example row). One broken dataset per
# check, each as its own split of one dataset, so GX runs once for all of them.
BROKEN_CASES: list[tuple[Breakage, str, dict[str, Any]]] = [
    (remove_file, "image files exist", {"image_id": 2, "file_name": "{split}/img_2.png"}),
    (garbage_file, "image files decode", {"image_id": 2, "file_name": "{split}/img_2.png"}),
    (truncate_png, "image files decode", {"image_id": 2, "file_name": "{split}/img_2.png"}),
    (json_width_wrong, "image width in the JSON matches", {"image_id": 2, "width": 64}),
    (zero_width_box, "boxes have positive width", {"annotation_id": 3, "w": 0}),
    (box_outside_image, "boxes end inside the image", {"annotation_id": 3, "right": 34}),
    (unknown_category, "annotations reference existing category", {"annotation_id": 3}),
    (duplicate_image_id, "image ids are unique", {"image_id": 2, "file_name": "{split}/img_3.png"}),
    (duplicate_annotation_id, "annotation ids are unique", {"annotation_id": 3, "image_id": 2}),
    (unknown_image, "annotations reference existing image ids", {"annotation_id": 3}),
    (empty_split, "every split has images", {"image_count": 0}),
]
UNREADABLE_SPLIT = "unreadable_json"


@pytest.fixture(scope="module")
def broken_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    root = tmp_path_factory.mktemp("broken")
    splits = [case[0].__name__ for case in BROKEN_CASES]
    for break_dataset, split in zip((case[0] for case in BROKEN_CASES), splits, strict=True):
        coco = make_coco(root, split)
        break_dataset(root, coco)
        write_split(root, coco, split)
    write_split(root, "{not json", UNREADABLE_SPLIT)
    return validate(root, (*splits, UNREADABLE_SPLIT))


@pytest.mark.parametrize(
    ("break_dataset", "description", "expected_example"),
    BROKEN_CASES,
    ids=[case[0].__name__ for case in BROKEN_CASES],
)
def test_broken_dataset_fails_naming_the_check_and_record(
    broken_report: ValidationReport,
    break_dataset: Breakage,
    description: str,
    expected_example: dict[str, Any],
) -> None:
    split = break_dataset.__name__
    expected = {"split": split} | {
        key: value.format(split=split) if isinstance(value, str) else value
        for key, value in expected_example.items()
    }

    outcome = failed(broken_report, description)

    assert not broken_report.success
    assert any(expected.items() <= row.items() for row in outcome.examples), outcome.examples
    summary = broken_report.summary()
    assert description in summary and f"split={split!r}" in summary


def test_decode_failure_reports_the_reason(broken_report: ValidationReport) -> None:
    examples = failed(broken_report, "image files decode").examples

    reasons = {row["split"]: row["decode_error"] for row in examples}
    assert reasons.keys() == {"garbage_file", "truncate_png"}
    assert all(reasons.values())


def test_probe_image_tells_missing_broken_and_good_files_apart(tmp_path: Path) -> None:
    good, truncated = tmp_path / "good.png", tmp_path / "truncated.png"
    write_png(good, seed=0)
    truncated.write_bytes(good.read_bytes()[:-200])

    assert probe_image(good) == ImageProbe(exists=True, decodes=True, width=32, height=24)
    assert probe_image(tmp_path / "missing.png") == ImageProbe(exists=False)
    broken = probe_image(truncated)
    assert broken.exists and broken.decodes is False and broken.error


def test_unreadable_annotation_file_is_a_failure_not_a_crash(
    broken_report: ValidationReport,
) -> None:
    (example,) = failed(broken_report, "annotation files are readable").examples

    assert example["split"] == UNREADABLE_SPLIT
    assert example["annotation_file"] == f"annotations/{UNREADABLE_SPLIT}.json"
    assert f"{UNREADABLE_SPLIT}.json" in example["error"]
    assert broken_report.row_counts["images"] > 0  # the readable splits were still checked


def test_report_round_trips_through_json(broken_report: ValidationReport, tmp_path: Path) -> None:
    path = broken_report.to_json(tmp_path / "out" / "detection.json")

    assert ValidationReport.model_validate_json(path.read_text()) == broken_report
    assert "FAILED" in broken_report.summary()


def test_only_the_broken_check_fails(tmp_path: Path) -> None:
    coco = make_coco(tmp_path)
    unknown_category(tmp_path, coco)
    write_split(tmp_path, coco)

    failures = validate(tmp_path).failures

    assert [f.description for f in failures] == ["annotations reference existing category ids"]
    assert failures[0].columns == ["category_exists"]
    assert failures[0].expectation == "expect_column_values_to_be_in_set"


def test_unknown_split_and_no_split_fail(tmp_path: Path) -> None:
    write_split(tmp_path, make_coco(tmp_path))
    cfg = data_config(tmp_path)

    unknown = validate_detection_dataset(cfg, tmp_path, ["train", "holdout"])
    nothing = validate_detection_dataset(cfg, tmp_path, [])

    example = failed(unknown, "annotation files are readable").examples[0]
    assert example["split"] == "holdout" and "holdout" in example["error"]
    assert failed(nothing, "splits are requested").observed_value == 0


def write_params(root: Path) -> Path:
    params = root / "params.yaml"
    params.write_text(
        "detection_data:\n"
        "  root: data\n"
        "  images: images\n"
        "  splits: {train: annotations/train.json}\n"
    )
    return params


def test_pipeline_main_fails_with_report_on_broken_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_root = tmp_path / "data"
    coco = make_coco(data_root)
    unknown_image(data_root, coco)
    write_split(data_root, coco)

    code = main(["--params", str(write_params(tmp_path))])

    assert code == 1
    report_path = tmp_path / "reports" / "validation" / "detection.json"
    report = ValidationReport.model_validate_json(report_path.read_text())
    assert not report.success
    stderr = capsys.readouterr().err
    assert "annotations reference existing image ids" in stderr
    assert "annotation_id=3" in stderr


def test_pipeline_main_passes_on_valid_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_root = tmp_path / "data"
    write_split(data_root, make_coco(data_root))

    assert main(["--params", str(write_params(tmp_path))]) == 0
    assert "passed" in capsys.readouterr().out
    assert (tmp_path / "reports" / "validation" / "detection.json").is_file()


def test_pipeline_main_reports_bad_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--params", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
