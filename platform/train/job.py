"""What one training job needs, as a plain serialisable record sent to every Ray Train worker."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sightline.config import DetectionData, Train


class TrainJob(BaseModel):
    family: str
    task: str
    num_classes: int
    model_params: dict[str, Any]
    data: DetectionData
    project_root: str
    train: Train
    seed: int
    run_id: str
    tracking_uri: str
    # Where the failure-injection marker lives (shared by all attempts of this job).
    marker_dir: str
