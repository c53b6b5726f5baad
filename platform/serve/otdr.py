"""The OTDR deployment: registered event detectors (registered.py) run on traces.

`detect_events` is also what `sightline otdr detect` runs on a local .sor file.
"""

from __future__ import annotations

import numpy as np
import torch
from ray import serve
from torch import nn

from sightline.serve.otdr_routes import OTDREvent
from sightline.serve.registered import RegisteredModels
from sightline.serve.schemas import Catalog


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
