"""Benchmark: what the platform itself costs on top of the model. One epoch through our Ray
Train loop (1 worker) against a bare PyTorch loop on the same model, data, batch size and
threads; 2 workers (gloo DDP on CPU) against 1; where a bare epoch's time goes; and our
detection evaluation against a bare predict + COCOeval. Writes the "overhead" section of
docs/benchmarks/platform.md and an MLflow run.

    python bench/overhead.py [--params params.yaml] [--family yolo] [--images 96]
    sightline bench overhead

Everything runs in one process on a small synthetic set in a temporary project (its own
MLflow store and Ray Train storage), the variants interleaved (A, B, A, B) so machine load
hits them alike: the ratios are what to read, absolute seconds depend on the load (printed).
Ray is started locally by this script and shut down at its end.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from common import arguments, publish, replace_section
from mlflow import MlflowClient
from mlflow.entities import Metric
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sightline.cluster import ensure_ray
from sightline.config import Settings, load_settings
from sightline.data.detection import load_task_split, task_dataset
from sightline.data.synth.detection import generate
from sightline.data.synth.params import SynthDetection
from sightline.evaluate.coco import coco_records
from sightline.models import build_model
from sightline.train.family_run import training_record
from sightline.train.job import TrainJob, job_for
from sightline.train.launcher import fit
from sightline.train.loop import CHECKPOINT_FILE, _lr_lambda
from sightline.train.tasks import distributed_loader
from sightline.workloads import workload_for

REPEATS = 2
EVAL_REPEATS = 5  # an evaluation takes about a second: more repeats for a stable median
EVAL_BATCH = 4  # images per forward, as sightline.evaluate.coco.predict batches them
READING = """\
How to read it: the batches are what grows with the data, and there our loop matches the bare
loop within noise (no DDP wrapper at 1 worker; a progress event on a Ray queue at most every
0.25 s). The fixed cost per `fit()` is Ray Train's own: starting its controller and worker
group, the worker building dataset and model, persisting the epoch's checkpoint to the run's
storage, tearing the group down (the second table splits it; it swings with the machine's
load). Most of it is process start (the `start` row): every worker imports torch, Ray and the
model code, so the stack must be byte-compiled (`make install` does it; the previous run of
this bench, without .pyc files under PYTHONDONTWRITEBYTECODE and on a loaded machine, measured
101 s). It is paid once per training (once per step of a multi-step schedule), so it dominates
one-epoch trainings like these and Tune trials, and fades as epochs grow. Two workers are
bounded by the free cores (Ray's own processes share them) as well as by gloo's all-reduce on
CPU. The breakdown is the last bare repeat.
"""


@dataclass
class Timings:
    """Seconds per named part, summed over an epoch."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + seconds

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of `numerator` over median of `denominator` (NaN if either is empty or zero)."""
    if not numerator or not denominator or statistics.median(denominator) == 0:
        return float("nan")
    return statistics.median(numerator) / statistics.median(denominator)


def shares(timings: Timings) -> dict[str, float]:
    """Each part's fraction of the total (they sum to 1)."""
    total = timings.total
    return {name: seconds / total for name, seconds in timings.parts.items()} if total else {}


def timed(timings: Timings, name: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    timings.add(name, time.perf_counter() - started)
    return result


def bare_epoch(job: TrainJob, tracking_uri: str, run_id: str) -> tuple[float, Timings]:
    """One epoch of the loop's work in plain PyTorch (same dataset, sampler, model, optimiser,
    schedule, clipping and loss bookkeeping), each part timed; then the per-epoch extras our
    loop adds (a checkpoint file, an MLflow log_batch). Returns (images/s of the batches,
    timings)."""
    group = workload_for("detection")
    adapter = group.train_adapter(job.task)
    torch.set_num_threads(job.train.threads_per_worker)
    torch.manual_seed(job.seed)
    device = torch.device("cpu")
    dataset = adapter.dataset(job)
    loader = distributed_loader(job, dataset, adapter.collate, 0, 1)
    loader.sampler.set_epoch(0)
    model = build_model(job.family, job.num_classes, **job.model_params)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=job.train.lr, momentum=job.train.momentum, weight_decay=job.train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(job.train.warmup_iters, job.train.epochs * len(loader))
    )
    model.train()
    timings, sums, images = Timings(), {"loss": 0.0}, 0
    batches = iter(loader)
    while True:
        batch = timed(timings, "data", lambda: next(batches, None))
        if batch is None:
            break
        losses = timed(timings, "forward", lambda b=batch: adapter.losses(model, b, device))
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss in the bare loop: {losses}")

        def backward(loss: torch.Tensor = loss) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()

        def step() -> None:
            torch.nn.utils.clip_grad_norm_(params, job.train.grad_clip_norm)
            optimizer.step()
            scheduler.step()

        timed(timings, "backward", backward)
        timed(timings, "step", step)
        sums["loss"] += float(loss.detach())
        images += len(batch[0])
    batch_seconds = timings.total
    with tempfile.TemporaryDirectory() as tmp:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": 0,
        }
        timed(timings, "checkpoint", lambda: torch.save(state, Path(tmp) / CHECKPOINT_FILE))
    metrics = [Metric("loss", sums["loss"], int(time.time() * 1000), 0)]
    client = MlflowClient(tracking_uri)
    timed(timings, "mlflow", lambda: client.log_batch(run_id, metrics=metrics))
    return images / batch_seconds, timings


@dataclass
class RayEpoch:
    wall_s: float  # fit() from call to return: Ray Train start, the epoch, report, shutdown
    images_per_s: float  # the loop's own train_images_per_s (its batches only, all workers)
    model: torch.nn.Module
    parts: dict[str, float]  # where the wall time went (fit_parts)


FIT_PARTS = {
    "start": "Ray Train controller, placement group, worker processes (imports), process group",
    "setup": "the loop's dataset, model, optimiser, DDP wrapper",
    "batches": "the epoch's batches",
    "checkpoint save": "`torch.save` of the epoch's state",
    "report + teardown": "the epoch's report (checkpoint persisted, MLflow), worker group "
    "shutdown, the driver loading the checkpoint",
}


def fit_parts(
    called_at: float, wall_s: float, images: int, metrics: dict[str, Any]
) -> dict[str, float]:
    """Split one 1-epoch `fit()`'s wall time by the loop's own timing metrics (rank 0:
    `loop_entered_at`, `setup_s`, `checkpoint_save_s`) and its batches (`images` at its
    `train_images_per_s`); what is left is the report and the teardown."""
    parts = {
        "start": metrics["loop_entered_at"] - called_at,
        "setup": metrics["setup_s"],
        "batches": images / metrics["train_images_per_s"],
        "checkpoint save": metrics["checkpoint_save_s"],
    }
    parts["report + teardown"] = wall_s - sum(parts.values())
    return parts


def ray_epoch(job: TrainJob, workers: int, images: int) -> RayEpoch:
    """One `fit()` in a fresh MLflow run: Ray Train names its run (and storage folder) after
    the MLflow run id, so reusing one would resume the finished epoch instead of training."""
    client = MlflowClient(job.tracking_uri)
    run_id = client.create_run(client.get_run(job.run_id).info.experiment_id).info.run_id
    scaled = job.model_copy(
        update={
            "run_id": run_id,
            "train": job.train.model_copy(update={"num_workers": workers}),
        }
    )
    called_at, started = time.time(), time.perf_counter()
    outcome = fit(scaled, workload_for("detection"))
    wall = time.perf_counter() - started
    parts = fit_parts(called_at, wall, images, outcome.metrics)
    return RayEpoch(wall, float(outcome.metrics["train_images_per_s"]), outcome.model, parts)


def bare_evaluation(model: torch.nn.Module, settings: Settings, task: str) -> dict[str, float]:
    """Predict (batches of 4) and score with COCOeval directly: the floor for our evaluate."""
    split = load_task_split(
        settings.detection_data, settings.evaluate.split, settings.project_root, task
    )
    dataset = task_dataset(split, task)
    model.eval()
    results: list[dict[str, Any]] = []
    with torch.no_grad():
        for first in range(0, len(dataset), EVAL_BATCH):
            items = [dataset[i] for i in range(first, min(first + EVAL_BATCH, len(dataset)))]
            outputs = model([image for image, _ in items])
            for (_, target), output in zip(items, outputs, strict=True):
                records = coco_records(int(target["image_id"]), output, split.label_to_category_id)
                results += records.get("bbox", [])
    if not results:
        return {"map": 0.0}
    gt: COCO = split.coco
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.params.imgIds = list(split.image_ids)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {"map": float(evaluator.stats[0])}


def scratch_project(root: Path, params: Path, images: int, seed: int) -> Settings:
    """A project in `root`: the params, a synthetic detection set of `images` train images,
    MLflow and Ray Train storage inside it."""
    shutil.copy(params, root / "params.yaml")
    test = max(8, images // 3)
    generate(
        root / "data" / "detection",
        SynthDetection(seed=seed, train=images, val=test, test=test),
    )
    return load_settings(root / "params.yaml")


@dataclass
class Measured:
    family: str
    images: int
    batch_size: int
    threads: int
    load_before: float
    bare_ips: list[float]
    ray1_ips: list[float]
    ray1_wall: list[float]
    ray2_ips: list[float]
    ray2_wall: list[float]
    ray1_parts: dict[str, float]  # the last 1-worker fit()'s wall time by part
    bare_timings: Timings
    eval_bare_s: list[float]
    eval_ours_s: list[float]
    eval_ours_figures_s: list[float]
    map_bare: float
    map_ours: float


def measure(settings: Settings, family: str, images: int) -> Measured:
    load_before = os.getloadavg()[0]
    tracking_uri = settings.tracking_uri
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("bench-overhead")).info.run_id
    group = workload_for("detection")
    data = group.training_data(settings, family)
    job = job_for(settings, data, family=family, run_id=run_id)
    job = job.model_copy(
        update={
            "tracking_uri": tracking_uri,
            "train": job.train.model_copy(update={"epochs": 1, "max_failures": 0}),
        }
    )
    train_images = len(group.train_adapter(job.task).dataset(job))
    bare_epoch(job, tracking_uri, run_id)  # warm-up: first calls into torch, files cached
    bare_ips, ray1, ray2, bare_timings = [], [], [], Timings()
    for _ in range(REPEATS):
        ips, timings = bare_epoch(job, tracking_uri, run_id)
        bare_ips.append(ips)
        bare_timings = timings
        ray1.append(ray_epoch(job, 1, train_images))
        ray2.append(ray_epoch(job, 2, train_images))
    model = ray1[-1].model
    record = training_record(family, data, run_id)
    eval_bare, eval_ours, eval_figures = [], [], []
    map_bare = map_ours = float("nan")
    for _ in range(EVAL_REPEATS):
        started = time.perf_counter()
        map_bare = bare_evaluation(model, settings, job.task)["map"]
        eval_bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        map_ours = group.evaluate(settings, model, record, with_figures=False).metrics["map"]
        eval_ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        group.evaluate(settings, model, record, with_figures=True)
        eval_figures.append(time.perf_counter() - started)
    return Measured(
        family=family,
        images=train_images,
        batch_size=job.train.batch_size,
        threads=job.train.threads_per_worker,
        load_before=load_before,
        bare_ips=bare_ips,
        ray1_ips=[r.images_per_s for r in ray1],
        ray1_wall=[r.wall_s for r in ray1],
        ray2_ips=[r.images_per_s for r in ray2],
        ray2_wall=[r.wall_s for r in ray2],
        ray1_parts=ray1[-1].parts,
        bare_timings=bare_timings,
        eval_bare_s=eval_bare,
        eval_ours_s=eval_ours,
        eval_ours_figures_s=eval_figures,
        map_bare=map_bare,
        map_ours=map_ours,
    )


def section(m: Measured) -> str:
    bare_epoch_s = m.images / statistics.median(m.bare_ips)
    loop_ratio = ratio(m.ray1_ips, m.bare_ips)
    wall_ratio = bare_epoch_s / statistics.median(m.ray1_wall)
    fixed_s = statistics.median(m.ray1_wall) - m.images / statistics.median(m.ray1_ips)
    scaling = ratio(m.ray2_ips, m.ray1_ips)
    part_shares = shares(m.bare_timings)
    lines = [
        "## Platform overhead: our Ray Train loop vs a bare PyTorch loop",
        "",
        "Generated by `sightline bench overhead` (`python bench/overhead.py`); one run, "
        f"variants interleaved (bare, Ray 1 worker, Ray 2 workers) x {REPEATS}, medians; "
        f"`{m.family}` (demo params, from scratch) on {m.images} synthetic 128 px train images, "
        f"batch {m.batch_size} per worker, {m.threads} torch thread(s) per worker, one epoch; "
        f"load average at the start {m.load_before:.1f} on {os.cpu_count()} cores "
        f"(shared with other work: absolute seconds are noisy, read the ratios).",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| bare loop, images/s | {statistics.median(m.bare_ips):.2f} |",
        f"| our loop (1 worker), images/s of its batches (`train_images_per_s`) | "
        f"{statistics.median(m.ray1_ips):.2f} |",
        f"| **our loop / bare, batches only** | **{loop_ratio:.3f}x** (goal >= 0.95x) |",
        f"| one epoch end to end: bare batches s / `fit()` wall s | {bare_epoch_s:.1f} / "
        f"{statistics.median(m.ray1_wall):.1f} = {wall_ratio:.3f}x |",
        f"| fixed cost per `fit()` (wall minus the batches) | {fixed_s:.1f} s |",
        f"| 2 workers (gloo DDP) / 1 worker, total images/s | {scaling:.2f}x "
        f"(ideal 2.00x on 2 free cores) |",
        f"| 2 workers: `fit()` wall s | {statistics.median(m.ray2_wall):.1f} |",
        "",
        "Where a bare epoch's time goes (the same work as our loop's, each part timed; "
        "checkpoint = `torch.save` of model + optimiser + scheduler, mlflow = one `log_batch` "
        "to a local SQLite store):",
        "",
        "| part | s | share |",
        "|---|---|---|",
    ]
    for name, seconds in m.bare_timings.parts.items():
        lines.append(f"| {name} | {seconds:.3f} | {100 * part_shares[name]:.1f} % |")
    wall = sum(m.ray1_parts.values())
    lines += [
        "",
        "Where one `fit()` goes (1 worker, the last repeat; from the loop's own timing metrics, "
        "`loop_entered_at`, `setup_s`, `checkpoint_save_s`, which every training logs to MLflow):",
        "",
        "| part | what | s | share |",
        "|---|---|---|---|",
    ]
    for name, seconds in m.ray1_parts.items():
        lines.append(
            f"| {name} | {FIT_PARTS[name]} | {seconds:.1f} | {100 * seconds / wall:.1f} % |"
        )
    lines += ["", READING.strip()]
    eval_ratio = ratio(m.eval_bare_s, m.eval_ours_s)
    eval_fig_ratio = ratio(m.eval_bare_s, m.eval_ours_figures_s)
    lines += [
        "",
        "### Evaluation: our detection evaluation vs a bare predict + COCOeval",
        "",
        f"The same trained model and split, median of {EVAL_REPEATS} interleaved runs; "
        "bare = 4 images per forward, "
        "`coco_records`, `COCOeval` (bbox); ours = the detection workload's `evaluate` "
        "(what `sightline evaluate` runs after loading the model), without and with its "
        "MLflow figures.",
        "",
        "| variant | s | bare / variant | map |",
        "|---|---|---|---|",
        f"| bare predict + COCOeval | {statistics.median(m.eval_bare_s):.2f} | 1.000x | "
        f"{m.map_bare:.4f} |",
        f"| ours, no figures | {statistics.median(m.eval_ours_s):.2f} | {eval_ratio:.3f}x | "
        f"{m.map_ours:.4f} |",
        f"| ours, with figures | {statistics.median(m.eval_ours_figures_s):.2f} | "
        f"{eval_fig_ratio:.3f}x | |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--family", default="yolo")
    parser.add_argument("--images", type=int, default=96, help="synthetic train images")
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    user_tracking_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)  # scratch store meanwhile
    with tempfile.TemporaryDirectory() as tmp:
        scratch = scratch_project(
            Path(tmp), settings.path("params.yaml"), args.images, settings.seed
        )
        ensure_ray(None)
        try:
            measured = measure(scratch, args.family, args.images)
        finally:
            ray.shutdown()
            if user_tracking_uri is not None:
                os.environ["MLFLOW_TRACKING_URI"] = user_tracking_uri
    text = section(measured)
    report = replace_section(settings.path("docs/benchmarks/platform.md"), "overhead", text)
    publish(
        settings,
        name="platform",
        group="detection",
        report=report,
        metrics={
            "loop_over_bare": ratio(measured.ray1_ips, measured.bare_ips),
            "ddp2_over_1": ratio(measured.ray2_ips, measured.ray1_ips),
            "eval_bare_over_ours": ratio(measured.eval_bare_s, measured.eval_ours_s),
        },
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
