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

console = Console(stderr=True)


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
