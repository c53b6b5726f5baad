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
from collections.abc import Callable

from rich.console import Console

from sightline.config import Settings
from sightline.stage import run_stage
from sightline.validate.report import ValidationReport


def _detection(settings: Settings) -> ValidationReport:
    from sightline.validate.detection import validate_detection_dataset

    data = settings.detection_data
    return validate_detection_dataset(data, settings.project_root, list(data.splits))


def _otdr(settings: Settings) -> ValidationReport:
    from sightline.validate.otdr import validate_otdr_dataset

    data = settings.otdr_data
    return validate_otdr_dataset(data, settings.project_root, list(data.splits))


def _identification(settings: Settings) -> ValidationReport:
    from sightline.validate.identity import validate_identity_dataset

    # Unseen people are enrolled with up to max(enroll_k) templates and queried once more.
    min_unseen = max(settings.identification.enroll_k) + 1
    return validate_identity_dataset(settings.identity_data, settings.project_root, min_unseen)


VALIDATORS: dict[str, Callable[[Settings], ValidationReport]] = {
    "detection": _detection,
    "otdr": _otdr,
    "identification": _identification,
}


def report_path(group: str) -> str:
    return f"reports/validation/{group}.json"


def stage(settings: Settings, args: argparse.Namespace) -> int:
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    report = VALIDATORS[args.group](settings)
    path = report.to_json(settings.path(report_path(args.group)))
    # Failures go to stderr: that is what `dvc repro` shows when the stage stops.
    console = out if report.success else err
    style = None if report.success else "red"
    console.print(report.summary(), style=style, markup=False, soft_wrap=True)
    console.print(f"report: {path}", markup=False, soft_wrap=True)
    return 0 if report.success else 1


def _group_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group", choices=sorted(VALIDATORS), default="detection", help="which dataset to check"
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=False, add_arguments=_group_option)


if __name__ == "__main__":
    sys.exit(main())
