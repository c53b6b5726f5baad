"""params.yaml -> typed settings, with environment overrides.

The file holds the demo profile at top level; `profiles.<name>` blocks hold overrides (e.g.
`full` for GPU clusters) merged on top when `profile:` (or SIGHTLINE_PROFILE) names them.
Environment: SIGHTLINE_PARAMS (path of params.yaml), SIGHTLINE_PROFILE, MLFLOW_TRACKING_URI,
RAY_ADDRESS, SIGHTLINE_API_TOKEN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectionData(Strict):
    """Where a detection dataset lives. Relative paths are resolved from `root`.

    coco: `splits[split]` is an annotation JSON; `images` the folder its file_names are under.
    voc:  `root` is a VOC year folder (Annotations/, JPEGImages/, ImageSets/Main/) and
          `splits[split]` an image-set name from ImageSets/Main.
    """

    format: Literal["coco", "voc"] = "coco"
    root: Path = Path("data/detection")
    images: str = "images"
    splits: dict[str, str] = Field(
        default_factory=lambda: {
            "train": "annotations/train.json",
            "val": "annotations/val.json",
            "test": "annotations/test.json",
        }
    )


class SynthDetection(Strict):
    seed: int = 0
    image_size: int = 128
    train: int = 600
    val: int = 100
    test: int = 100


class Proposals(Strict):
    """Selective search, run once per dataset version for the proposal-based families."""

    mode: Literal["fast", "quality"] = "fast"
    max_proposals: int = 2000
    min_size: int = 4
    max_side: int | None = 128  # search on the image scaled to the models' input size
    workers: int = 2


class Train(Strict):
    num_workers: int = 2
    use_gpu: bool | Literal["auto"] = "auto"
    epochs: int = 8
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    max_failures: int = 2
    threads_per_worker: int = 1
    grad_clip_norm: float = 10.0
    # Ray Train's storage for checkpoints; on a cluster, a path every node sees (NFS, s3://...).
    storage_path: str = "artifacts/ray_results"
    # Tests set this to crash one worker once at that epoch, to prove resume-from-checkpoint.
    inject_failure_at_epoch: int | None = None


class Evaluate(Strict):
    split: str = "val"
    grid_images: int = 8
    grid_score_threshold: float = 0.5


class Serve(Strict):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Larger uploads are shrunk to this side before inference (detectors resize to their own,
    # smaller input anyway); boxes are mapped back to the upload's pixels.
    max_inference_side: int = 1333
    default_score_threshold: float = 0.5


class Settings(Strict):
    profile: str = "demo"
    seed: int = 0
    detection_data: DetectionData = Field(default_factory=DetectionData)
    synth: dict[str, SynthDetection] = Field(
        default_factory=lambda: {"detection": SynthDetection()}
    )
    detection: dict[str, Any] = Field(default_factory=lambda: {"families": ["faster_rcnn"]})
    proposals: Proposals = Field(default_factory=Proposals)
    train: Train = Field(default_factory=Train)
    evaluate: Evaluate = Field(default_factory=Evaluate)
    serve: Serve = Field(default_factory=Serve)
    # Per-family model hyper-parameters, keyed by registry name (models/registry.py).
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Set from the location of params.yaml; relative paths in the file are resolved from it.
    project_root: Path = Path(".")

    @field_validator("detection")
    @classmethod
    def _families_listed(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value.get("families"):
            raise ValueError("detection.families must list at least one model family")
        return value

    def path(self, relative: str | Path) -> Path:
        """A path from params.yaml, resolved against the project root."""
        p = Path(relative)
        return p if p.is_absolute() else self.project_root / p

    def model_params(self, family: str) -> dict[str, Any]:
        return dict(self.models.get(family, {}))

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.path('mlflow.db')}"

    @property
    def ray_address(self) -> str | None:
        return os.environ.get("RAY_ADDRESS") or None

    @property
    def api_token(self) -> str | None:
        return os.environ.get("SIGHTLINE_API_TOKEN") or None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class SettingsError(ValueError):
    """params.yaml is missing, unreadable or has a field with a bad value."""


def default_params_path() -> Path:
    return Path(os.environ.get("SIGHTLINE_PARAMS", "params.yaml")).resolve()


def load_settings(path: str | Path | None = None, profile: str | None = None) -> Settings:
    """Read params.yaml, apply the selected profile's overrides and validate every field."""
    params_path = Path(path).resolve() if path else default_params_path()
    try:
        raw = yaml.safe_load(params_path.read_text()) or {}
    except FileNotFoundError:
        raise SettingsError(f"{params_path}: no such parameters file") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{params_path}: not valid YAML: {exc}") from None
    chosen = profile or os.environ.get("SIGHTLINE_PROFILE") or raw.get("profile", "demo")
    profiles = raw.get("profiles", {}) or {}
    if chosen != "demo" and chosen not in profiles:
        raise SettingsError(f"{params_path}: unknown profile {chosen!r}; have {sorted(profiles)}")
    merged = deep_merge(raw, profiles.get(chosen, {}))
    merged["profile"] = chosen
    merged["project_root"] = params_path.parent
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(f"{params_path}: {exc}") from None
