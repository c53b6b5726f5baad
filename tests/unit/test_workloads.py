"""The workloads are the one description of the task groups: every table the platform used to
keep per group is derived from them, and a group described from outside the package is picked
up by the CLI summary, the validate stage, the registry and the experiment lookup unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from sightline.cli import app
from sightline.config import FamilyGroup, Settings, SettingsError
from sightline.data.sources import DataSection, DetectionData
from sightline.models import FAMILIES
from sightline.models.anchors import anchor_sizes_from_data, coco_box_sizes, image_size_from_data
from sightline.pipelines import validate
from sightline.track.registry import register
from sightline.track.runs import experiment_id
from sightline.validate.report import ValidationReport
from sightline.workloads import (
    Evaluation,
    UnknownGroupError,
    Workload,
    add_workload,
    all_workloads,
    remove_workload,
    workload_for,
    workload_for_task,
    workload_of_family,
)
from sightline.workloads.detection import DetectionWorkload
from tests.conftest import REPO_ROOT


def test_every_task_and_every_family_belongs_to_exactly_one_group() -> None:
    workloads = all_workloads()
    tasks = [task for w in workloads for task in w.tasks]
    assert sorted(tasks) == sorted(set(tasks)), "a task is claimed twice"
    assert {fam.task for fam in FAMILIES.values()} <= set(tasks), "a family's task has no group"
    for name, fam in FAMILIES.items():
        owners = [w.name for w in workloads if fam.task in w.tasks]
        assert owners == [workload_of_family(name).name], name
        assert workload_for_task(fam.task).train_adapter(fam.task) is not None


def test_each_group_names_its_params_sections_metrics_and_registry_entries() -> None:
    settings = Settings()
    names = [w.name for w in all_workloads()]
    assert sorted(names) == ["detection", "identification", "otdr"]
    for attribute in ("experiment", "registered_model"):
        values = [getattr(w, attribute) for w in all_workloads()]
        assert len(set(values)) == len(values), attribute
    for workload in all_workloads():
        assert isinstance(workload.section(settings), FamilyGroup)
        assert isinstance(workload.data(settings), DataSection)
        assert workload.primary_metric in workload.headline_metrics
        assert set(workload.tasks) == set(workload.train_adapters)
    # DESIGN.md "Names users and tools rely on".
    names = {w.name: (w.experiment, w.registered_model, w.primary_metric) for w in all_workloads()}
    assert names == {
        "detection": ("sightline-detection", "sightline-detector", "map"),
        "otdr": ("sightline-otdr", "sightline-otdr", "map_50"),
        "identification": ("sightline-identification", "sightline-embedder", "dir_at_far_1e-2"),
    }  # fmt: skip


def test_unknown_groups_and_tasks_are_named_with_the_known_ones() -> None:
    with pytest.raises(UnknownGroupError, match=r"unknown task group 'sonar'.*detection"):
        workload_for("sonar")
    with pytest.raises(UnknownGroupError, match=r"no task group trains task 'sonar1d'.*embed"):
        workload_for_task("sonar1d")
    with pytest.raises(UnknownGroupError, match=r"detection group has no training adapter.*embed"):
        workload_for("detection").train_adapter("embed")


class SonarWorkload(Workload):
    """A fourth group, described in a test only: no other module knows about it."""

    name = "sonar"
    tasks = ("sonar1d",)  # type: ignore[assignment]
    data_section = "otdr_data"
    experiment = "sightline-sonar"
    registered_model = "sightline-sonar"
    primary_metric = "f1"
    headline_metrics = ("f1",)
    summary_metrics = ("f1", "recall")
    train_adapters = MappingProxyType({})

    def families(self, settings: Settings) -> list[str]:
        return ["sonar_net"]  # a real group lists them in its own params.yaml section

    def validate(self, settings: Settings) -> ValidationReport:
        return ValidationReport(dataset="sonar", splits=["train"], success=True)

    def training_data(self, settings: Settings, family: str) -> Any:
        raise NotImplementedError

    def evaluate(self, settings: Settings, model: Any, record: Any, *, with_figures: bool) -> Any:
        return Evaluation(metrics={"f1": 1.0})

    def registry_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"f1": metrics["f1"]}


@pytest.fixture
def sonar() -> Iterator[Workload]:
    workload = SonarWorkload()
    add_workload(workload)
    yield workload
    remove_workload(workload.name)


def _params(root: Path) -> Path:
    path = root / "params.yaml"
    path.write_text((REPO_ROOT / "params.yaml").read_text())
    return path


def test_a_fourth_group_is_shown_by_summary_and_checked_by_validate(
    sonar: Workload, tmp_path: Path
) -> None:
    params = _params(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "sonar_net.json").write_text(json.dumps({"f1": 0.75, "recall": 0.5}))
    report = tmp_path / "reports" / "registry" / "sonar" / "sonar_net.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"version": "3", "promoted": True}))

    result = CliRunner().invoke(app, ["summary", "--params", str(params)])

    assert result.exit_code == 0, result.output
    assert "Sightline sonar" in result.output and "sonar_net" in result.output
    assert "0.750" in result.output and "0.500" in result.output
    assert "v3 (champion)" in result.output
    assert validate.main(["--params", str(params), "--group", "sonar"]) == 0
    assert (tmp_path / "reports" / "validation" / "sonar.json").is_file()


def test_a_fourth_group_gets_its_experiment_and_registered_model(
    sonar: Workload, mlflow_store: str
) -> None:
    def predict(model_input: list[str]) -> list[str]:
        return model_input

    with mlflow.start_run(experiment_id=experiment_id(workload_for("sonar").experiment)):
        uri = mlflow.pyfunc.log_model(name="m", python_model=predict, pip_requirements=[]).model_uri
    promotion = register(uri, workload=workload_for("sonar"), family="sonar_net",
                         metrics={"f1": 0.5}, tags={})  # fmt: skip

    assert promotion.registered_model == "sightline-sonar" and promotion.metric == "f1"
    client = MlflowClient()
    assert client.get_experiment_by_name("sightline-sonar") is not None
    assert str(client.get_model_version_by_alias("sightline-sonar", "champion").version) == "1"


def test_a_group_claiming_a_known_task_is_refused_by_name(sonar: Workload) -> None:
    class Clash(SonarWorkload):
        name, experiment, registered_model = "sonar2", "sightline-sonar2", "sightline-sonar2"
        tasks = ("embed",)  # type: ignore[assignment]

    with pytest.raises(ValueError, match=r"task 'embed' is claimed by both the identification"):
        add_workload(Clash())
    remove_workload("sonar2")
    assert [w.name for w in all_workloads()].count("sonar") == 1


def _detection_settings(root: Path, **keypoint_params: Any) -> Settings:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    return Settings(
        project_root=root.parent,
        detection_data=DetectionData(root=root),
        models={"keypoint_rcnn": {**raw["models"]["keypoint_rcnn"], **keypoint_params}},
    )


def test_keypoint_count_and_class_names_come_from_the_dataset(synth_detection_root: Path) -> None:
    settings = _detection_settings(synth_detection_root)
    assert "num_keypoints" not in settings.model_params("keypoint_rcnn")

    data = DetectionWorkload().training_data(settings, "keypoint_rcnn")

    coco = json.loads((synth_detection_root / "annotations" / "train.json").read_text())
    (person,) = [c for c in coco["categories"] if c.get("keypoints")]
    assert data.model_params["num_keypoints"] == len(person["keypoints"])
    assert data.class_names == [person["name"]] and data.num_classes == 2


def test_null_image_and_anchor_sizes_come_from_the_training_data(
    synth_detection_root: Path,
) -> None:
    settings = _detection_settings(synth_detection_root)
    settings.models["faster_rcnn"] = {"image_size": None, "anchor_sizes": None, "width": 8}
    params = DetectionWorkload().training_data(settings, "faster_rcnn").model_params

    coco = json.loads((synth_detection_root / "annotations" / "train.json").read_text())
    assert params["image_size"] == image_size_from_data(coco)
    wh = coco_box_sizes(coco, params["image_size"])
    assert params["anchor_sizes"] == anchor_sizes_from_data(wh, 4) and params["width"] == 8
    settings.models["faster_rcnn"] = {"image_size": 96, "anchor_sizes": [8, 16]}
    given = DetectionWorkload().training_data(settings, "faster_rcnn").model_params
    assert given["image_size"] == 96 and given["anchor_sizes"] == [8, 16]  # set: kept


def test_a_keypoint_count_in_params_that_disagrees_with_the_data_is_named(
    synth_detection_root: Path,
) -> None:
    settings = _detection_settings(synth_detection_root, num_keypoints=3)
    with pytest.raises(SettingsError, match=r"models.keypoint_rcnn.num_keypoints is 3 but .* 7"):
        DetectionWorkload().training_data(settings, "keypoint_rcnn")


def _imports_of(folder: str, forbidden: str) -> list[str]:
    return [
        f"{path.relative_to(REPO_ROOT)}: {line.strip()}"
        for path in (REPO_ROOT / "platform" / folder).rglob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith((f"import {forbidden}", f"from {forbidden}"))
    ]


def test_dependencies_point_one_way() -> None:
    # workloads -> train (never back); config -> data (never back); track is told the names.
    assert not _imports_of("train", "sightline.workloads")
    assert not _imports_of("data", "sightline.config")
    assert not _imports_of("track", "sightline.workloads")
