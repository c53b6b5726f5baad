"""Score the model being trained on the validation data, inside the training loop (rank 0).

Tune's early stopping (ASHA) needs the task's primary metric after every epoch; this runs the
same evaluator as the `evaluate` stage (the job's task group) on the model as it is now.
"""

from __future__ import annotations

from torch import nn

from sightline.artifacts import ModelRecord
from sightline.train.job import TrainJob
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
        evaluation = group.evaluate(
            job.validation_settings, model.eval(), record, with_figures=False
        )
    finally:
        model.train(was_training)
    return {k: float(v) for k, v in evaluation.metrics.items() if isinstance(v, int | float)}
