"""The OTDR deployment: registered event detectors (registered.py) run on traces.

`detect_events` and `load_otdr_model` are also what `sightline otdr detect` runs on a .sor file.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from ray import serve
from torch import nn

from sightline.artifacts import load_trained, model_dir
from sightline.config import Settings
from sightline.serve.otdr_routes import OTDREvent
from sightline.serve.registered import RegisteredModels, family_versions
from sightline.serve.schemas import Catalog
from sightline.track.registry import champion_version, load_version
from sightline.workloads import workload_for

LOCAL_DEFAULT_FAMILY = "otdr_detector"


def detect_events(
    model: nn.Module,
    samples: np.ndarray,
    resolution_m: float,
    class_names: list[str],
    score_threshold: float,
) -> list[OTDREvent]:
    """Run one trace (dB samples, `resolution_m` metres apart) through a 1-D event detector;
    events scoring at least `score_threshold`, in metres, sorted by position."""
    # A copy: arrays arriving through Ray's object store are read-only.
    trace = torch.tensor(np.asarray(samples), dtype=torch.float32)
    with torch.inference_mode():
        output = model([trace])[0]
    keep = output["scores"] >= score_threshold
    events = [
        OTDREvent(
            type=class_names[label - 1] if 1 <= label <= len(class_names) else f"class_{label}",
            position_m=round(start * resolution_m, 3),
            extent_m=round((end - start) * resolution_m, 3),
            score=round(score, 4),
        )
        for (start, end), label, score in zip(
            output["segments"][keep].tolist(),
            output["labels"][keep].tolist(),
            output["scores"][keep].tolist(),
            strict=True,
        )
    ]
    return sorted(events, key=lambda e: (e.position_m, -e.score))


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_constructor_retry_count=2)
class OTDREvents:
    """Holds the loaded OTDR models; the ingress resolves `?model=` against `catalog()`."""

    def __init__(self, tracking_uri: str) -> None:
        self._registered = RegisteredModels(tracking_uri, "otdr")

    def catalog(self) -> Catalog:
        return self._registered.catalog()

    def reload(self) -> Catalog:
        return self._registered.load()

    def detect(
        self, samples: np.ndarray, resolution_m: float, version: str, score_threshold: float
    ) -> list[OTDREvent]:
        loaded = self._registered.get(version)
        return detect_events(
            loaded.model, samples, resolution_m, loaded.class_names, score_threshold
        )


@dataclass(frozen=True)
class OTDRModel:
    """A model for `sightline otdr detect`: registered (name vN) or a local trained one."""

    model: nn.Module
    class_names: list[str]
    description: str


def load_otdr_model(settings: Settings, family: str | None, *, local: bool) -> OTDRModel:
    """The registry's champion, or the version serving `family` (as `?model=` picks it); with
    `local`, the model the train stage wrote to artifacts/models/<family>.

    Raises LookupError naming what is registered, or FileNotFoundError for a missing local one.
    """
    if local:
        directory = model_dir(settings, family or LOCAL_DEFAULT_FAMILY)
        model, record = load_trained(directory)
        if record.task != "events1d":
            raise LookupError(f"{directory} holds a {record.task} model, not an OTDR one")
        return OTDRModel(model, record.class_names, f"{record.family} (local, {directory})")
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    name = workload_for("otdr").registered_model
    champion = champion_version(client, name)
    champion_number = str(champion.version) if champion is not None else None
    served = family_versions(client.search_model_versions(f"name = '{name}'"), champion_number)
    number = champion_number if family is None else served.get(family)
    if number is None:
        wanted = "champion" if family is None else f"{family!r} version"
        raise LookupError(
            f"{name} has no {wanted} in {settings.tracking_uri} (registered families: "
            f"{', '.join(sorted(served)) or 'none'}); run `dvc repro register_otdr`, or use "
            "--local for a model under artifacts/models"
        )
    loaded = load_version(name, number)
    return OTDRModel(
        loaded.model, loaded.class_names, f"{name} v{loaded.version} ({loaded.family})"
    )
