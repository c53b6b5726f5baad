"""DVC stage `tune@<family>`: a Ray Tune search over the family's params.yaml search space.

python -m sightline.pipelines.tune --family faster_rcnn [--params params.yaml]

Writes reports/tune/<family>.json (trials, best config, the baseline trial, the registry
decision); the MLflow parent run `tune-<family>` holds one child run per trial.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from sightline.artifacts import write_json
from sightline.config import Settings
from sightline.stage import run_stage
from sightline.tune.search import run_search
from sightline.workloads import all_workloads

console = Console(stderr=True)

# The params.yaml keys a search reads of its own section (`tune.families` only lists the
# stages) ...
SEARCH_PARAMS = (
    "tune.num_samples",
    "tune.max_concurrent_trials",
    "tune.workers_per_trial",
    "tune.threads_per_worker",
    "tune.max_epochs",
    "tune.grace_period",
    "tune.reduction_factor",
    "tune.worker_start_retries",
    "tune.family_budget",
    "tune.spaces.{family}",
)
# ... and what its trials read: each trains, is scored after every epoch and the best is
# registered. dvc.yaml's one `tune` template serves families of every group, so it lists every
# group's keys (a key inside one listed whole is left out); dvc.yaml lists exactly these
# (tests/unit/test_dvc_params.py).
_TRIAL_PARAMS = {
    key
    for workload in all_workloads()
    for kind in ("train", "evaluate", "register")
    for key in workload.stage_params[kind]
}
STAGE_PARAMS = SEARCH_PARAMS + tuple(
    sorted(
        key
        for key in _TRIAL_PARAMS
        if not any(key.startswith(f"{whole}.") for whole in _TRIAL_PARAMS)
    )
)


def stage(settings: Settings, args: argparse.Namespace) -> int:
    outcome = run_search(settings, args.family)
    write_json(settings.path("reports/tune") / f"{args.family}.json", outcome.to_dict())
    table = Table(title=f"tune {args.family}: {outcome.metric} per trial")
    for column in ("run", "status", "epochs", outcome.metric, "config"):
        table.add_column(column)
    for trial in sorted(outcome.trials, key=lambda t: -(t.metric or -1)):
        score = "-" if trial.metric is None else f"{trial.metric:.4f}"
        table.add_row(trial.run_id[:8], trial.status, str(trial.epochs), score, str(trial.config))
    console.print(table)
    if outcome.promotion is not None:
        console.print(outcome.promotion["describe"], soft_wrap=True)
    return 0 if outcome.best is not None else 1


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=True)


if __name__ == "__main__":
    sys.exit(main())
