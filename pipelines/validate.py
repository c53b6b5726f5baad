"""DVC stages `validate`, `validate_otdr` and `validate_identity`: check a task group's dataset
with Great Expectations before anything trains on it.

    python -m sightline.pipelines.validate [--group detection|otdr|identification]
                                           [--params params.yaml]

Writes reports/validation/<group>.json (under the project root) and exits 1, after printing
each failing expectation with example rows to stderr, when the data is not fit to train on.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from sightline.config import Settings
from sightline.stage import run_stage
from sightline.workloads import all_workloads, workload_for


def report_path(group: str) -> str:
    return f"reports/validation/{group}.json"


def stage(settings: Settings, args: argparse.Namespace) -> int:
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    report = workload_for(args.group).validate(settings)
    path = report.to_json(settings.path(report_path(args.group)))
    # Failures go to stderr: that is what `dvc repro` shows when the stage stops.
    console = out if report.success else err
    style = None if report.success else "red"
    console.print(report.summary(), style=style, markup=False, soft_wrap=True)
    console.print(f"report: {path}", markup=False, soft_wrap=True)
    return 0 if report.success else 1


def _group_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group",
        choices=[w.name for w in all_workloads()],
        default="detection",
        help="which dataset to check",
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=False, add_arguments=_group_option)


if __name__ == "__main__":
    sys.exit(main())
