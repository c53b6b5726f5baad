"""DVC stage: check the detection dataset with Great Expectations before anything trains on it.

    python -m sightline.pipelines.validate [--params params.yaml]

Writes reports/validation/detection.json (under the project root) and exits 1, after printing
each failing expectation with example rows to stderr, when the data is not fit to train on.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from sightline.config import Settings
from sightline.stage import run_stage
from sightline.validate.detection import validate_detection_dataset

REPORT_PATH = "reports/validation/detection.json"


def stage(settings: Settings, args: argparse.Namespace) -> int:
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    data = settings.detection_data
    report = validate_detection_dataset(data, settings.project_root, list(data.splits))
    report_path = report.to_json(settings.path(REPORT_PATH))
    # Failures go to stderr: that is what `dvc repro` shows when the stage stops.
    console = out if report.success else err
    style = None if report.success else "red"
    console.print(report.summary(), style=style, markup=False, soft_wrap=True)
    console.print(f"report: {report_path}", markup=False, soft_wrap=True)
    return 0 if report.success else 1


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=False)


if __name__ == "__main__":
    sys.exit(main())
