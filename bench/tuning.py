"""docs/benchmarks/tuning.md from the searches' reports (reports/tune/<family>.json).

    python bench/tuning.py [--params params.yaml]
    sightline bench tuning

Each search evaluates the family's current params as one of its trials, on the same epoch
budget, so "gain" compares like with like: best trial minus the baseline trial.
"""

from __future__ import annotations

import argparse
import json
import sys

from sightline.config import load_settings

REPORT = "docs/benchmarks/tuning.md"
# The params.yaml keys this report reads (the search sizes it describes); dvc.yaml lists
# exactly these (a literal: the test reads it without running the script's imports).
STAGE_PARAMS = (
    "tune.num_samples",
    "tune.reduction_factor",
    "tune.max_concurrent_trials",
    "tune.workers_per_trial",
)


def _config(config: dict[str, str]) -> str:
    """Searched values as set (floats to 3 significant digits, lists as written)."""

    def short(value: str) -> str:
        try:
            return f"{float(value):.3g}"
        except ValueError:
            return value

    return ", ".join(f"{key}={short(value)}" for key, value in config.items())


def _score(trial: dict | None) -> str:
    return "-" if not trial or trial.get("metric") is None else f"{trial['metric']:.4f}"


def row(report: dict) -> str:
    trials = report["trials"]
    best, baseline = report.get("best"), report.get("baseline")
    gain = (
        f"{best['metric'] - baseline['metric']:+.4f}"
        if best and baseline and best.get("metric") is not None
        else "-"
    )
    counts = {s: sum(t["status"] == s for t in trials) for s in ("FINISHED", "KILLED", "FAILED")}
    promotion = report.get("promotion") or {}
    verdict = (
        "champion" if promotion.get("promoted") else ("kept" if promotion else "not registered")
    )
    cells = [
        report["family"],
        report["metric"],
        _score(baseline),
        _score(best),
        gain,
        f"{len(trials)} ({counts['FINISHED']} done, {counts['KILLED']} stopped early, "
        f"{counts['FAILED']} failed)",
        f"{report['max_epochs']} ({report['grace_period']})",
        f"{report['wall_time_s'] / 60:.1f}",
        f"`{_config(best['config'])}`" if best else "-",
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default=None)
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    reports = sorted(settings.path("reports/tune").glob("*.json"))
    if not reports:
        print("no search reports under reports/tune; run `make tune` first", file=sys.stderr)
        return 2
    header = ["family", "metric", "baseline", "best", "gain", "trials", "epochs (grace)",
              "wall min", "best config", "registry"]  # fmt: skip
    cfg = settings.tune
    lines = [
        "# Ray Tune searches",
        "",
        f"Demo profile, 2 CPU cores: {cfg.num_samples} trials per search (one of them the family's",
        "current params: the baseline), each for the search's epochs, stopped early by ASHA after",
        f"the grace epochs (reduction {cfg.reduction_factor:g}), {cfg.max_concurrent_trials} "
        f"trials at a time with {cfg.workers_per_trial} Ray Train worker(s) each. Scores are the",
        "task's primary metric on the validation data after the last epoch. `registry`: whether",
        "the best trial became `champion` (only if it beats the champion on the same data, here",
        "trained with the full demo epochs) or the champion was kept.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(row(json.loads(path.read_text())) for path in reports),
        "",
        "Short searches on a small budget: a gain here says the search found a better setting",
        "for this budget, not that it would hold for a full training run.",
    ]
    out = settings.path(REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
