"""Stages fail on bad input with one line naming the problem (exit 2), not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sightline.pipelines import evaluate, register, train, validate
from tests.conftest import REPO_ROOT


def _params(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw.update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_family_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train.main(["--family", "alexnet", "--params", str(_params(tmp_path))]) == 2
    assert "unknown model family 'alexnet'" in capsys.readouterr().err


def test_bad_params_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _params(tmp_path, train={"epochs": -1, "batch_size": "four"})
    assert validate.main(["--params", str(path)]) == 2
    assert "train.batch_size" in capsys.readouterr().err


def test_missing_dataset_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _params(tmp_path, detection_data={"root": str(tmp_path / "nowhere")})
    assert train.main(["--family", "faster_rcnn", "--params", str(path)]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.parametrize("stage", [evaluate, register])
def test_stages_before_training_say_what_to_run(
    stage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stage.main(["--family", "faster_rcnn", "--params", str(_params(tmp_path))]) == 2
    assert "train this family first" in capsys.readouterr().err


def test_proposal_families_say_which_file_is_missing(tmp_path: Path) -> None:
    from sightline.artifacts import proposals_for
    from sightline.config import load_settings
    from sightline.data.errors import DatasetError

    settings = load_settings(_params(tmp_path))
    assert proposals_for(settings, "faster_rcnn", "val") is None
    with pytest.raises(DatasetError, match=r"proposals/val\.npz.*compute"):
        proposals_for(settings, "fast_rcnn", "val")
