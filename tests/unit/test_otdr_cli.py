"""`sightline otdr detect FILE.sor` in-process, on a local trained model; a bad file and an empty
registry end with one error line. The registered-champion path is run by
tests/integration/test_otdr.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sightline.artifacts import ModelRecord, save_trained
from sightline.cli import app
from sightline.data.otdr import EVENT_TYPES, NUM_CLASSES
from sightline.data.sor import write_sor
from sightline.data.synth.otdr import simulate_trace
from sightline.data.synth.params import SynthOTDR
from sightline.models import build_model
from tests.unit.test_otdr_models import TINY

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """params.yaml + a (tiny, untrained) otdr_window under artifacts/models + a .sor file."""
    (tmp_path / "params.yaml").write_text("serve:\n  default_score_threshold: 0.0\n")
    torch.manual_seed(0)
    hparams = dict(TINY["otdr_window"][1])
    model = build_model("otdr_window", NUM_CLASSES, **hparams)
    record = ModelRecord(
        family="otdr_window",
        task="events1d",
        num_classes=NUM_CLASSES,
        model_params=hparams,
        class_names=list(EVENT_TYPES),
        category_ids=[1, 2, 3, 4],
        run_id="local",
        model_uri="",
        tags={},
    )
    save_trained(tmp_path / "artifacts" / "models" / "otdr_window", model, record)
    cfg = SynthOTDR(num_samples=(2048, 2048), resolution_m=(2.0, 2.0))
    write_sor(simulate_trace(np.random.default_rng(3), cfg), tmp_path / "link.sor", version=1)
    return tmp_path


def detect(project: Path, *args: str):
    return runner.invoke(
        app,
        ["otdr", "detect", *args, "--params", str(project / "params.yaml")],
        env={"COLUMNS": "200"},
    )


def test_detect_prints_the_events_of_a_sor_file_in_metres(project: Path) -> None:
    result = detect(project, str(project / "link.sor"), "--local", "--model", "otdr_window")

    assert result.exit_code == 0, result.output
    assert "link.sor: 2048 samples every 2.000 m (4.10 km)" in result.output
    assert "position (m)" in result.output and "otdr_window (local" in result.output
    rows = [line for line in result.output.splitlines() if any(t in line for t in EVENT_TYPES)]
    assert rows, result.output  # an untrained classifier still reports windows at threshold 0


def test_a_bad_sor_file_is_one_error_line(project: Path) -> None:
    (project / "notes.sor").write_bytes(b"not an OTDR trace at all")

    result = detect(project, str(project / "notes.sor"), "--local")

    assert result.exit_code == 2
    assert "error:" in result.output and "notes.sor" in result.output


def test_without_a_registered_model_it_says_what_to_do(project: Path, mlflow_store: str) -> None:
    result = detect(project, str(project / "link.sor"))

    assert result.exit_code == 2
    assert "sightline-otdr has no champion" in result.output and "--local" in result.output
