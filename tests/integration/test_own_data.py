"""The detection pipeline on data in the layouts users have, given by path with
`detection_data: {format: auto, root: PATH}` and nothing else: a labelImg folder with no splits
(drawn) and a Roboflow export (its own splits, ids from 0, an unused category 0). The stages are
the ones `dvc repro` runs (validate, train, evaluate, register), in this process; the model
trains in Ray Train's local mode (test_families says why)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sightline.artifacts import load_record, model_dir
from sightline.config import load_settings
from sightline.data.synth.detection import generate
from sightline.data.synth.params import SynthDetection
from sightline.pipelines import evaluate, register, train, validate
from tests import layouts
from tests.integration.tiny import tiny_params, write_params

WRITERS = {
    "labelimg": lambda dest, src, splits: layouts.write_labelimg(dest, src, splits, lists=False),
    "roboflow": layouts.write_roboflow,
}


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_pipeline_trains_evaluates_and_registers_a_dataset_given_by_path(
    layout: str, ray_cluster: str, mlflow_store: str, tmp_path: Path
) -> None:
    synthetic = tmp_path / "synthetic"
    generate(synthetic, SynthDetection(seed=3, image_size=64, train=12, val=6, test=4))
    data = WRITERS[layout](
        tmp_path / layout, synthetic / "images", layouts.read_synthetic(synthetic)
    )
    params = tiny_params(epochs=1, num_workers=0)
    params["detection_data"] = {"format": "auto", "root": str(data)}
    project = tmp_path / "project"
    project.mkdir()
    args = ["--params", str(write_params(project, params))]

    assert validate.main([*args, "--group", "detection"]) == 0
    for stage in (train, evaluate, register):
        assert stage.main([*args, "--family", "faster_rcnn"]) == 0, stage.__name__

    settings = load_settings(project / "params.yaml")
    record = load_record(model_dir(settings, "faster_rcnn"))
    classes = [c["name"] for c in layouts.read_synthetic(synthetic)["train"]["categories"]]
    assert sorted(record.class_names) == sorted(classes)  # Roboflow's category 0 is no class
    metrics = json.loads((project / "metrics" / "faster_rcnn.json").read_text())
    assert 0.0 <= metrics["map_50"] <= 1.0 and "untrained_map" in metrics
    report = json.loads(
        (project / "reports" / "registry" / "detection" / "faster_rcnn.json").read_text()
    )
    assert report["version"] and report["registered_model"] == "sightline-detector"
