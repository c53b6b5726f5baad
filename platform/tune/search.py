"""One Ray Tune search over a family's params.yaml search space.

The search is one MLflow parent run (`tune-<family>`); every trial is a child run that trains
through the same Ray Train loop (`train_and_log`), scored on the validation data after every
epoch so ASHA can stop weak trials early. The family's current params are evaluated as one of
the trials (the baseline the search must beat). A failed trial (bad config, NaN loss, out of
memory) is recorded as FAILED with its error and the search goes on. At the end the parent
records the best config and a plot of the metric against each searched parameter, and the best
trial's model is registered: `champion` moves only if it beats the champion on the same scope.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray import tune
from ray.exceptions import RayActorError
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from sightline.cluster import ensure_ray
from sightline.config import Settings, TuneBudget, deep_merge
from sightline.models import build_model
from sightline.track.registry import Promotion, register
from sightline.track.runs import (
    experiment_id,
    flatten,
    local_artifact_root,
    log_metrics,
    use_tracking,
)
from sightline.train.family_run import lineage_tags, run_params, train_and_log
from sightline.train.selection import VALIDATION_PREFIX
from sightline.tune.plots import metric_vs_params_figure
from sightline.tune.space import encode_value, parse_space, split_config
from sightline.workloads import workload_of_family

TRIAL_ID_TAG = "tune_trial_id"


class TrialOutcomes(tune.Callback):
    """Which trials Tune saw fail (in the driver). A trial ASHA stops can die with errors of its
    own (its Ray Train controller goes first), so MLflow run states alone cannot tell."""

    def __init__(self) -> None:
        self.errored: set[str] = set()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.errored.add(trial.trial_id)


# The trial process only waits on its Ray Train workers (their own placement group) and scores
# the model after them: it must not hold any share of a CPU they need. A fractional CPU would:
# two 1-CPU workers plus two 0.01-CPU drivers do not fit in 2 CPUs, so trials ran one at a time
# and the other trial's worker group timed out over and over. Memory is its only reservation.
TRIAL_DRIVER_RESOURCES = {"memory": 256 * 1024**2}


@dataclass
class TrialSummary:
    run_id: str
    status: str
    config: dict[str, Any]
    metric: float | None
    epochs: int
    error: str | None = None


@dataclass
class SearchOutcome:
    family: str
    metric: str
    parent_run_id: str
    trials: list[TrialSummary]
    best: TrialSummary | None
    baseline: TrialSummary | None
    promotion: dict[str, Any] | None
    wall_time_s: float
    max_epochs: int  # per trial
    grace_period: int  # epochs before ASHA may stop a trial
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_settings(settings: Settings, family: str, config: dict[str, Any]) -> Settings:
    """The settings one trial trains with: the sampled values over the family's params, the
    search's epoch budget and workers per trial."""
    group = workload_of_family(family).name
    model_overrides, train_overrides = split_config(config)
    models = {**settings.models, family: {**settings.model_params(family), **model_overrides}}
    section = settings.group(group)
    family_train = deep_merge(
        section.family_train,
        {
            family: {
                **section.family_train.get(family, {}),
                **train_overrides,
                "epochs": settings.tune.budget(family).max_epochs,
                "num_workers": settings.tune.workers_per_trial,
                "threads_per_worker": settings.tune.threads_per_worker,
                "max_failures": 0,  # a failing trial is recorded as failed, not retried
                "controller_failure_limit": settings.tune.worker_start_retries,
            }
        },
    )
    updated = settings.model_copy(
        update={"models": models, group: section.model_copy(update={"family_train": family_train})}
    )
    return Settings.model_validate(updated.model_dump(mode="json"))  # re-checked as a whole


def default_config(settings: Settings, family: str, space: dict[str, Any]) -> dict[str, Any]:
    """The family's current values of the searched keys (the baseline trial)."""
    train = workload_of_family(family).train_block(settings, family).model_dump(mode="json")
    model = settings.model_params(family)
    return {
        key: encode_value(model.get(key[7:]) if key.startswith("models.") else train.get(key[6:]))
        for key in space
    }


class BaselineKeepingASHA(ASHAScheduler):
    """ASHA that never stops the baseline trial (the family's current params): its score sets
    the bar at every rung like any trial's, and it runs to the end, so the search's gain over
    the current params is measured on the same budget."""

    def __init__(self, baseline: dict[str, Any] | None, **asha: Any) -> None:
        super().__init__(**asha)
        self._baseline = baseline

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.STOP and self._baseline is not None and trial.config == self._baseline:
            self._num_stopped -= 1
            return self.CONTINUE
        return decision


def early_stopping(
    metric: str, budget: TuneBudget, reduction_factor: float, baseline: dict[str, Any] | None
) -> ASHAScheduler:
    """ASHA over the per-epoch validation score, with rungs (grace x reduction^k) only before
    the last epoch and no stop at max_t: a trial that reaches its last epoch always ends by
    itself, scored and logged, so "stopped early" means stopped early. The baseline trial
    (None: there is none, e.g. a grid) is never stopped."""
    return BaselineKeepingASHA(
        baseline,
        metric=metric,
        mode="max",
        max_t=max(budget.max_epochs - 1, budget.grace_period),
        stop_last_trials=False,
        grace_period=budget.grace_period,
        reduction_factor=reduction_factor,
    )


def search_algorithm(
    space: dict[str, Any], baseline: dict[str, Any], max_concurrent: int, seed: int
) -> BasicVariantGenerator | None:
    """Random variants drawn from `seed` (the same params, the same trials), the family's
    current params first (the baseline), at most `max_concurrent` trials at a time. A grid is
    exhaustive: no baseline, and None lets Tune build the generator with its
    max_concurrent_trials. (Tune ignores max_concurrent_trials for a generator passed in,
    hence the limit here.)"""
    if any(isinstance(v, dict) and "grid_search" in v for v in space.values()):
        return None
    return BasicVariantGenerator(
        points_to_evaluate=[baseline], max_concurrent=max_concurrent, random_state=seed
    )


def run_trial(
    config: dict[str, Any],
    *,
    settings_dump: dict[str, Any],
    family: str,
    parent_run_id: str,
    tracking_uri: str,
) -> None:
    """One Tune trial (runs in a Tune trial process): a child run trained and scored."""
    # The driver's store, whatever this process's environment says (settings read it from env).
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    settings = Settings.model_validate(settings_dump)
    use_tracking(tracking_uri)
    client = MlflowClient()
    workload = workload_of_family(family)
    parent = client.get_run(parent_run_id)
    trial_id = tune.get_context().get_trial_id()
    run = client.create_run(
        parent.info.experiment_id,
        run_name=f"{family}-trial-{trial_id}",
        tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            "kind": "tune-trial",
            "family": family,
            TRIAL_ID_TAG: trial_id,
        },
    )
    run_id = run.info.run_id
    for key, value in config.items():
        client.log_param(run_id, f"searched.{key}", str(value))
    try:
        chosen = trial_settings(settings, family, config)
        data = workload.training_data(chosen, family)
        build_model(family, data.num_classes, **data.model_params)  # a bad config fails here
        tags = lineage_tags(chosen, data)
        for key, value in {**flatten(run_params(chosen, family, data)), **tags}.items():
            (client.set_tag if key in tags else client.log_param)(run_id, key, value)
        trained = train_and_log(
            chosen,
            workload,
            family,
            data,
            run_id,
            tags=tags,
            validate_each_epoch=True,
            callbacks=[TuneReportCallback()],
        )
        final = workload.evaluate(chosen, trained.model, trained.record, with_figures=False)
        with mlflow.start_run(run_id=run_id):
            log_metrics({f"final_{k}": v for k, v in final.metrics.items()})
            mlflow.set_tags(
                {
                    "model_uri": trained.record.model_uri,
                    "eval_scope": workload.eval_scope(chosen, trained.record),
                }
            )
    except RayActorError:
        # Tune is stopping this trial (ASHA): its Ray Train controller was torn down under it.
        # Not a failure; the driver records the trial as stopped early.
        raise
    except Exception as exc:
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise


def run_search(settings: Settings, family: str) -> SearchOutcome:
    """Search `family`'s space (params.yaml `tune.spaces.<family>`); see the module docstring."""
    started = time.perf_counter()
    workload = workload_of_family(family)
    metric = workload.primary_metric
    space = parse_space(family, settings.tune.spaces.get(family, {}))
    cfg = settings.tune
    budget = cfg.budget(family)
    use_tracking(settings.tracking_uri)
    exp = experiment_id(
        workload.experiment,
        local_artifact_root(settings.tracking_uri, settings.path("mlartifacts")),
    )
    with mlflow.start_run(
        experiment_id=exp, run_name=f"tune-{family}", tags={"kind": "tune", "family": family}
    ) as parent:
        parent_id = parent.info.run_id
        searched = cfg.model_dump(exclude={"spaces", "family_budget"}) | budget.model_dump()
        mlflow.log_params(flatten({"tune": searched, "space": space}))
    ensure_ray(settings.ray_address)
    trainable = tune.with_resources(
        partial(
            run_trial,
            settings_dump=settings.model_dump(mode="json"),
            family=family,
            parent_run_id=parent_id,
            tracking_uri=settings.tracking_uri,
        ),
        TRIAL_DRIVER_RESOURCES,
    )
    baseline_config = default_config(settings, family, space)
    search = search_algorithm(space, baseline_config, cfg.max_concurrent_trials, settings.seed)
    tune_config = tune.TuneConfig(
        num_samples=cfg.num_samples,
        max_concurrent_trials=cfg.max_concurrent_trials,
        scheduler=early_stopping(
            VALIDATION_PREFIX + metric,
            budget,
            cfg.reduction_factor,
            baseline_config if search else None,
        ),
        search_alg=search,
    )
    outcomes = TrialOutcomes()
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=f"tune-{family}-{parent_id[:8]}",
            storage_path=str(settings.path(settings.train.storage_path)),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            callbacks=[outcomes],
            verbose=1,
        ),
    )
    tuner.fit()
    return _summarise(
        settings, family, metric, exp, parent_id, baseline_config, started, outcomes.errored
    )


def _summarise(
    settings: Settings,
    family: str,
    metric: str,
    experiment: str,
    parent_id: str,
    baseline_config: dict[str, Any],
    started: float,
    errored: set[str],
) -> SearchOutcome:
    client = MlflowClient()
    children = client.search_runs(
        [experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'", max_results=1000
    )
    trials = [_trial_summary(client, run, metric, errored) for run in children]
    finished = [t for t in trials if t.status == "FINISHED" and t.metric is not None]
    baseline = next((t for t in finished if _same(t.config, baseline_config)), None)
    # On a tie the current params stay the best: a search only "finds" what scores higher.
    best = max(finished, key=lambda t: (t.metric, t is baseline), default=None)
    promotion = None
    with mlflow.start_run(run_id=parent_id):
        mlflow.log_metrics(
            {
                "trials": len(trials),
                "trials_failed": sum(t.status == "FAILED" for t in trials),
                "trials_stopped_early": sum(t.status == "KILLED" for t in trials),
            }
        )
        if finished:
            mlflow.log_figure(
                metric_vs_params_figure([(t.config, t.metric) for t in finished], metric),
                f"tune/{metric}_vs_params.png",
            )
        if best is not None:
            mlflow.log_metric(f"best_{metric}", best.metric)
            mlflow.log_params({f"best.{k}": str(v) for k, v in best.config.items()})
            mlflow.set_tag("best_run_id", best.run_id)
            promotion = _register_best(client, family, best, parent_id)
            mlflow.set_tags({"registered_version": promotion.version,
                             "champion": str(promotion.promoted).lower()})  # fmt: skip
    return SearchOutcome(
        family=family,
        metric=metric,
        parent_run_id=parent_id,
        trials=trials,
        best=best,
        baseline=baseline,
        promotion=None
        if promotion is None
        else asdict(promotion) | {"describe": promotion.describe()},
        wall_time_s=time.perf_counter() - started,
        **settings.tune.budget(family).model_dump(),
    )


def _trial_summary(client: MlflowClient, run: Run, metric: str, errored: set[str]) -> TrialSummary:
    """The trial as Tune ended it, made final in MLflow: FAILED if Tune saw it fail, FINISHED if
    it scored its model, else KILLED (stopped early by ASHA, mid-training)."""
    run_id, status = run.info.run_id, run.info.status
    if run.data.tags.get(TRIAL_ID_TAG) in errored:
        if status != "FAILED":
            client.set_tag(run_id, "error", run.data.tags.get("error", "the trial process died"))
            client.set_terminated(run_id, "FAILED")
        status = "FAILED"
    elif status != "FINISHED":
        client.set_tag(run_id, "stopped_early", "true")
        client.set_terminated(run_id, "KILLED")
        status = "KILLED"
    history = client.get_metric_history(run.info.run_id, VALIDATION_PREFIX + metric)
    final = run.data.metrics.get(f"final_{metric}")
    value = final if final is not None else (history[-1].value if history else None)
    config = {
        k[len("searched.") :]: v for k, v in run.data.params.items() if k.startswith("searched.")
    }
    return TrialSummary(
        run_id=run_id,
        status=status,
        config=config,
        metric=None if value is None or math.isnan(value) else float(value),
        epochs=len(history),
        error=run.data.tags.get("error") if status == "FAILED" else None,
    )


def _same(searched: dict[str, str], baseline: dict[str, Any]) -> bool:
    return searched == {k: str(v) for k, v in baseline.items()}


def _register_best(
    client: MlflowClient, family: str, best: TrialSummary, parent_id: str
) -> Promotion:
    run = client.get_run(best.run_id)
    workload = workload_of_family(family)
    metrics = {k[len("final_") :]: v for k, v in run.data.metrics.items() if k.startswith("final_")}
    return register(
        run.data.tags["model_uri"],
        workload=workload,
        family=family,
        metrics=workload.registry_metrics(metrics),
        tags={
            "run_id": best.run_id,
            "tune_parent_run_id": parent_id,
            **{k: run.data.tags[k] for k in ("git_commit", "dvc_data_hash") if k in run.data.tags},
        },
        eval_scope=run.data.tags.get("eval_scope", ""),
    )
