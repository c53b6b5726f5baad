"""A quiet stage: library logs in logs/<stage>.log, Sightline's lines and every ERROR on the
console; SIGHTLINE_VERBOSE=1 leaves the libraries printing; epoch progress as plain lines when
the output is not a terminal."""

from __future__ import annotations

import argparse
import io
import logging
import warnings
from pathlib import Path

import mlflow  # noqa: F401  (configures its own console handler, as in every stage)
import pytest
from rich.console import Console

import sightline.console as console_module
from sightline.console import VERBOSE_ENV, EpochProgress, stage_logging
from sightline.pipelines import train
from sightline.stage import stage_name

LIBRARY = "mlflow.store.db.utils"  # a logger MLflow prints through its own handler


@pytest.fixture(autouse=True)
def not_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)


def test_quiet_stage_sends_library_logs_to_its_file_not_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mlflow_handlers = list(logging.getLogger("mlflow").handlers)
    with stage_logging(tmp_path, "train-faster_rcnn") as log_path:
        logging.getLogger(LIBRARY).info("Creating initial MLflow database tables")
        logging.getLogger(LIBRARY).warning("a library warning nobody needs")
        logging.getLogger(LIBRARY).error("the store is locked")
        logging.getLogger("sightline.train").warning("our own warning")
    assert log_path == tmp_path / "logs" / "train-faster_rcnn.log"
    written = log_path.read_text()
    for line in ("Creating initial", "nobody needs", "store is locked", "our own warning"):
        assert line in written
    shown = capsys.readouterr().err
    assert "Creating initial" not in shown and "nobody needs" not in shown
    assert "ERROR mlflow.store.db.utils: the store is locked" in shown
    assert "WARNING sightline.train: our own warning" in shown
    # Left as found: MLflow prints through its own handler again.
    assert logging.getLogger("mlflow").handlers == mlflow_handlers
    assert not logging.getLogger("mlflow").propagate


def test_python_warnings_from_our_code_are_shown_others_are_filed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = str(Path(console_module.__file__).resolve())
    with stage_logging(tmp_path, "evaluate-yolo") as log_path, warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("a library's deprecation", FutureWarning, "/elsewhere/lib.py", 3)
        warnings.warn_explicit("our own caveat", UserWarning, ours, 7)
    shown = capsys.readouterr().err
    assert "our own caveat" in shown and "a library's deprecation" not in shown
    assert "a library's deprecation" in log_path.read_text()


def test_verbose_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with stage_logging(tmp_path, "train-faster_rcnn") as log_path:
        logging.getLogger(LIBRARY).info("Creating initial MLflow database tables")
    assert log_path is None and not (tmp_path / "logs").exists()
    assert "Creating initial MLflow database tables" in capsys.readouterr().err


def test_stage_log_is_named_after_the_stage_and_what_it_runs_on() -> None:
    args = argparse.Namespace(family="faster_rcnn", params="params.yaml")
    assert stage_name(train.stage, args) == "train-faster_rcnn"


def test_epoch_progress_off_a_terminal_is_one_plain_line_per_epoch() -> None:
    output = io.StringIO()
    with EpochProgress("yolo", Console(file=output, force_terminal=False, width=60)) as shown:
        for epoch in range(2):
            for batch in range(1, 4):
                shown.batch_done(epoch, 2, batch, 3)
            shown.epoch_done(epoch, 2, {"loss": 1.5 / (epoch + 1), "train_images_per_s": 12.0})
    lines = output.getvalue().splitlines()
    assert lines == [
        "yolo epoch 1/2: loss 1.5000, 12.0 images/s",
        "yolo epoch 2/2: loss 0.7500, 12.0 images/s",
    ]
    assert "\x1b" not in output.getvalue()
