"""Benchmark: how the trained models hold up off the synthetic distribution they learnt. Each
task group's trained families scored on their in-distribution test data and on shifted copies
of it: detection and identification images with noise, darker lighting or a lower resolution,
detection scenes of another size drawn by the synthesizer, OTDR traces longer than the demo's
(real instruments record 8k-64k samples) and at a lower SNR. Writes
docs/benchmarks/robustness.md and an MLflow run.

    python bench/robustness.py [--params params.yaml]
    sightline bench robustness

Shifted images keep their labels (the same boxes, the same people): only what the camera saw
changes. rcnn and fast_rcnn get selective search run again on the shifted images, as a user's
new images would. Shifted scenes and traces are drawn by the project's synthesizer
(`synth.detection`, `synth.otdr`) with one setting changed and another seed. Models are those
under artifacts/models (`dvc repro` makes them); nothing is trained here, and every number is
measured on test data only.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from common import arguments, publish, replace_section
from PIL import Image
from torch import nn

from sightline.artifacts import ModelRecord, load_trained, model_dir, proposals_path
from sightline.config import Settings, load_settings
from sightline.data.detection import DetectionSplit, load_task_split
from sightline.data.identity import IMAGE_EXTENSIONS
from sightline.data.proposals import compute_split_proposals
from sightline.data.sources import DetectionData
from sightline.data.synth.detection import generate as generate_detection
from sightline.data.synth.otdr import simulate_trace
from sightline.evaluate.otdr import evaluate_traces
from sightline.models import FAMILIES
from sightline.track.runs import use_tracking
from sightline.workloads import workload_for
from sightline.workloads.otdr import load_traces

SPLIT = "test"
SHIFT_SEED = 1_000_003  # another stream than the project's own test data
OTDR_SHIFTED = 30  # traces per shifted OTDR set
ImageShift = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def noisy(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: Gaussian, sigma 0.1 of the full range."""
    return np.clip(pixels + rng.normal(0.0, 0.1, pixels.shape), 0.0, 1.0)


def dark(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dim lighting: gamma 2.2, then half of the light."""
    del rng
    return 0.5 * pixels**2.2


def low_resolution(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera with half the resolution: down to half each side (area average), then back up
    (bilinear) to the same size, so the labels still hold."""
    del rng
    height, width = pixels.shape[:2]
    small = cv2.resize(
        pixels, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


IMAGE_SHIFTS: dict[str, ImageShift] = {
    "noise (sigma 0.1)": noisy,
    "dark (gamma 2.2, x0.5)": dark,
    "half resolution": low_resolution,
}
# Detection scenes drawn again at another image size: the objects keep their pixel sizes
# (synth's small / medium / large areas), the scene around them is larger.
SCENE_SHIFTS: dict[str, dict[str, object]] = {
    "256 px scenes (objects as before)": {"image_size": 256}
}


def shifted_image(source: Path, target: Path, shift: ImageShift, rng: np.random.Generator) -> None:
    """`source` with `shift` applied to its pixels (in [0, 1]), saved losslessly as `target`
    (grey stays grey)."""
    with Image.open(source) as image:
        mode = "L" if image.mode in ("L", "I;16", "I") else "RGB"
        pixels = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
    out = np.round(255.0 * shift(pixels, rng)).astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out, mode=mode).save(target.with_suffix(".png"))


@dataclass
class Row:
    group: str
    family: str
    shift: str
    metrics: dict[str, float]


def on_split(settings: Settings, split: str) -> Settings:
    """`settings` with evaluation on `split`."""
    return settings.model_copy(
        update={"evaluate": settings.evaluate.model_copy(update={"split": split})}
    )


def on_test_split(settings: Settings) -> Settings:
    """`settings` with evaluation on the test split (this benchmark never reads another)."""
    return on_split(settings, SPLIT)


def trained(settings: Settings, group: str) -> list[str]:
    families = workload_for(group).families(settings)
    return [f for f in families if (model_dir(settings, f) / "model.json").is_file()]


# -- detection ---------------------------------------------------------------------------------


def shifted_detection_project(
    settings: Settings, split: DetectionSplit, shift: ImageShift, root: Path
) -> Settings:
    """A scratch project at `root` whose test split is `split` with `shift` applied to every
    image (COCO layout, PNG files)."""
    data_root = root / "data"
    rng = np.random.default_rng(SHIFT_SEED)
    coco = json.loads(json.dumps(split.coco.dataset))
    for record in coco["images"]:
        source = split.image_path(record["id"])
        record["file_name"] = str(Path(record["file_name"]).with_suffix(".png"))
        shifted_image(source, data_root / "images" / record["file_name"], shift, rng)
    (data_root / "test.json").write_text(json.dumps(coco))
    return scratch_detection_project(settings, root, "test.json")


def resynthesised_detection_project(
    settings: Settings, update: dict[str, object], root: Path
) -> Settings:
    """A scratch project at `root` whose test split is drawn by the synthesizer with `update`
    applied to `synth.detection` (as many test images as the project's, another seed)."""
    base = settings.synth.detection
    cfg = base.model_copy(update={**update, "seed": SHIFT_SEED, "train": 0, "val": 0})
    generate_detection(root / "data", cfg)
    return scratch_detection_project(settings, root, "annotations/test.json")


def scratch_detection_project(settings: Settings, root: Path, test_json: str) -> Settings:
    """Settings for the project at `root` whose test split is `root/data/<test_json>` (image
    files under root/data/images), with selective search run on it."""
    data = DetectionData(
        format="coco", root=root / "data", images="images", splits={SPLIT: test_json}
    )
    scratch = on_test_split(settings).model_copy(
        update={"project_root": root, "detection_data": data}
    )
    shifted = load_task_split(data, SPLIT, root, "detect")
    cfg = settings.proposals
    compute_split_proposals(
        shifted,
        proposals_path(scratch, SPLIT),
        mode=cfg.mode,
        max_proposals=cfg.max_proposals,
        min_size=cfg.min_size,
        max_side=cfg.max_side,
        workers=cfg.workers,
    )
    return scratch


def scored_under_shifts(
    group_name: str,
    models: dict[str, tuple[nn.Module, ModelRecord]],
    base: Settings,
    projects: dict[str, Callable[[Path], Settings]],
) -> list[Row]:
    """Each model evaluated by its group on `base`, then on each shifted project, which
    `projects[name](tmp)` writes into a temporary folder."""
    group = workload_for(group_name)

    def evaluated(settings: Settings, shift: str) -> list[Row]:
        return [
            Row(
                group_name,
                family,
                shift,
                group.evaluate(settings, m, r, with_figures=False).metrics,
            )
            for family, (m, r) in models.items()
        ]

    rows = evaluated(base, "in distribution")
    for name, project in projects.items():
        with tempfile.TemporaryDirectory() as tmp:
            rows += evaluated(project(Path(tmp)), name)
    return rows


def detection_rows(settings: Settings) -> list[Row]:
    families = [f for f in trained(settings, "detection") if FAMILIES[f].task != "keypoints"]
    models = {f: load_trained(model_dir(settings, f)) for f in families}
    on_test = on_test_split(settings)
    split = load_task_split(settings.detection_data, SPLIT, settings.project_root, "detect")
    projects = {
        name: partial(shifted_detection_project, settings, split, shift)
        for name, shift in IMAGE_SHIFTS.items()
    } | {
        name: partial(resynthesised_detection_project, settings, update)
        for name, update in SCENE_SHIFTS.items()
    }
    return scored_under_shifts("detection", models, on_test, projects)


# -- identification ----------------------------------------------------------------------------


def shifted_identity_folder(source: Path, target: Path, shift: ImageShift) -> None:
    """Every person's images under `source` with `shift` applied, same folders and names."""
    rng = np.random.default_rng(SHIFT_SEED)
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            shifted_image(path, target / path.relative_to(source), shift, rng)


def identification_rows(settings: Settings) -> list[Row]:
    models = {f: load_trained(model_dir(settings, f)) for f in trained(settings, "identification")}
    source = settings.path(settings.identity_data.root)

    def shifted(shift: ImageShift, tmp: Path) -> Settings:
        shifted_identity_folder(source, tmp, shift)
        data = settings.identity_data.model_copy(update={"root": tmp})
        return settings.model_copy(update={"identity_data": data})

    projects = {name: partial(shifted, shift) for name, shift in IMAGE_SHIFTS.items()}
    return scored_under_shifts("identification", models, settings, projects)


# -- OTDR ----------------------------------------------------------------------------------------

OTDR_SHIFTS: dict[str, dict[str, object]] = {
    "8k-16k samples": {"num_samples": (8192, 16384)},
    "32k-64k samples": {"num_samples": (32768, 65536)},
    "low SNR (8-14 dB)": {"snr_db": (8.0, 14.0), "min_end_margin_db": 2.0},
}


def otdr_rows(settings: Settings) -> list[Row]:
    threshold = settings.serve.default_score_threshold
    models = {f: load_trained(model_dir(settings, f)) for f in trained(settings, "otdr")}
    sets = {"in distribution": load_traces(settings, SPLIT)}
    for name, update in OTDR_SHIFTS.items():
        cfg = settings.synth.otdr.model_copy(update=update)
        sets[name] = [
            simulate_trace(np.random.default_rng([SHIFT_SEED, i]), cfg, f"shift_{i:05d}")
            for i in range(OTDR_SHIFTED)
        ]
    rows = []
    for name, traces in sets.items():
        for family, (model, _) in models.items():
            result = evaluate_traces(model, traces, score_threshold=threshold, with_figures=False)
            rows.append(Row("otdr", family, name, result.metrics))
    return rows


# -- the report --------------------------------------------------------------------------------

HEADLINE = {
    "detection": ("map", "map_50"),
    "identification": ("top1", "dir_at_far_1e-2"),
    "otdr": ("map_50", "loc_err_m_median"),
}


def metric_slug(text: str) -> str:
    """`text` as MLflow allows in a metric name (letters, digits, _ - . / and spaces: none)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _cell(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def markdown(rows: list[Row], load_before: float) -> str:
    lines = [
        "Generated by `sightline bench robustness` (`python bench/robustness.py`); one run, test "
        f"data only, the models under artifacts/models; load average at the start "
        f"{load_before:.1f} on {os.cpu_count()} cores. Shifted images keep their labels; "
        "shifted scenes and traces are drawn by the project's synthesizer with the setting "
        f"named changed (as many scenes as the test split, {OTDR_SHIFTED} traces each). Each "
        "cell: the metric, and in brackets its change from the in-distribution test data.",
    ]
    for group, names in HEADLINE.items():
        mine = [r for r in rows if r.group == group]
        if not mine:
            continue
        shifts = list(dict.fromkeys(r.shift for r in mine))
        lines += ["", f"## {group}", "", "| family | " + " | ".join(shifts) + " |"]
        lines.append("|---|" + "---|" * len(shifts))
        for family in dict.fromkeys(r.family for r in mine):
            base = next(r for r in mine if r.family == family and r.shift == "in distribution")
            cells = []
            for shift in shifts:
                row = next((r for r in mine if r.family == family and r.shift == shift), None)
                parts = []
                for name in names:
                    value = row.metrics.get(name) if row else None
                    text = f"{name} {_cell(value)}"
                    if row is not base and value is not None and math.isfinite(value):
                        reference = base.metrics.get(name, math.nan)
                        if math.isfinite(reference):
                            text += f" ({value - reference:+.3f})"
                    parts.append(text)
                cells.append("<br>".join(parts))
            lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = detection_rows(settings) + identification_rows(settings) + otdr_rows(settings)
    if not rows:
        print("no trained model under artifacts/models; run `dvc repro` first", file=sys.stderr)
        return 2
    report = markdown(rows, load_before)
    print(report)
    use_tracking(settings.tracking_uri)
    metrics = {
        f"{r.group}.{r.family}.{metric_slug(r.shift)}.{name}": r.metrics[name]
        for r in rows
        for name in HEADLINE[r.group]
        if name in r.metrics
    }
    # The page keeps what follows the generated section (the reading of a run) across runs.
    page = replace_section(settings.path("docs/benchmarks/robustness.md"), "robustness", report)
    publish(settings, name="robustness", group="detection", report=page, metrics=metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
