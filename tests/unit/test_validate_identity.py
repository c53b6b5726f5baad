"""Great Expectations checks of folder-per-identity datasets: a valid one passes, and each
check fails on a dataset broken in its own way, naming the person or file at fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sightline.config import IdentityData
from sightline.data.synth.identity import SynthIdentity, generate, identity_name
from sightline.pipelines.validate import main
from sightline.validate.identity import identity_key, validate_identity_dataset
from sightline.validate.report import ExpectationOutcome, ValidationReport

MIN_UNSEEN = 6


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces") / "faces"
    generate(root, SynthIdentity(identities=12, images_per_identity=7, image_size=32, seed=4))
    return root


@pytest.fixture
def faces(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy to break."""
    return Path(shutil.copytree(pristine, tmp_path / "faces"))


def validate(root: Path) -> ValidationReport:
    return validate_identity_dataset(IdentityData(root=root), root.parent, MIN_UNSEEN)


def failed(report: ValidationReport, description: str) -> ExpectationOutcome:
    matching = [r for r in report.failures if r.description.startswith(description)]
    assert matching, f"expected {description!r} to fail; failing: {report.summary()}"
    assert len(report.failures) == 1, report.summary()  # only the broken property fails
    return matching[0]


def test_a_valid_dataset_passes_every_check(pristine: Path) -> None:
    report = validate(pristine)
    assert report.success, report.summary()
    assert report.row_counts == {"identities": 12, "images": 84}
    assert len(report.results) == 5


def test_an_unreadable_image_is_named(faces: Path) -> None:
    broken = faces / identity_name(3) / "002.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    outcome = failed(validate(faces), "image files decode")
    assert outcome.unexpected_count == 1
    assert outcome.examples[0]["file"] == f"{identity_name(3)}/002.png"
    assert outcome.examples[0]["identity"] == identity_name(3)


def test_a_person_with_one_image_is_named(faces: Path) -> None:
    lonely = faces / "zoe"
    lonely.mkdir()
    shutil.copy(faces / identity_name(0) / "000.png", lonely / "only.png")
    (faces / identity_name(0) / "000.png").unlink()  # not a duplicate: moved, not copied
    outcome = failed(validate(faces), "at least 2 images per identity")
    assert [row["identity"] for row in outcome.examples] == ["zoe"]


def test_one_person_in_two_folders_is_named(faces: Path) -> None:
    twin = faces / identity_name(5).upper().replace("_", " ")  # "PERSON 00005"
    shutil.move(faces / identity_name(6), twin)  # other images, so no duplicates
    report = validate(faces)
    outcome = failed(report, "no identity in two splits")
    assert {row["identity"] for row in outcome.examples} == {identity_name(5), twin.name}
    assert identity_key(twin.name) == identity_key(identity_name(5)) == "person 00005"


def test_duplicate_images_are_named(faces: Path) -> None:
    shutil.copy(faces / identity_name(1) / "004.png", faces / identity_name(2) / "extra.png")
    outcome = failed(validate(faces), "no duplicate images")
    assert {row["file"] for row in outcome.examples} == {
        f"{identity_name(1)}/004.png",
        f"{identity_name(2)}/extra.png",
    }


@pytest.mark.parametrize("problem", ["missing", "too_few_people"])
def test_a_dataset_that_cannot_be_split_fails_with_the_reason(faces: Path, problem: str) -> None:
    if problem == "missing":
        shutil.rmtree(faces)
        expected = "identity dataset folder not found"
    else:
        for index in range(3, 12):
            shutil.rmtree(faces / identity_name(index))
        expected = "too few for the requested split fractions"
    outcome = failed(validate(faces), "the dataset reads as")
    assert expected in outcome.examples[0]["error"]


def test_the_stage_writes_the_report_and_exits_1_on_failure(faces: Path, capsys) -> None:
    params = faces.parent / "params.yaml"
    params.write_text(yaml.safe_dump({"identity_data": {"root": "faces"}}))
    args = ["--group", "identification", "--params", str(params)]
    assert main(args) == 0
    report_path = faces.parent / "reports" / "validation" / "identification.json"
    assert json.loads(report_path.read_text())["success"] is True

    shutil.copy(faces / identity_name(1) / "000.png", faces / identity_name(1) / "copy.png")
    assert main(args) == 1
    assert "no duplicate images" in capsys.readouterr().err
    assert json.loads(report_path.read_text())["success"] is False
