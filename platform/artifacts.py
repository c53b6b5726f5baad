"""What the pipeline stages hand each other on disk (DVC outputs), in one place.

artifacts/models/<family>/  weights.safetensors + model.json   (train -> evaluate, register)
metrics/<family>.json                                (evaluate -> register; DVC metrics)
reports/registry/<group>/<family>.json               (register: version and champion decision)

A model is its weights as plain tensors (safetensors) plus its JSON record; loading rebuilds
the network from the model registry's builder. Nothing here, or anywhere, unpickles a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
from pydantic import BaseModel
from safetensors import SafetensorError
from torch import nn

from sightline.config import Settings
from sightline.models import build_model

WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "model.json"
# Names of files that usually hold pickles (torch.save, joblib, cloudpickle): never loaded.
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin", ".joblib", ".dill"}


class UnsafeModelFile(ValueError):
    """A model file that is not plain tensors + JSON (e.g. a pickle, which could run code)."""


class PostHocReport(BaseModel):
    """What R-CNN's stage 2 saw (sightline.train.post_hoc)."""

    region_features: str  # the cached features' file, inside the model's folder
    cached_regions: int
    svm_hinge_loss: float
    svm_positives: list[int]  # per class
    svm_negatives: list[int]
    regression_rows: list[int]


class ModelExtras(BaseModel):
    """Values calibrated after training and versioned with the weights; each group sets its own
    (a workload's `after_training`). Stored in model.json and flat in the MLflow metadata."""

    # identification: the distance threshold γ for target_far on validation pairs, by `rule`
    gamma: float | None = None
    target_far: float | None = None
    rule: str | None = None
    val_tar_at_gamma: float | None = None
    # detection families with a stage 2 (R-CNN)
    post_hoc: PostHocReport | None = None

    def metadata(self) -> dict[str, Any]:
        """The values that are set, as JSON-ready metadata."""
        return self.model_dump(mode="json", exclude_none=True)


class ModelRecord(BaseModel):
    family: str
    task: str
    num_classes: int
    model_params: dict[str, Any]
    class_names: list[str]
    category_ids: list[int]
    run_id: str
    model_uri: str
    tags: dict[str, str]
    extras: ModelExtras = ModelExtras()


def model_dir(settings: Settings, family: str) -> Path:
    return settings.path("artifacts/models") / family


def proposals_dir(settings: Settings) -> Path:
    """Where the `proposals` stage writes each split's selective-search proposals."""
    return settings.path("artifacts/proposals")


def proposals_path(settings: Settings, split: str) -> Path:
    return proposals_dir(settings) / f"{split}.npz"


def proposals_for(settings: Settings, family: str, split: str) -> dict[int, Any] | None:
    """The precomputed proposals of `split` if `family` is scored on them, else None."""
    from sightline.data.proposals import load_proposals
    from sightline.models.registry import family as lookup_family

    if not lookup_family(family).uses_proposals:
        return None
    return load_proposals(proposals_path(settings, split))


def metrics_path(settings: Settings, family: str) -> Path:
    return settings.path("metrics") / f"{family}.json"


def registry_report_path(settings: Settings, group: str, family: str) -> Path:
    """reports/registry/<task group>/<family>.json: a group's benchmark depends on its folder."""
    return settings.path("reports/registry") / group / f"{family}.json"


def save_trained(directory: Path, model: nn.Module, record: ModelRecord) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # save_model (not save_file): it drops the duplicate names of shared tensors.
    safetensors.torch.save_model(model, str(directory / WEIGHTS_FILE))
    (directory / RECORD_FILE).write_text(record.model_dump_json(indent=2) + "\n")


def load_record(directory: Path) -> ModelRecord:
    path = directory / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train this family first (dvc repro train)")
    return ModelRecord.model_validate_json(path.read_text())


def load_trained(directory: Path) -> tuple[nn.Module, ModelRecord]:
    """Rebuild the recorded family and read its safetensors weights; raises UnsafeModelFile
    if the weights file is anything else (a pickle is refused, never opened as one)."""
    record = load_record(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: train this family again (dvc repro train)")
    # The starting-weights file a model was trained from (`weights`) is not needed, nor read,
    # to rebuild it: its own weights follow, and the file may not exist where it is served.
    params = {k: v for k, v in record.model_params.items() if k != "weights"}
    model = build_model(record.family, record.num_classes, **params)
    try:
        safetensors.torch.load_model(model, str(weights), device="cpu")
    except SafetensorError as exc:
        raise UnsafeModelFile(
            f"{weights} is not a safetensors weights file ({exc}); refusing to load it: "
            "model weights are read only as plain tensors"
        ) from None
    return model.eval(), record


def refuse_pickles(directory: Path) -> None:
    """Raise UnsafeModelFile naming the first file under `directory` that is or may be a
    pickle (by name, by a pickle or torch.save header), so a planted payload is never loaded."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.name == WEIGHTS_FILE:
            continue  # checked by the safetensors reader itself
        with path.open("rb") as handle:
            head = handle.read(4)
        pickled = head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}
        zipped = head == b"PK\x03\x04"  # torch.save's zip holds a data.pkl
        if path.suffix.lower() in PICKLE_SUFFIXES or pickled or zipped:
            raise UnsafeModelFile(
                f"{path.relative_to(directory)} in {directory} may be a pickle (it could run "
                "code when loaded); refusing to load this model: Sightline models hold only "
                f"{WEIGHTS_FILE} and JSON"
            )


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
