"""DVC stage: check the detection dataset with Great Expectations before anything trains on it.

    python -m sightline.pipelines.validate [--params params.yaml]

Writes reports/validation/detection.json (under the project root) and exits 1, after printing
each failing expectation with example rows to stderr, when the data is not fit to train on.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape

from sightline.config import SettingsError, load_settings
from sightline.validate.detection import validate_detection_dataset

REPORT_PATH = "reports/validation/detection.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sightline.pipelines.validate", description=__doc__)
    parser.add_argument("--params", default=None, help="params.yaml (default: ./params.yaml)")
    args = parser.parse_args(argv)
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    try:
        settings = load_settings(args.params)
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    data = settings.detection_data
    report = validate_detection_dataset(data, settings.project_root, list(data.splits))
    report_path = report.to_json(settings.path(REPORT_PATH))
    # Failures go to stderr: that is what `dvc repro` shows when the stage stops.
    console = out if report.success else err
    style = None if report.success else "red"
    console.print(report.summary(), style=style, markup=False, soft_wrap=True)
    console.print(f"report: {report_path}", markup=False, soft_wrap=True)
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
