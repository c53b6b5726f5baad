"""Benchmark: detection accuracy before and after the training recipe's data augmentation.
Each family's model trained by `dvc repro` (params.yaml as it is, `train.augment` on) against
the same family trained again with `train.augment: null` and nothing else changed, both scored
on the test split and on the robustness benchmark's shifted copies of it (noise, dim light,
half resolution: what augmentation is for). Writes docs/benchmarks/augmentation.md and an
MLflow run.

    python bench/augmentation.py [--params params.yaml] [--families yolo ssd faster_rcnn]
                                 [--seeds 0 1 2]
    sightline bench augmentation

With `--seeds`, each recipe is trained once per training seed (the data stays the project's)
and the report gives the mean: one seed's difference can be its noise. `--no-shifts` scores the
test split alone (the slow families' shifted copies cost minutes of scoring), and `--section`
names the page's section the table goes to, so that a run over other families does not replace
the default families' table:

    python bench/augmentation.py --families rcnn fast_rcnn --seeds 1 2 3 --no-shifts
                                 --section other_families

    python bench/augmentation.py --data ../shared/data/fruits-nuts --families yolo
                                 [--folds 1 2 3] [--epochs 200] [--fractions 0.6 0.2 0.2]

With `--data`, the case augmentation is for: a small dataset of the user's, in any layout
`detection_data.format: auto` reads. Each fold draws its own splits (`split_seed` = the fold,
`--fractions` of the images), both recipes train `--epochs` epochs on its train split (the last
kept) and are scored on its test split; the report (section `own_data`) gives each fold and
the mean. Families that need precomputed proposals (rcnn, fast_rcnn) are not run this way.

The "without" models are trained through the platform's own train stage (Ray Train, MLflow
runs in the project's store, so both recipes can be compared in the MLflow UI) in a scratch
project that reads the project's data; the project's own models and metrics are not touched.
Run it after `dvc repro` (which makes the "with" models under artifacts/models).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from common import arguments, link_proposals, publish, replace_section
from robustness import (
    IMAGE_SHIFTS,
    SPLIT,
    metric_slug,
    on_split,
    on_test_split,
    shifted_detection_project,
)
from torch import nn

from sightline.artifacts import ModelRecord, load_trained, model_dir
from sightline.config import Settings, load_settings
from sightline.data.detection import load_task_split
from sightline.data.layouts import detect_format
from sightline.workloads import workload_for

GROUP = "detection"
METRICS = ("map", "map_50", "map_small")
OWN_DATA_METRICS = ("map", "map_50", "map_75")  # a user's data may have no small objects
DEFAULT_FAMILIES = ("yolo", "ssd", "faster_rcnn")


def scratch_project(
    settings: Settings, root: Path, *, augment: bool = False, seed: int | None = None
) -> Path:
    """A project at `root` with the project's params, `train.augment: null` unless `augment`,
    and training seed `seed` (the project's if None), reading the project's data folder and
    selective-search proposals; returns its params file."""
    raw = yaml.safe_load((settings.project_root / "params.yaml").read_text())
    if not augment:
        raw.setdefault("train", {})["augment"] = None
    if seed is not None:
        raw["seed"] = seed
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").symlink_to(settings.path("data").resolve(), target_is_directory=True)
    link_proposals(settings, root)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return params


@dataclass(frozen=True)
class OwnData:
    """A user's detection dataset for `--data`: read as `format: auto` reads it, split afresh
    for every fold, trained `epochs` epochs."""

    root: Path
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    epochs: int = 200


def own_data_project(
    settings: Settings, root: Path, data: OwnData, fold: int, *, augment: bool
) -> Path:
    """A scratch project (as `scratch_project`) that trains on `data`, its splits drawn with
    split_seed `fold`, every detection family `data.epochs` epochs keeping the last."""
    params = scratch_project(settings, root, augment=augment)
    raw = yaml.safe_load(params.read_text())
    raw["detection_data"] = {
        "format": "auto",
        "root": str(data.root.resolve()),
        "split_fractions": dict(zip(("train", "val", "test"), data.fractions, strict=True)),
        "split_seed": fold,
    }
    detection = raw.setdefault(GROUP, {})
    detection["train"] = {**(detection.get("train") or {}), "epochs": data.epochs,
                          "keep_epoch": "last"}  # fmt: skip
    detection["family_train"] = {}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return params


def train_in(settings: Settings, family: str, params: Path) -> None:
    """The platform's train stage for `family` in a scratch project (runs in the project's
    MLflow store)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    command = [sys.executable, "-m", "sightline.pipelines.train", "--family", family,
               "--params", str(params)]  # fmt: skip
    subprocess.run(command, check=True, env=env, cwd=params.parent)


def scored(settings: Settings, trained: tuple[nn.Module, ModelRecord]) -> dict[str, float]:
    model, record = trained
    return workload_for(GROUP).evaluate(settings, model, record, with_figures=False).metrics


Rows = dict[tuple[str, str], dict[str, dict[str, float]]]  # (family, test set) -> arm -> metrics


def table(rows: Rows, column: str, metrics: tuple[str, ...] = METRICS) -> list[str]:
    """Markdown table rows: family, `column` (the test set), then without -> with per metric."""
    header = " | ".join(f"{m} without -> with" for m in metrics)
    lines = [f"| family | {column} | {header} |", "|---|---|" + "---|" * len(metrics)]
    for (family, test_set), arms in rows.items():
        cells = []
        for name in metrics:
            without, with_ = arms["without"].get(name, math.nan), arms["with"].get(name, math.nan)
            cells.append(f"{without:.3f} -> {with_:.3f} ({with_ - without:+.3f})")
        lines.append(f"| {family} | {test_set} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: Rows, augment: dict | None, context: dict) -> str:
    lines = [
        "Generated by `sightline bench augmentation` (`python bench/augmentation.py`); one run "
        f"on {context['when']}, {os.cpu_count()} CPU cores, {context['minutes']:.0f} min. "
        f"Both models of a family have the same params except `train.augment` (with: "
        f"`{augment}`; without: null), the same data and seed, and are scored on the "
        "validation split (where a recipe is chosen: a family's default is decided there, "
        f'never on the test), on the {SPLIT} split ({context["images"]} images, "in '
        'distribution")'
        + (
            " and on its shifted copies of `sightline bench robustness` (same labels)"
            if context["shifts"]
            else ""
        )
        + f"; mean over the training seeds {context['seeds']}. In brackets: with minus "
        "without.",
        "",
        *table(rows, "test set"),
    ]
    return "\n".join(lines) + "\n"


def own_data_markdown(rows: Rows, augment: dict | None, data: OwnData, context: dict) -> str:
    lines = [
        f"Generated by `sightline bench augmentation {context['arguments']}`; one run on "
        f"{context['when']}, {os.cpu_count()} CPU cores, {context['minutes']:.0f} min. "
        f"Dataset: {context['data']} ({context['images']} images, "
        f"read with `format: auto` as {context['layout']}); each fold draws its splits with "
        f"`split_seed` = the fold and fractions train / val / test {list(data.fractions)} "
        f"(images per split: {context['split_images']}). Both models of a fold train "
        f"{data.epochs} epochs from scratch on its train split, the last kept, with the same "
        f"params except `train.augment` (with: `{augment}`; without: null), and are scored on "
        "its test split. In brackets: with minus without.",
        "",
        *table(rows, "fold", OWN_DATA_METRICS),
    ]
    return "\n".join(lines) + "\n"


def arms_for_seed(
    settings: Settings, family: str, seed: int, root: Path
) -> dict[str, tuple[nn.Module, ModelRecord]]:
    """Both recipes' models of `family` at training seed `seed`: at the project's own seed the
    "with" model is the one `dvc repro` trained; at another both are trained here."""
    arms = {}
    for arm, augment in (("with", True), ("without", False)):
        if augment and seed == settings.seed:
            arms[arm] = load_trained(model_dir(settings, family))
            continue
        params = root / f"{arm}-seed{seed}" / "params.yaml"
        if not params.exists():
            scratch_project(settings, params.parent, augment=augment, seed=seed)
        train_in(settings, family, params)
        arms[arm] = load_trained(model_dir(load_settings(params), family))
    return arms


def own_data_rows(
    settings: Settings, data: OwnData, families: list[str], folds: list[int], root: Path
) -> tuple[Rows, dict[int, dict[str, int]]]:
    """Each family's two recipes trained and scored on each fold of `data` (rows per fold, then
    their mean), and the images of each fold's splits."""
    rows: Rows = {}
    sizes: dict[int, dict[str, int]] = {}
    for family in families:
        for fold in folds:
            for arm, augment in (("with", True), ("without", False)):
                project = root / f"{family}-{arm}-fold{fold}"
                params = own_data_project(settings, project, data, fold, augment=augment)
                train_in(settings, family, params)
                scratch = on_test_split(load_settings(params))
                metrics = scored(scratch, load_trained(model_dir(scratch, family)))
                rows.setdefault((family, f"fold {fold}"), {})[arm] = metrics
                sizes[fold] = {
                    name: len(load_task_split(scratch.detection_data, name, project,
                                              "detect").coco.dataset["images"])
                    for name in ("train", "val", "test")
                }  # fmt: skip
            print(family, fold, rows[family, f"fold {fold}"], flush=True)
        rows[family, "mean"] = {
            arm: mean_metrics([rows[family, f"fold {fold}"][arm] for fold in folds])
            for arm in ("with", "without")
        }
    return rows, sizes


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.fmean(run[name] for run in runs) for name in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES))
    parser.add_argument("--shifts", action=argparse.BooleanOptionalAction, default=True,
                        help="also score the shifted copies of the test split")  # fmt: skip
    parser.add_argument("--section", default="augmentation",
                        help="the section of docs/benchmarks/augmentation.md to write")  # fmt: skip
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None,
        help="training seeds (default: the project's); the data stays the project's",
    )  # fmt: skip
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a detection dataset of your own (any `format: auto` layout)",
    )
    parser.add_argument(
        "--folds",
        nargs="+",
        type=int,
        default=[1, 2, 3],
        help="with --data: the split seeds, one fold each",
    )
    parser.add_argument("--epochs", type=int, default=OwnData.epochs)
    parser.add_argument("--fractions", nargs=3, type=float, default=list(OwnData.fractions),
                        metavar=("TRAIN", "VAL", "TEST"))  # fmt: skip
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    if args.data is not None:
        data = OwnData(args.data, tuple(args.fractions), args.epochs)
        command = " ".join(sys.argv[1:] if argv is None else argv)
        return own_data_main(settings, data, args.families, args.folds, command)
    seeds = args.seeds or [settings.seed]
    on_test = on_test_split(settings)
    missing = [f for f in args.families if not (model_dir(settings, f) / "model.json").is_file()]
    if settings.seed in seeds and missing:
        print(f"no trained model for {missing} under artifacts/models; run `dvc repro` first")
        return 2
    started = time.monotonic()
    torch.set_num_threads(1)
    per_seed: dict[tuple[str, str], dict[str, list[dict[str, float]]]] = {}
    split = load_task_split(on_test.detection_data, SPLIT, settings.project_root, "detect")
    with tempfile.TemporaryDirectory(prefix="bench-augmentation-") as tmp:
        shifts = IMAGE_SHIFTS.items() if args.shifts else ()
        test_sets = {"validation": on_split(settings, "val"), "in distribution": on_test} | {
            name: shifted_detection_project(settings, split, shift, Path(tmp) / metric_slug(name))
            for name, shift in shifts
        }
        for family in args.families:
            for seed in seeds:
                arms = arms_for_seed(settings, family, seed, Path(tmp))
                for test_set, evaluated_on in test_sets.items():
                    for arm, trained in arms.items():
                        runs = per_seed.setdefault((family, test_set), {}).setdefault(arm, [])
                        runs.append(scored(evaluated_on, trained))
                    print(family, seed, test_set, per_seed[family, test_set], flush=True)
    rows: Rows = {
        key: {arm: mean_metrics(runs) for arm, runs in arms.items()}
        for key, arms in per_seed.items()
    }
    augment = settings.train_for(GROUP, args.families[0]).augment
    context = {
        "when": time.strftime("%Y-%m-%d"),
        "minutes": (time.monotonic() - started) / 60,
        "images": len(split.coco.dataset["images"]),
        "seeds": seeds,
        "shifts": args.shifts,
    }
    text = markdown(rows, augment.model_dump() if augment else None, context)
    prefix = "" if args.section == "augmentation" else f"{args.section}."
    publish_section(settings, args.section, text, rows, METRICS, prefix=prefix)
    return 0


def publish_section(
    settings: Settings, section: str, text: str, rows: Rows, names: Iterable[str], prefix: str
) -> None:
    """Prints `text`, puts it in its `section` of docs/benchmarks/augmentation.md and logs the
    page with the `names` metrics of `rows`, as <prefix><family>.<test set or fold>.<arm>.<name>."""
    print(text)
    metrics = {
        f"{prefix}{family}.{metric_slug(key)}.{arm}.{name}": value
        for (family, key), arms in rows.items()
        for arm, values in arms.items()
        for name, value in values.items()
        if name in names
    }
    page = replace_section(settings.path("docs/benchmarks/augmentation.md"), section, text)
    publish(settings, name="augmentation", group=GROUP, report=page, metrics=metrics)


def own_data_main(
    settings: Settings, data: OwnData, families: list[str], folds: list[int], arguments: str
) -> int:
    started = time.monotonic()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-augmentation-own-") as tmp:
        rows, sizes = own_data_rows(settings, data, families, folds, Path(tmp))
    augment = settings.train_for(GROUP, families[0]).augment
    context = {
        "when": time.strftime("%Y-%m-%d"),
        "minutes": (time.monotonic() - started) / 60,
        "data": str(data.root),
        "arguments": arguments,
        "layout": detect_format(data.root),
        "images": sum(sizes[folds[0]].values()),
        "split_images": "; ".join(
            f"fold {fold}: " + " / ".join(str(n) for n in split.values())
            for fold, split in sizes.items()
        ),
    }
    text = own_data_markdown(rows, augment.model_dump() if augment else None, data, context)
    publish_section(settings, "own_data", text, rows, OWN_DATA_METRICS, prefix="own_data.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
