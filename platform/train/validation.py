"""Score the model being trained on the validation data, inside the training loop (rank 0).

The recipe's choice of epoch (sightline.train.selection) and Tune's early stopping (ASHA) need
the task's primary metric after every epoch; this runs the same evaluator as the `evaluate`
stage (the job's task group's `validation_scores`) on the model as it is now, on the validation
data, and names the scores `val_<metric>`.
"""

from __future__ import annotations

from torch import nn

from sightline.artifacts import ModelRecord
from sightline.train.job import TrainJob
from sightline.train.selection import VALIDATION_PREFIX
from sightline.train.tasks import TaskGroup


def validation_metrics(job: TrainJob, model: nn.Module, group: TaskGroup) -> dict[str, float]:
    if job.validation_settings is None:
        raise ValueError(f"job {job.run_id} ({job.family}) was built without validation settings")
    record = ModelRecord(
        family=job.family,
        task=job.task,
        num_classes=job.num_classes,
        model_params=job.model_params,
        class_names=[],
        category_ids=[],
        run_id=job.run_id,
        model_uri="",
        tags={},
    )
    was_training = model.training
    try:
        scores = group.validation_scores(job.validation_settings, model.eval(), record)
    finally:
        model.train(was_training)
    return {VALIDATION_PREFIX + k: v for k, v in scores.items()}
