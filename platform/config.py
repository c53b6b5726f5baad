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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sightline.data.augment_params import Augment
from sightline.data.sources import DetectionData, IdentityData, OTDRData
from sightline.data.synth.params import Synth, SynthDetection

# The dataset sections are the data layer's own types, read into Settings from there.
__all__ = [
    "DetectionData",
    "IdentityData",
    "OTDRData",
    "Settings",
    "SettingsError",
    "SynthDetection",
    "load_settings",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FamilyGroup(Strict):
    """The families one task group trains (`dvc.yaml` foreach), and its `train` overrides."""

    families: list[str]
    # Merged over the top-level `train` block for this group's jobs (e.g. more epochs) ...
    train: dict[str, Any] = Field(default_factory=dict)
    # ... and, per family, over that (e.g. fewer epochs for a slow family in the demo profile).
    family_train: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("families")
    @classmethod
    def _families_listed(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("families must list at least one model family")
        return value


class Identification(FamilyGroup):
    families: list[str] = Field(
        default_factory=lambda: [
            "pixel_template",
            "classifier_embed",
            "siamese_contrastive",
            "triplet",
        ]
    )
    target_far: float = Field(1e-2, gt=0, lt=1)  # gamma is calibrated for this false-accept rate
    rule: Literal["mean", "min"] = "mean"  # distance to a person: mean or min over templates
    # Templates enrolled per unseen identity when scoring (top1_k<k>, dir_at_far_1e-2_k<k>);
    # `top1` and `dir_at_far_1e-2` are reported for headline_k.
    enroll_k: list[int] = Field(default_factory=lambda: [1, 3, 5], min_length=1)
    headline_k: int = 3
    identities_per_batch: int = Field(8, ge=2)  # P x K batches for the metric losses
    images_per_identity: int = Field(4, ge=2)

    @field_validator("enroll_k")
    @classmethod
    def _positive_k(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"enroll_k must be >= 1 template each, got {value}")
        return sorted(set(value))

    @field_validator("headline_k")
    @classmethod
    def _headline_k_is_enrolled(cls, value: int, info: ValidationInfo) -> int:
        enrolled = info.data.get("enroll_k") or []
        if value not in enrolled:
            raise ValueError(f"headline_k {value} must be one of enroll_k {enrolled}")
        return value


class TuneBudget(Strict):
    """One family's epochs per trial and ASHA grace (unset: the search-wide values)."""

    max_epochs: int | None = Field(None, ge=1)
    grace_period: int | None = Field(None, ge=1)


class Tune(Strict):
    """Ray Tune searches (`sightline tune <family>`): ASHA over per-epoch validation scores."""

    families: list[str] = Field(default_factory=list)  # what `dvc repro tuning` searches
    num_samples: int = Field(4, ge=1)  # trials per search
    max_concurrent_trials: int = Field(2, ge=1)
    workers_per_trial: int = Field(1, ge=1)  # Ray Train workers of each trial
    # CPUs (torch threads) of each worker: trials x workers x threads should fit the cluster.
    threads_per_worker: int = Field(1, ge=1)
    max_epochs: int = Field(2, ge=1)  # per trial (ASHA's rungs all fall before the last)
    grace_period: int = Field(1, ge=1)  # epochs every trial gets before it may be stopped
    reduction_factor: float = Field(2.0, gt=1)
    # Per family: a model that needs more epochs to show its quality (e.g. an embedder).
    family_budget: dict[str, TuneBudget] = Field(default_factory=dict)
    # A trial whose Ray Train workers cannot be placed is retried this many times (Ray Train
    # waits 60 s per try, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S), then fails: never a hung search.
    worker_start_retries: int = Field(3, ge=0)
    # family -> {"models.<param>" | "train.<field>": {sampler: args}}; see platform/tune/space.py
    spaces: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _budgets_name_searched_families(self) -> Tune:
        unknown = sorted(set(self.family_budget) - set(self.spaces))
        if unknown:
            raise ValueError(
                f"family_budget.{unknown[0]}: no search space for it in tune.spaces "
                f"(spaces: {', '.join(sorted(self.spaces)) or 'none'})"
            )
        return self

    def budget(self, family: str) -> TuneBudget:
        """`family`'s epochs per trial and grace period, resolved (grace at most the epochs)."""
        own = self.family_budget.get(family, TuneBudget())
        epochs = own.max_epochs or self.max_epochs
        grace = own.grace_period or self.grace_period
        return TuneBudget(max_epochs=epochs, grace_period=min(grace, epochs))


class Proposals(Strict):
    """Selective search, run once per dataset version for the proposal-based families."""

    mode: Literal["fast", "quality"] = "fast"
    max_proposals: int = 2000
    min_size: int = 4
    max_side: int | None = 128  # search on the image scaled to the models' input size
    workers: int = 2


class Train(Strict):
    # Ray Train workers (DDP). 0: Ray Train's local mode, the same loop in the calling process
    # with no worker actors (a quick check or a debugger session; no fault tolerance).
    num_workers: int = Field(2, ge=0)
    use_gpu: bool | Literal["auto"] = "auto"
    epochs: int = 8
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    max_failures: int = 2
    # Controller failures Ray Train retries, mostly workers that could not be placed in time;
    # -1 (Ray's default): wait for resources forever, as an autoscaling cluster wants.
    controller_failure_limit: int = Field(-1, ge=-1)
    threads_per_worker: int = 1
    grad_clip_norm: float = 10.0
    # The weights kept: "best", the epoch with the best validation score (the task group's
    # primary metric on its `val` split, scored after every epoch), or "last" (scores nothing).
    keep_epoch: Literal["best", "last"] = "best"
    # With keep_epoch best: stop after this many epochs without a better validation score.
    patience: int | None = Field(None, ge=1)
    # With keep_epoch best: the first epochs not scored (nor kept), to save their validation
    # where a short schedule is never best early (Tune's trials score every epoch).
    validation_delay: int = Field(0, ge=0)
    # Training-time augmentation (null: none).
    augment: Augment | None = Field(default_factory=Augment)
    # Ray Train's storage for checkpoints; on a cluster, a path every node sees (NFS, s3://...).
    storage_path: str = "artifacts/ray_results"
    # Tests set this to crash one worker once at that epoch, to prove resume-from-checkpoint.
    inject_failure_at_epoch: int | None = None


class Evaluate(Strict):
    split: str = "val"
    grid_images: int = 8
    grid_score_threshold: float = 0.5
    untrained_first: int | None = Field(None, ge=1)  # the untrained baseline's sample; None: all


class ServeBatch(Strict):
    """Dynamic batching (@serve.batch) in the detector and embedder replicas; 1 turns it off."""

    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=10)
    # Detector families served one request at a time: their forward pass costs the same per
    # image in a batch, so a batch only makes each request wait for the others.
    unbatched_families: list[str] = Field(default_factory=list)


class ServeScaling(Strict):
    """Replicas and queue limits of each task deployment (detector, OTDR, faces): a request
    finding `max_queued_requests` already waiting gets 503 with Retry-After at once."""

    num_replicas: int = Field(1, ge=1)
    # Ray Serve's autoscaling_config (min_replicas, max_replicas, target_ongoing_requests...);
    # when set it replaces num_replicas.
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int = Field(8, ge=1)  # per replica, in flight at once
    max_queued_requests: int = Field(32, ge=-1)  # waiting at each caller; -1: no limit
    retry_after_s: float = Field(1.0, ge=0)


class Serve(Strict):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Larger uploads are shrunk to this side before inference (detectors resize to their own,
    # smaller input anyway); boxes are mapped back to the upload's pixels.
    max_inference_side: int = 1333
    default_score_threshold: float = 0.5
    max_trace_samples: int = Field(1_048_576, ge=2)  # longest OTDR trace /v1/otdr/events takes
    # The enrolled faces (identification): a SQLite file in this folder, kept across restarts.
    gallery_path: Path = Path("artifacts/gallery")
    # Processes per detector replica that run selective search for rcnn / fast_rcnn requests
    # side by side (serve/proposals.py); 0: the replica searches in its own thread.
    proposal_workers: int = Field(2, ge=0)
    batch: ServeBatch = ServeBatch()
    scaling: ServeScaling = ServeScaling()


class Settings(Strict):
    profile: str = "demo"
    seed: int = 0
    detection_data: DetectionData = Field(default_factory=DetectionData)
    otdr_data: OTDRData = Field(default_factory=OTDRData)
    identity_data: IdentityData = Field(default_factory=IdentityData)
    synth: Synth = Field(default_factory=Synth)
    detection: FamilyGroup = Field(default_factory=lambda: FamilyGroup(families=["faster_rcnn"]))
    otdr: FamilyGroup = Field(
        default_factory=lambda: FamilyGroup(families=["otdr_window", "otdr_detector"])
    )
    identification: Identification = Field(default_factory=Identification)
    proposals: Proposals = Field(default_factory=Proposals)
    tune: Tune = Field(default_factory=Tune)
    train: Train = Field(default_factory=Train)
    evaluate: Evaluate = Field(default_factory=Evaluate)
    serve: Serve = Field(default_factory=Serve)
    # Per-family model hyper-parameters, keyed by registry name (models/registry.py).
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Set from the location of params.yaml; relative paths in the file are resolved from it.
    project_root: Path = Path(".")

    @model_validator(mode="after")
    def _train_overrides_are_valid(self) -> Settings:
        groups = [name for name, value in self if isinstance(value, FamilyGroup)]
        for group in groups:
            for family in [None, *self.group(group).family_train]:
                try:
                    self.train_for(group, family)
                except ValidationError as exc:
                    where = f"{group}.family_train.{family}" if family else f"{group}.train"
                    raise ValueError(f"{where}: {exc}") from None
        return self

    def path(self, relative: str | Path) -> Path:
        """A path from params.yaml, resolved against the project root."""
        p = Path(relative)
        return p if p.is_absolute() else self.project_root / p

    def model_params(self, family: str) -> dict[str, Any]:
        return dict(self.models.get(family, {}))

    def group(self, name: str) -> FamilyGroup:
        """A task group's section (`detection`, `otdr`, `identification`: its families and
        `train` overrides); the section has the group's name (sightline.workloads)."""
        section = getattr(self, name, None) if name in type(self).model_fields else None
        if not isinstance(section, FamilyGroup):
            raise KeyError(f"params.yaml has no task group section {name!r}")
        return section

    def train_for(self, group: str, family: str | None = None) -> Train:
        """The `train` block, the group's `train` overrides and the family's on top."""
        section = self.group(group)
        merged = deep_merge(self.train.model_dump(), section.train)
        merged = deep_merge(merged, section.family_train.get(family or "", {}))
        return Train.model_validate(merged)

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
    merged = deep_merge(raw, profiles.get(chosen) or {})
    merged["profile"] = chosen
    merged["project_root"] = params_path.parent
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(f"{params_path}: {exc}") from None
