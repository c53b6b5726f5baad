from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sightline.config import SettingsError, load_settings
from tests.conftest import REPO_ROOT


def test_repo_params_load_with_demo_defaults() -> None:
    settings = load_settings(REPO_ROOT / "params.yaml")
    assert settings.profile == "demo"
    assert settings.project_root == REPO_ROOT
    assert "faster_rcnn" in settings.detection.families
    assert settings.path("data") == REPO_ROOT / "data"


def test_full_profile_overrides_only_what_it_names() -> None:
    demo = load_settings(REPO_ROOT / "params.yaml")
    full = load_settings(REPO_ROOT / "params.yaml", profile="full")
    assert full.profile == "full"
    assert full.train.use_gpu is True and full.train.epochs > demo.train.epochs
    assert full.model_params("faster_rcnn")["rpn_post_nms_top_n_train"] == 2000
    assert (
        full.model_params("faster_rcnn")["aspect_ratios"]
        == demo.model_params("faster_rcnn")["aspect_ratios"]
    )


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    settings = load_settings(REPO_ROOT / "params.yaml")
    assert settings.tracking_uri == "http://mlflow.internal:5000"
    assert settings.ray_address == "ray://head:10001"


def test_default_tracking_uri_is_sqlite_at_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        load_settings(REPO_ROOT / "params.yaml").tracking_uri
        == f"sqlite:///{REPO_ROOT / 'mlflow.db'}"
    )


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"train": {"typo_field": 1}}, "train.typo_field"),
        ({"detection": {"families": []}}, "detection.families"),
        (
            {"detection": {"families": ["ssd"], "family_train": {"ssd": {"epochs": "x"}}}},
            "detection.family_train.ssd",
        ),
        ({"profile": "huge"}, "unknown profile 'huge'"),
    ],
)
def test_bad_params_name_the_field(tmp_path: Path, patch: dict, fragment: str) -> None:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw.update(patch)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SettingsError, match=fragment.replace(".", r"\.")):
        load_settings(path)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such parameters file"):
        load_settings(tmp_path / "nope.yaml")


def test_family_train_overrides_merge_over_group_and_train() -> None:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    settings = load_settings(REPO_ROOT / "params.yaml")
    raw_epochs = raw["train"]["epochs"]
    patched = settings.model_copy(
        update={
            "detection": settings.detection.model_copy(
                update={"train": {"lr": 0.5}, "family_train": {"ssd": {"epochs": 99}}}
            )
        }
    )
    assert patched.train_for("detection", "ssd").epochs == 99
    assert patched.train_for("detection", "ssd").lr == 0.5
    assert patched.train_for("detection", "yolo").epochs == raw_epochs
