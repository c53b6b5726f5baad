"""What one training job needs, as a plain serialisable record sent to every Ray Train worker."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sightline.artifacts import proposals_path
from sightline.config import Settings, Train
from sightline.models.registry import TASK_GROUP
from sightline.models.registry import family as lookup_family


class TrainJob(BaseModel):
    family: str
    task: str
    num_classes: int
    model_params: dict[str, Any]
    # The task group's data section (detection_data, otdr_data or identity_data), as a dict:
    # the task's adapter (train/tasks.py) reads it back into its own type.
    data: dict[str, Any]
    # Group options beyond `train` (e.g. identification's P x K batches).
    task_options: dict[str, Any] = {}
    project_root: str
    train: Train
    seed: int
    run_id: str
    tracking_uri: str
    # Where the failure-injection marker lives (shared by all attempts of this job).
    marker_dir: str
    # Precomputed selective-search proposals of the train split (proposal-based families).
    proposals_path: str | None = None
    # One step of a multi-step schedule (registry `steps`): the weights it starts from, and
    # where its epochs start in the run's metric history.
    init_state: str | None = None
    epoch_offset: int = 0
    # The settings (as a dict) to score the model on the validation data after every epoch
    # with its task group's evaluator (Tune's early stopping reads it); None: no validation.
    validation_settings: dict[str, Any] | None = None


def job_for(
    settings: Settings,
    *,
    family: str,
    num_classes: int,
    run_id: str,
    model_params: dict[str, Any] | None = None,
    task_options: dict[str, Any] | None = None,
    validate_each_epoch: bool = False,
) -> TrainJob:
    """The job a family trains as, from params.yaml (its `models.<family>` block, its group's
    data and `train` blocks); `model_params` replaces the model block once data-derived values
    (anchors) are filled in."""
    registered = lookup_family(family)
    group = TASK_GROUP[registered.task]
    return TrainJob(
        family=family,
        task=registered.task,
        num_classes=num_classes,
        model_params=settings.model_params(family) if model_params is None else model_params,
        data=settings.data_for(group).model_dump(mode="json"),
        task_options=task_options or {},
        project_root=str(settings.project_root),
        train=settings.train_for(group, family),
        seed=settings.seed,
        run_id=run_id,
        tracking_uri=settings.tracking_uri,
        marker_dir=str(settings.path("artifacts/ray_results") / f"markers-{run_id}"),
        proposals_path=str(proposals_path(settings, "train"))
        if registered.uses_proposals
        else None,
        validation_settings=settings.model_dump(mode="json") if validate_each_epoch else None,
    )
