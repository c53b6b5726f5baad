"""The `sightline` command in-process: conversions, the VOC path through validation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sightline.cli import app
from sightline.pipelines import validate
from tests.conftest import REPO_ROOT

runner = CliRunner()


def _params(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw.update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_voc2coco_writes_coco_json(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    result = runner.invoke(app, ["data", "voc2coco", str(voc_root), "train", str(out)])
    assert result.exit_code == 0, result.output
    coco = json.loads(out.read_text())
    assert [img["file_name"] for img in coco["images"]] == ["img1.jpg", "img2.jpg"]
    assert {c["name"] for c in coco["categories"]} >= {"dog", "bird"}


def test_params_can_point_the_pipeline_at_a_voc_dataset(voc_root: Path, tmp_path: Path) -> None:
    splits = {"train": "train", "val": "val"}
    path = _params(
        tmp_path, detection_data={"format": "voc", "root": str(voc_root), "splits": splits}
    )
    assert validate.main(["--params", str(path)]) == 0
    report = json.loads((tmp_path / "reports" / "validation" / "detection.json").read_text())
    assert report["success"] and report["splits"] == ["train", "val"]


def test_summary_before_any_run_shows_dashes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["summary", "--params", str(_params(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "No family has been evaluated yet" in result.output and "mlflow ui" in result.output


def test_summary_shows_each_evaluated_family_of_each_group(tmp_path: Path) -> None:
    path = _params(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "faster_rcnn.json").write_text(json.dumps({"map": 0.25}))
    result = runner.invoke(app, ["summary", "--params", str(path)])
    assert result.exit_code == 0, result.output
    assert "Sightline detection" in result.output and "0.250" in result.output
    assert "Sightline otdr" not in result.output  # nothing evaluated there yet


def test_unknown_benchmark_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "gpus", "--params", str(_params(tmp_path))])
    assert result.exit_code == 2
    assert "no benchmark 'gpus'" in result.output


def test_bench_passes_the_options_after_its_name_to_the_script(tmp_path: Path) -> None:
    path = _params(tmp_path)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "echo.py").write_text(
        "import json, sys\n"
        "from pathlib import Path\n"
        "Path(__file__).with_name('argv.json').write_text(json.dumps(sys.argv[1:]))\n"
    )
    result = runner.invoke(app, ["bench", "echo", "--params", str(path), "--max-epochs", "8"])
    assert result.exit_code == 0, result.output
    argv = json.loads((tmp_path / "bench" / "argv.json").read_text())
    assert argv == ["--params", str(path), "--max-epochs", "8"]


def test_bad_params_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["summary", "--params", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "no such parameters file" in result.output
