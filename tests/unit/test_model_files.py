"""No code in model files: registered models and Ray Train checkpoints are read as plain tensors
and JSON; a planted pickle payload is refused with an error naming the file, and never runs."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from sightline.artifacts import WEIGHTS_FILE, UnsafeModelFile
from sightline.models import build_model
from sightline.track.registry import load_version, log_model, register
from sightline.train.loop import (
    CHECKPOINT_FILE,
    UnsafeCheckpoint,
    _lr_lambda,
    load_checkpoint,
)
from sightline.workloads import workload_for
from tests.conftest import own_store
from tests.detection_contract import TINY_RCNN


class Payload:
    """Unpickling this writes `marker`: what an attacker's model file would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny faster_rcnn registered as sightline-detector v1; yields its stored model folder."""
    root = tmp_path_factory.mktemp("model_files")
    with own_store(root):
        experiment = mlflow.create_experiment("files", artifact_location=str(root / "store"))
        with mlflow.start_run(experiment_id=experiment):
            uri = log_model(
                build_model("faster_rcnn", 3, **TINY_RCNN),
                family="faster_rcnn",
                num_classes=3,
                model_params=TINY_RCNN,
                metadata={"task": "detect", "class_names": ["a", "b"]},
            )
        register(
            uri, workload=workload_for("detection"), family="faster_rcnn", metrics={"map": 0.1},
            tags={},
        )  # fmt: skip
        (weights,) = (root / "store").rglob(WEIGHTS_FILE)
        yield weights.parents[2]  # <model>/artifacts/sightline_model/weights.safetensors


@pytest.fixture
def registered(stored: Path) -> Iterator[Path]:
    """The stored model folder, put back as it was after the test planted files in it."""
    before = {p: p.read_bytes() for p in stored.rglob("*") if p.is_file()}
    yield stored
    for path in [p for p in stored.rglob("*") if p.is_file() and p not in before]:
        path.unlink()
    for path, content in before.items():
        path.write_bytes(content)


def test_a_registered_model_holds_no_pickle_and_loads_as_plain_tensors(registered: Path) -> None:
    names = {str(p.relative_to(registered)) for p in registered.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", f"artifacts/sightline_model/{WEIGHTS_FILE}"} <= names
    assert not [n for n in names if n.endswith((".pkl", ".pt", ".pth"))]
    loaded = load_version("sightline-detector")
    assert loaded.family == "faster_rcnn" and loaded.class_names == ["a", "b"]
    assert not loaded.model.training


def test_the_model_stays_usable_from_mlflow_as_a_pyfunc(registered: Path) -> None:
    model = mlflow.pyfunc.load_model("models:/sightline-detector/1")
    assert model.metadata.signature is not None
    assert model.metadata.saved_input_example_info is not None
    rows = model.predict(np.zeros((2, 48, 40, 3), dtype=np.uint8))
    assert list(rows.columns) == ["image", "x1", "y1", "x2", "y2", "label", "score"]
    assert set(rows["image"]) <= {0, 1}


@pytest.mark.parametrize(
    "planted",
    [
        f"artifacts/sightline_model/{WEIGHTS_FILE}",  # the weights themselves
        "data/model.pth",  # where mlflow.pytorch keeps its pickle
        "artifacts/sightline_model/notes.json",  # a pickle under an innocent name
    ],
)
def test_a_planted_pickle_is_refused_and_never_runs(
    registered: Path, tmp_path: Path, planted: str
) -> None:
    marker = tmp_path / "marker"
    target = registered / planted
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pickle.dumps(Payload(marker), protocol=4))

    with pytest.raises(UnsafeModelFile, match=rf"sightline-detector v1: .*{Path(planted).name}"):
        load_version("sightline-detector", "1")
    assert not marker.exists()


def test_a_torch_save_pickle_as_an_extra_file_is_refused(registered: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    torch.save({"x": Payload(marker)}, registered / "extra")  # a zip with a data.pkl inside

    with pytest.raises(UnsafeModelFile, match=r"extra .*may be a pickle"):
        load_version("sightline-detector", "1")
    assert not marker.exists()


def _checkpoint(directory: Path) -> tuple[torch.nn.Module, dict]:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(2, 10))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": 3,
    }
    torch.save(state, directory / CHECKPOINT_FILE)  # as the training loop saves it
    return model, state


def test_a_training_checkpoint_reads_back_weights_only(tmp_path: Path) -> None:
    model, saved = _checkpoint(tmp_path)
    state = load_checkpoint(tmp_path)
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(state["model"])
    optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    optimizer.load_state_dict(state["optimizer"])
    torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(2, 10)).load_state_dict(
        state["scheduler"]
    )
    assert state["epoch"] == 3 and torch.equal(fresh.weight, model.weight)
    assert state["scheduler"]["last_epoch"] == saved["scheduler"]["last_epoch"]


def test_a_planted_checkpoint_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    torch.save({"model": Payload(marker), "epoch": 0}, tmp_path / CHECKPOINT_FILE)

    with pytest.raises(UnsafeCheckpoint, match=f"{CHECKPOINT_FILE} is not a weights-only"):
        load_checkpoint(tmp_path)
    assert not marker.exists()
