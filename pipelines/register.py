"""DVC stage `register@<family>`: register the model; `champion` moves only if it is better.

python -m sightline.pipelines.register --family faster_rcnn [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys

import mlflow
from rich.console import Console

from sightline.artifacts import (
    load_record,
    metrics_path,
    model_dir,
    registry_report_path,
    write_json,
)
from sightline.config import Settings
from sightline.stage import run_stage
from sightline.track.registry import register
from sightline.track.runs import resume_run, use_tracking
from sightline.workloads import workload_of_family

console = Console(stderr=True)


def stage(settings: Settings, args: argparse.Namespace) -> int:
    record = load_record(model_dir(settings, args.family))
    metrics = json.loads(metrics_path(settings, args.family).read_text())
    workload = workload_of_family(args.family)
    use_tracking(settings.tracking_uri)
    promotion = register(
        record.model_uri,
        workload=workload,
        family=args.family,
        metrics=workload.registry_metrics(metrics),
        tags={**record.tags, "run_id": record.run_id},
        eval_scope=workload.eval_scope(settings, record),
    )
    with resume_run(record.run_id):
        mlflow.set_tags(
            {
                "registered_model": promotion.registered_model,
                "registered_version": promotion.version,
                "champion": str(promotion.promoted).lower(),
            }
        )
    write_json(registry_report_path(settings, workload.name, args.family), promotion.__dict__)
    console.print(promotion.describe(), soft_wrap=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, __doc__, argv, per_family=True)


if __name__ == "__main__":
    sys.exit(main())
