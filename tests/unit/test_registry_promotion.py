"""The champion rule on a real MLflow registry: `champion` moves only to a strictly better model."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from sightline.models import build_model
from sightline.models.faster_rcnn import FasterRCNN
from sightline.track.registry import CHAMPION, load_version, log_model, register
from sightline.workloads import workload_for
from tests.detection_contract import TINY_RCNN

TINY = {
    "faster_rcnn": TINY_RCNN,
    "keypoint_rcnn": {**TINY_RCNN, "keypoint_layers": [8, 8], "num_keypoints": 7},
}


def _log(family: str) -> str:
    with mlflow.start_run(run_name=family):
        return log_model(
            build_model(family, 3, **TINY[family]),
            family=family,
            num_classes=3,
            model_params=TINY[family],
            metadata={"class_names": ["a", "b"], "task": "detect"},
        )


def test_champion_moves_only_when_the_new_version_is_better(mlflow_store: str) -> None:
    first = register(
        _log("faster_rcnn"),
        workload=workload_for("detection"),
        family="faster_rcnn",
        metrics={"map": 0.30},
        tags={},
    )
    assert first.promoted and first.previous_version is None and first.version == "1"

    worse = register(
        _log("faster_rcnn"),
        workload=workload_for("detection"),
        family="faster_rcnn",
        metrics={"map": 0.20},
        tags={},
    )
    tie = register(
        _log("faster_rcnn"),
        workload=workload_for("detection"),
        family="faster_rcnn",
        metrics={"map": 0.30},
        tags={},
    )
    assert not worse.promoted and not tie.promoted
    first_again = register(  # a score with more digits than the tags keep, registered twice
        _log("faster_rcnn"), workload=workload_for("detection"), family="faster_rcnn",
        metrics={"map": 0.3000004},
        tags={},
    )  # fmt: skip
    assert not first_again.promoted
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("sightline-detector", CHAMPION).version) == "1"

    better = register(
        _log("faster_rcnn"),
        workload=workload_for("detection"),
        family="faster_rcnn",
        metrics={"map": 0.45},
        tags={},
    )
    assert (
        better.promoted
        and better.previous_version == "1"
        and better.previous_value == pytest.approx(0.30)
    )
    champion = client.get_model_version_by_alias("sightline-detector", CHAMPION)
    assert str(champion.version) == "5"
    assert champion.tags["family"] == "faster_rcnn" and float(
        champion.tags["metric.map"]
    ) == pytest.approx(0.45)

    loaded = load_version("sightline-detector")
    assert (
        loaded.version == "5"
        and loaded.family == "faster_rcnn"
        and loaded.class_names == ["a", "b"]
    )
    # Rebuilt by the family's builder from the record, with the logged weights.
    assert isinstance(loaded.model, FasterRCNN) and not loaded.model.training


def test_registering_without_the_primary_metric_is_refused(mlflow_store: str) -> None:
    with pytest.raises(KeyError, match="lack 'map', what `champion` is chosen on"):
        register(
            _log("faster_rcnn"),
            workload=workload_for("detection"),
            family="faster_rcnn",
            metrics={"map_50": 0.5},
            tags={},
        )
    assert MlflowClient().search_registered_models() == []


def test_a_version_scored_on_other_classes_never_takes_the_champion(mlflow_store: str) -> None:
    register(
        _log("faster_rcnn"),
        workload=workload_for("detection"),
        family="faster_rcnn",
        metrics={"map": 0.3},
        tags={},
        eval_scope="val:circle,person",
    )
    pose = register(
        _log("keypoint_rcnn"),
        workload=workload_for("detection"),
        family="keypoint_rcnn",
        metrics={"map": 0.9},
        tags={},
        eval_scope="val:person",
    )
    assert not pose.promoted and not pose.comparable and "not compared" in pose.describe()
    assert (
        str(MlflowClient().get_model_version_by_alias("sightline-detector", CHAMPION).version)
        == "1"
    )


def test_a_champion_without_a_recorded_scope_can_still_be_beaten(mlflow_store: str) -> None:
    register(
        _log("faster_rcnn"),
        workload=workload_for("detection"),
        family="faster_rcnn",
        metrics={"map": 0.3},
        tags={},
    )
    client = MlflowClient()
    client.delete_model_version_tag("sightline-detector", "1", "eval_scope")  # an older version
    better = register(
        _log("faster_rcnn"),
        workload=workload_for("detection"),
        family="faster_rcnn",
        metrics={"map": 0.4},
        tags={},
        eval_scope="val:circle",
    )
    assert better.comparable and better.promoted


def test_the_embedder_champion_is_chosen_on_the_validation_people(mlflow_store: str) -> None:
    """The identification evaluate stage scores the test people; `champion` compares the
    validation people's score (val_dir_at_far_1e-2), as the best epoch is chosen."""
    faces = workload_for("identification")
    first = register(
        _log("faster_rcnn"), workload=faces, family="triplet",
        metrics={"dir_at_far_1e-2": 0.10, "val_dir_at_far_1e-2": 0.50},
        tags={}, eval_scope="val-identities:abc",
    )  # fmt: skip
    better_on_test_only = register(
        _log("faster_rcnn"), workload=faces, family="siamese_contrastive",
        metrics={"dir_at_far_1e-2": 0.90, "val_dir_at_far_1e-2": 0.40},
        tags={}, eval_scope="val-identities:abc",
    )  # fmt: skip
    assert first.promoted and not better_on_test_only.promoted
    assert better_on_test_only.metric == "val_dir_at_far_1e-2"


def test_a_quiet_stage_keeps_mlflows_registration_chatter_in_its_log_file(
    mlflow_store: str, tmp_path, capfd
) -> None:
    from sightline.console import stage_logging

    uri = _log("faster_rcnn")
    capfd.readouterr()
    with stage_logging(tmp_path, "register-faster_rcnn") as log_path:
        register(
            uri, workload=workload_for("detection"), family="faster_rcnn", metrics={"map": 0.3},
            tags={},
        )  # fmt: skip
    assert "sightline-detector" not in capfd.readouterr().err  # MLflow's "... registered model"
    logged = log_path.read_text() if log_path is not None else ""
    assert "mlflow: Successfully registered model 'sightline-detector'" in logged
