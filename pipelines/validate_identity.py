"""DVC stage `validate_identity`: check the identity dataset with Great Expectations before any
embedder trains on it.

    python -m sightline.pipelines.validate_identity [--params params.yaml]

Writes reports/validation/identity.json (under the project root) and exits 1, after printing
each failing expectation with example rows to stderr, when the data is not fit to train on.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from sightline.config import Settings
from sightline.stage import run_stage
from sightline.validate.identity import validate_identity_dataset

REPORT_PATH = "reports/validation/identity.json"


def stage(settings: Settings, args: argparse.Namespace) -> int:
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    # Unseen people are enrolled with up to max(enroll_k) templates and queried once more.
    min_unseen = max(settings.identification.enroll_k) + 1
    report = validate_identity_dataset(settings.identity_data, settings.project_root, min_unseen)
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
