"""Benchmark: identification on a small face set (40 people x 10 grey images, the size of a
small real set), each family trained on it from scratch and, for the learned families, started
from the same family pretrained in grey on the project's identity set (other people: another
synthesizer seed). The family a team would ship is picked on the validation people, never the
test people. Writes docs/benchmarks/small_faces.md and an MLflow run.

    python bench/small_faces.py [--params params.yaml] [--seeds 1 2 3]
    sightline bench small_faces

Every model is trained and evaluated by the platform's own stages (Ray Train's local mode,
MLflow runs in the project's store) in scratch projects; the project's models are untouched.
Fine-tuning uses a tenth of the group's learning rate (the usual recipe: the pretrained
features are moved, not relearned). Triplet mines semi-hard negatives in both arms: with
batch-hard mining the grey pretraining collapsed to one embedding for every face (the loss
stuck at the margin; top1 0.03 on the project's unseen people).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import arguments, publish, replace_section

from sightline.config import Settings, deep_merge, load_settings

GROUP = "identification"
SMALL_SET = {"identities": 40, "images_per_identity": 10, "image_size": 64}
GREY = {"identity_data": {"channels": 1}, "models": {"triplet": {"mining": "semi_hard"}}}
FINE_TUNE_LR_FACTOR = 0.1
BASELINE = "pixel_template"
METRICS = ("val_dir_at_far_1e-2", "val_top1", "top1", "dir_at_far_1e-2", "roc_auc")
SCRATCH, PRETRAINED, NOT_FINE_TUNED = "from scratch", "pretrained, fine-tuned", "pretrained only"


def project(settings: Settings, root: Path, overrides: dict[str, Any]) -> Path:
    """A scratch project at `root`: the project's params with `overrides`; returns params.yaml."""
    raw = yaml.safe_load((settings.project_root / "params.yaml").read_text())
    root.mkdir(parents=True, exist_ok=True)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(deep_merge(raw, overrides), sort_keys=False))
    return params


def stage(settings: Settings, params: Path, *args: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    command = [sys.executable, "-m", *args, "--params", str(params)]
    subprocess.run(command, check=True, env=env, cwd=params.parent, stdout=subprocess.DEVNULL)


def trained_and_evaluated(settings: Settings, params: Path, family: str) -> dict[str, float]:
    stage(settings, params, "sightline.pipelines.train", "--family", family)
    stage(settings, params, "sightline.pipelines.evaluate", "--family", family)
    return json.loads((params.parent / "metrics" / f"{family}.json").read_text())


def learned_families(settings: Settings) -> list[str]:
    return [f for f in settings.identification.families if f != BASELINE]


def pretrained_weights(settings: Settings, root: Path) -> dict[str, Path]:
    """Each learned family trained in grey on the project's identity set: its weights file."""
    data = str(settings.path(settings.identity_data.root).resolve())
    params = project(settings, root, deep_merge(GREY, {"identity_data": {"root": data}}))
    weights = {}
    for family in learned_families(settings):
        stage(settings, params, "sightline.pipelines.train", "--family", family)
        weights[family] = root / "artifacts" / "models" / family / "weights.safetensors"
    return weights


Scores = dict[tuple[str, str], list[dict[str, float]]]  # (family, arm) -> one dict per seed


def small_set_scores(settings: Settings, seed: int, weights: dict[str, Path], root: Path) -> Scores:
    small = deep_merge(GREY, {
        "synth": {"identity": {**SMALL_SET, "seed": seed}},
        "identity_data": {"root": "data/identity"},  # drawn inside the scratch project
    })  # fmt: skip
    scratch = project(settings, root / "scratch", small)
    stage(settings, scratch, "sightline.cli", "data", "synth", "--kind", "identity")
    scores: Scores = {}
    for family in settings.identification.families:
        scores[family, SCRATCH] = [trained_and_evaluated(settings, scratch, family)]
    lr = settings.train_for(GROUP, learned_families(settings)[0]).lr * FINE_TUNE_LR_FACTOR
    for family, path in weights.items():
        fine_tune = {"identification": {"train": {"lr": lr}},
                     "models": {family: {"weights": str(path)}}}  # fmt: skip
        params = project(settings, root / f"from-{family}", deep_merge(small, fine_tune))
        (params.parent / "data").symlink_to(scratch.parent / "data", target_is_directory=True)
        metrics = trained_and_evaluated(settings, params, family)
        scores[family, PRETRAINED] = [metrics]
        # evaluate's "untrained" baseline is the network as built: here, the pretrained one
        scores[family, NOT_FINE_TUNED] = [
            {name: metrics[f"untrained_{name}"] for name in ("top1", "dir_at_far_1e-2")}
        ]
    return scores


def _mean(values: list[float]) -> str:
    if not values:
        return "n/a"
    spread = f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{spread}"


def averaged(per_seed: list[dict[str, float]], name: str) -> float:
    values = [m[name] for m in per_seed if name in m]
    return statistics.fmean(values) if values else math.nan


def markdown(scores: Scores, seeds: list[int], context: dict[str, Any]) -> str:
    lines = [
        "Generated by `sightline bench small_faces` (`python bench/small_faces.py`); one run on "
        f"{context['when']}, {os.cpu_count()} CPU cores, {context['minutes']:.0f} min. "
        f"Small sets: {SMALL_SET['identities']} people x {SMALL_SET['images_per_identity']} "
        f"grey images, synthesizer seeds {seeds} (the project's faces use seed "
        f"{context['project_seed']}: no person is in both), split by people as params.yaml "
        f"says ({context['split']}). Pretraining: each family in grey on the project's "
        f"identity set ({context['pretrain_people']} people). Mean over the seeds, range in "
        "brackets; `val` columns are the validation people, the others the unseen people "
        "(enrolled) and impostors (never enrolled).",
        "",
        "| family | start | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for (family, arm), per_seed in scores.items():
        cells = [_mean([m[n] for m in per_seed if n in m]) for n in METRICS]
        lines.append(f"| {family} | {arm} | " + " | ".join(cells) + " |")
    shipped = [key for key in scores if key[1] != NOT_FINE_TUNED]
    best = max(shipped, key=lambda key: averaged(scores[key], "val_dir_at_far_1e-2"))
    baseline = scores[BASELINE, SCRATCH]
    lines += [
        "",
        f"Picked on the validation people: **{best[0]} ({best[1]})**, val dir_at_far_1e-2 "
        f"{averaged(scores[best], 'val_dir_at_far_1e-2'):.3f}; on the test people "
        f"dir_at_far_1e-2 {averaged(scores[best], 'dir_at_far_1e-2'):.3f} and top1 "
        f"{averaged(scores[best], 'top1'):.3f} against raw pixels' "
        f"{averaged(baseline, 'dir_at_far_1e-2'):.3f} and {averaged(baseline, 'top1'):.3f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    if settings.synth.identity.seed in args.seeds:
        print(f"seed {settings.synth.identity.seed} draws the project's own people; pick others")
        return 2
    started = time.monotonic()
    scores: Scores = {}
    with tempfile.TemporaryDirectory(prefix="bench-small-faces-") as tmp:
        weights = pretrained_weights(settings, Path(tmp) / "pretrain")
        for seed in args.seeds:
            for key, one in small_set_scores(
                settings, seed, weights, Path(tmp) / str(seed)
            ).items():
                scores.setdefault(key, []).extend(one)
                print(seed, key, one[0], flush=True)
    data = settings.identity_data
    context = {
        "when": time.strftime("%Y-%m-%d"),
        "minutes": (time.monotonic() - started) / 60,
        "project_seed": settings.synth.identity.seed,
        "pretrain_people": sum(p.is_dir() for p in settings.path(data.root).iterdir()),
        "split": f"val {data.val_fraction}, unseen {data.unseen_fraction}, impostor "
        f"{data.impostor_fraction}, the rest train",
    }
    text = markdown(scores, args.seeds, context)
    print(text)
    metrics = {
        f"{family}.{arm.replace(' ', '_').replace(',', '')}.{name}": averaged(per_seed, name)
        for (family, arm), per_seed in scores.items()
        for name in METRICS
    }
    page = replace_section(settings.path("docs/benchmarks/small_faces.md"), "small_faces", text)
    publish(settings, name="small_faces", group=GROUP, report=page, metrics=metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
