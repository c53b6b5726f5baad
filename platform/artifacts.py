"""What the pipeline stages hand each other on disk (DVC outputs), in one place.

artifacts/models/<family>/  state.pt + model.json   (train -> evaluate, register)
metrics/<family>.json                                (evaluate -> register; DVC metrics)
reports/registry/<group>/<family>.json               (register: version and champion decision)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from sightline.config import Settings
from sightline.models import build_model

STATE_FILE = "state.pt"
RECORD_FILE = "model.json"


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
    # Values calibrated after training and versioned with the weights (e.g. the γ threshold).
    extras: dict[str, Any] = {}


def model_dir(settings: Settings, family: str) -> Path:
    return settings.path("artifacts/models") / family


def proposals_path(settings: Settings, split: str) -> Path:
    return settings.path("artifacts/proposals") / f"{split}.npz"


def proposals_for(settings: Settings, family: str, split: str) -> dict[int, Any] | None:
    """The precomputed proposals of `split` if `family` is scored on them, else None."""
    from sightline.data.proposals import load_proposals
    from sightline.models.registry import family as lookup_family

    if not lookup_family(family).uses_proposals:
        return None
    return load_proposals(proposals_path(settings, split))


def metrics_path(settings: Settings, family: str) -> Path:
    return settings.path("metrics") / f"{family}.json"


def registry_report_path(settings: Settings, family: str) -> Path:
    """reports/registry/<task group>/<family>.json: a group's benchmark depends on its folder."""
    from sightline.models.registry import TASK_GROUP
    from sightline.models.registry import family as lookup_family

    group = TASK_GROUP[lookup_family(family).task]
    return settings.path("reports/registry") / group / f"{family}.json"


def save_trained(directory: Path, model: nn.Module, record: ModelRecord) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / STATE_FILE)
    (directory / RECORD_FILE).write_text(record.model_dump_json(indent=2) + "\n")


def load_record(directory: Path) -> ModelRecord:
    path = directory / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train this family first (dvc repro train)")
    return ModelRecord.model_validate_json(path.read_text())


def load_trained(directory: Path) -> tuple[nn.Module, ModelRecord]:
    record = load_record(directory)
    model = build_model(record.family, record.num_classes, **record.model_params)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), record


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
