"""Benchmark: the Serve app under load from locust (headless, loopback). Writes the "load"
section of docs/benchmarks/serving.md and an MLflow run.

    python bench/serving.py [--params params.yaml] [--seconds 15] [--people 100000]
    sightline bench serving

For /v1/detect, /v1/otdr/events and /v1/faces/identify with the champion of each task:
throughput and p50/p95/p99 at 1, 4, 16 and 64 concurrent clients, with batching on (params
`serve.batch`) and off (max_batch_size 1), and the error and 503 counts; detect at 1 and 16
clients also with batching off and no proposal workers (`serve.proposal_workers` 0: what the
issue measured, nothing batched and selective search in the replica's thread); Serve's overhead
(the client's round trip minus the app's own time, from its Server-Timing header, in the same
requests); then identify latency with `--people` enrolled: as many as `--seconds` allow
through POST /v1/faces/enroll, the rest in one gallery transaction (Gallery.enroll_many, as
`sightline enroll` writes) with random embeddings.

Champions: the project's MLflow store when it has one for every task (after `make demo`),
else untrained stand-ins of the demo profile's architectures (faster_rcnn, otdr_detector,
triplet at params.yaml's sizes) in a temporary store: speed does not depend on training,
except for how many boxes survive the score threshold. Ray is started locally (or joined via
RAY_ADDRESS) and Serve is shut down at the end; the gallery is a temporary one.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import ray
import torch
from common import arguments, publish, replace_section
from mlflow import MlflowClient
from PIL import Image
from ray import serve

from sightline.config import ServeBatch, Settings, load_settings
from sightline.data.otdr import EVENT_TYPES
from sightline.data.synth.detection import CATEGORIES
from sightline.gallery.store import Gallery
from sightline.models import build_model
from sightline.serve.app import run
from sightline.serve.detector import run_detector
from sightline.serve.faces import embed_faces, gallery_file
from sightline.serve.proposals import search_of, search_pixels
from sightline.serve.registered import RegisteredModels
from sightline.track.registry import log_model, register
from sightline.track.runs import experiment_id
from sightline.workloads import workload_for

CONCURRENCY = (1, 4, 16, 64)
ROUTES = {"detect": "/v1/detect", "otdr": "/v1/otdr/events", "identify": "/v1/faces/identify"}
GROUPS = ("detection", "otdr", "identification")
STAND_INS = {"detection": "faster_rcnn", "otdr": "otdr_detector", "identification": "triplet"}
LOCUSTFILE = Path(__file__).with_name("serving_locustfile.py")
FLOOR_SERVER = Path(__file__).with_name("serving_floor.py")
TOKEN = "bench-serving-token"
BASELINE = "off, 0 workers"  # no batching, selective search in the replica: the setup


@dataclass
class Cell:
    route: str
    batching: str
    users: int
    seconds: float
    samples: list[tuple[int, float, float | None]]

    def ok_ms(self) -> np.ndarray:
        return np.array([rt for status, rt, _ in self.samples if status == 200])

    def count(self, status: int) -> int:
        return sum(1 for s, _, _ in self.samples if s == status)

    def _timed(self) -> list[tuple[float, float]]:
        """(round trip, app time) of each 200 answer that carried its Server-Timing."""
        return [(rt, app) for s, rt, app in self.samples if s == 200 and app is not None]

    def app_ms(self) -> np.ndarray:
        return np.array([app for _, app in self._timed()])

    def overhead_ms(self) -> np.ndarray:
        return np.array([rt - app for rt, app in self._timed()])

    def row(self) -> str:
        ok = self.ok_ms()
        p50, p95, p99 = np.percentile(ok, [50, 95, 99]) if ok.size else [float("nan")] * 3
        errors = sum(1 for s, _, _ in self.samples if s != 200 and s != 503)
        return (
            f"| {self.route} | {self.batching} | {self.users} | {ok.size / self.seconds:.1f} | "
            f"{p50:.0f} | {p95:.0f} | {p99:.0f} | {len(self.samples)} | {errors} | "
            f"{self.count(503)} |"
        )


def register_stand_ins(settings: Settings, artifacts: Path) -> None:
    """Untrained champions at the params' sizes, one per task group."""
    detection_names = [c["name"] for c in CATEGORIES]
    embedder = {"task": "embed", "gamma": 1.0, "rule": "mean", "target_far": 0.01}
    specs = {  # group -> (num_classes, metadata, primary metric)
        "detection": (len(detection_names) + 1, {"task": "detect", "class_names": detection_names},
                      "map"),
        "otdr": (len(EVENT_TYPES) + 1, {"task": "events1d", "class_names": list(EVENT_TYPES)},
                 "map_50"),
        "identification": (1, embedder, "dir_at_far_1e-2"),
    }  # fmt: skip
    for group, family in STAND_INS.items():
        num_classes, metadata, metric = specs[group]
        params = settings.models.get(family, {})
        torch.manual_seed(0)
        model = build_model(family, num_classes, **params)
        workload = workload_for(group)
        with mlflow.start_run(experiment_id=experiment_id(workload.experiment, artifacts)):
            uri = log_model(model, family=family, num_classes=num_classes, model_params=params,
                            metadata=metadata)  # fmt: skip
        metrics = {metric: 0.5, workload.champion_metric: 0.5}
        register(uri, workload=workload, family=family, metrics=metrics, tags={},
                 eval_scope="test" if group == "identification" else "")  # fmt: skip


def champion_families(tracking_uri: str) -> dict[str, str] | None:
    """Each task group's champion as "family vN", or None when a group has none."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = {}
    for group in GROUPS:
        try:
            version = client.get_model_version_by_alias(
                workload_for(group).registered_model, "champion"
            )
        except mlflow.exceptions.MlflowException:
            return None
        found[group] = f"{version.tags.get('family', '?')} v{version.version}"
    return found


def batched_forward_gain(
    tracking_uri: str, payloads: Path, batch_size: int, seconds: float = 3.0
) -> dict[str, Any]:
    """The detector and embedder champions' own forward pass in this process, on one thread as
    a replica runs it (Ray gives an actor with num_cpus < 1 OMP_NUM_THREADS=1): images/s one at
    a time and `batch_size` at once, and the model's milliseconds per single image. Their
    ratio is the most dynamic batching can add to a route's throughput, whatever Serve does.
    `detect_families`: the same ratio for every detector family the registry serves (the
    evidence for `serve.batch.unbatched_families`). A family that takes proposals is timed on
    the image's precomputed ones, as the replica runs it when proposal workers search;
    `detect_search_ms` is the champion's selective search (0 when it does none)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    inputs = {
        "detect": np.asarray(Image.open(payloads / "detect.png").convert("RGB")),
        "identify": np.asarray(Image.open(payloads / "face.png").convert("RGB")),
    }
    forward = {"detect": run_detector, "identify": embed_faces}

    def rates(route: str, model: torch.nn.Module) -> tuple[float, float]:
        run = partial(forward[route], model)
        if route == "detect" and (search := search_of(model)):
            run = partial(run_on_proposals, model, search_pixels(search, inputs[route]))
        single = images_per_second(run, inputs[route], 1, seconds)
        return single, images_per_second(run, inputs[route], batch_size, seconds)

    def search_ms(model: torch.nn.Module) -> float:
        if (search := search_of(model)) is None:
            return 0.0
        return 1000.0 / images_per_second(
            lambda images: [search_pixels(search, image) for image in images],
            inputs["detect"], 1, seconds)  # fmt: skip

    gains: dict[str, Any] = {}
    try:
        for route, group in (("detect", "detection"), ("identify", "identification")):
            models = RegisteredModels(tracking_uri, group)
            catalog = models.catalog()
            single, batched = rates(route, models.get(str(catalog.champion_version)).model)
            gains |= {f"{route}_single_per_s": single, f"{route}_batched_per_s": batched,
                      f"{route}_model_ms": 1000.0 / single}  # fmt: skip
            if route == "detect":
                champion = models.get(str(catalog.champion_version)).model
                gains["detect_search_ms"] = search_ms(champion)
                gains["detect_families"] = {
                    family: rates(route, models.get(number).model)
                    for family, number in sorted(catalog.families.items())
                }
    finally:
        torch.set_num_threads(threads)
    return gains


def run_on_proposals(
    model: torch.nn.Module, boxes: np.ndarray, images: list[np.ndarray]
) -> list[dict[str, torch.Tensor]]:
    """The detector on `images` (copies of one) given that image's proposals `boxes`."""
    return run_detector(model, images, [torch.from_numpy(boxes)] * len(images))


def images_per_second(
    forward: Callable, image: np.ndarray, size: int, seconds: float = 3.0
) -> float:
    """`forward` on `size` copies of `image` at once, repeated for `seconds` after a warm-up."""
    images = [image] * size
    forward(images)
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        forward(images)
        done += size
    return done / (time.perf_counter() - started)


# A process's command line (contains) -> its part of the CPU accounting; the rest is "other".
ROLES = {
    "multiprocessing.spawn": "proposal workers",
    "ServeReplica:sightline:Detector": "detector replica",
    "ServeReplica:sightline:Gateway": "gateway",
    "ProxyActor": "proxy",
}
Snapshot = tuple[dict[int, tuple[str, float]], float]


def cpu_snapshot() -> Snapshot:
    """CPU seconds (user + system) of every process here by pid with its role, and of this
    process's finished children (the locust runs)."""
    import resource

    import psutil

    processes = {}
    for process in psutil.process_iter(["cmdline", "cpu_times"]):
        times, command = process.info["cpu_times"], " ".join(process.info["cmdline"] or [])
        if times is not None:
            role = next((r for key, r in ROLES.items() if key in command), "other")
            processes[process.pid] = (role, times.user + times.system)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return processes, children.ru_utime + children.ru_stime


def cpu_by_role(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per role, and by locust."""
    spent: dict[str, float] = {"locust": after[1] - before[1]}
    for pid, (role, seconds) in after[0].items():
        spent[role] = spent.get(role, 0.0) + seconds - before[0].get(pid, (role, 0.0))[1]
    return spent


def overhead_percentiles(cell: Cell) -> tuple[float, float]:
    values = cell.overhead_ms()
    if not values.size:
        return float("nan"), float("nan")
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)


def http_floor(work: Path, seconds: int) -> dict[str, Cell]:
    """Each route's request at 1 client against plain uvicorn (bench/serving_floor.py)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(FLOOR_SERVER), str(port)])
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        return {route: Cell(route, "plain", 1, seconds, load(url, route, 1, seconds, work))
                for route in ROUTES}  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port} within {timeout_s:.0f} s")


def write_payloads(folder: Path) -> None:
    rng = np.random.default_rng(0)

    def png(height: int, width: int) -> bytes:
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "PNG")
        return buffer.getvalue()

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "detect.png").write_bytes(png(128, 128))
    (folder / "face.png").write_bytes(png(64, 64))
    samples = np.linspace(0, -10, 2000) + rng.normal(0, 0.05, 2000)
    (folder / "trace.json").write_text(
        json.dumps({"samples": samples.tolist(), "resolution_m": 1.0})
    )


def load(url: str, route: str, users: int, seconds: int, work: Path) -> list:
    """One locust run; the per-request samples it recorded."""
    out = work / f"{route}-{users}-{time.monotonic_ns()}.json"
    env = {
        **os.environ,
        "SIGHTLINE_BENCH_ROUTE": route,
        "SIGHTLINE_BENCH_PAYLOADS": str(work / "payloads"),
        "SIGHTLINE_BENCH_OUT": str(out),
        "SIGHTLINE_API_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
               "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "-H", url,
               "--only-summary", "--loglevel", "ERROR", "--exit-code-on-error", "0"]  # fmt: skip
    subprocess.run(command, env=env, check=True, timeout=seconds + 120, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


@contextmanager
def app(settings: Settings, batch: ServeBatch, proposal_workers: int) -> Iterator[str]:
    served = settings.model_copy(deep=True)
    served.serve.batch = batch
    served.serve.proposal_workers = proposal_workers
    run(served, blocking=False)
    try:
        yield f"http://127.0.0.1:{served.serve.port}"
    finally:
        serve.shutdown()


def warm_up(url: str, work: Path, routes: Iterable[str]) -> None:
    for route in routes:
        load(url, route, 1, 3, work)


def fill_gallery(gallery_dir: Path, people: int) -> int:
    """Enroll up to `people` in all (random unit embeddings, one 16x16 template each) in one
    transaction; returns how many were added."""
    with Gallery(gallery_file(gallery_dir)) as gallery:
        missing = people - gallery.identity_count
        dim, version = gallery.embedding_dim, gallery.model_version
        rng = np.random.default_rng(1)
        template = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        entries = []
        for index in range(missing):
            vector = rng.normal(size=(1, dim)).astype(np.float32)
            entries.append((f"synthetic-{index:06d}", [template], vector / np.linalg.norm(vector)))
        if entries:
            gallery.enroll_many(entries, version)
        return max(missing, 0)


def cpu_line(cpu: dict[str, float], answered: int) -> str:
    per_request = {role: 1000 * seconds / max(1, answered) for role, seconds in cpu.items()}
    total = sum(per_request.values())
    parts = ", ".join(
        f"{role} {ms:.0f}" for role, ms in sorted(per_request.items(), key=lambda kv: -kv[1])
    )
    cores = os.cpu_count() or 1
    return (
        f"- CPU per answered detect request at 16 clients (batching on; CPU time of every "
        f"process on the host over the cell, ms): {parts}; {total:.0f} ms in all on {cores} "
        f"cores: the route cannot pass about {cores * 1000 / max(total, 1e-9):.0f} req/s here."
    )


def repeats_line(repeats: list[Cell]) -> str:
    if not repeats:
        return ""
    rates = {arm: [c.ok_ms().size / c.seconds for c in repeats if c.batching == arm]
             for arm in ("on", BASELINE)}  # fmt: skip
    ratio = np.mean(rates["on"]) / max(float(np.mean(rates[BASELINE])), 1e-9)
    listed = {arm: ", ".join(f"{rate:.1f}" for rate in values) for arm, values in rates.items()}
    return (
        f"\n- Repeats (`--repeats {len(rates['on'])}`, a fresh app each, in turn): detect at 16 "
        f"clients {listed['on']} req/s with batching on and proposal workers, "
        f"{listed[BASELINE]} in the issue's setup: **{ratio:.2f}x** (means)."
    )


def report(cells: list[Cell], identify_cells: list[Cell], enroll: Cell, context: dict) -> str:
    header = ("| route | batching | clients | ok req/s | p50 ms | p95 ms | p99 ms | requests | "
              "errors | 503 |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    overhead_rows = []
    for cell in cells:
        if cell.batching == "on" and cell.users in (1, 16):
            p50, p95 = overhead_percentiles(cell)
            floor = context["floor"].get(cell.route) if cell.users == 1 else None
            plain = f"{overhead_percentiles(floor)[0]:.1f}" if floor else ""
            overhead_rows.append(
                f"| {cell.route} | {cell.users} | {p50:.1f} | {p95:.1f} | {plain} |"
            )
    five_xx = sum(1 for c in cells for s, _, _ in c.samples if s >= 500 and s != 503)
    refused = sum(c.count(503) for c in cells)
    at_16 = {(c.route, c.batching): c.ok_ms().size for c in cells if c.users == 16}
    ratio = {route: at_16[route, "on"] / max(1, at_16[route, "off"]) for route in ROUTES}
    baseline_16 = at_16.get(("detect", BASELINE), 0)
    seconds_16 = next(c.seconds for c in cells if c.users == 16)
    gains, batch_on_size = context["gains"], context["batch"].max_batch_size
    app_p50 = {
        c.route: float(np.median(c.app_ms()))
        for c in cells
        if c.batching == "off" and c.users == 1 and c.route in ("detect", "identify")
    }
    family_gains = ", ".join(
        f"{family} {one:.1f} -> {many:.1f} ({many / one:.2f}x)"
        for family, (one, many) in gains["detect_families"].items()
    )
    unbatched = ", ".join(context["batch"].unbatched_families) or "no family"
    search_note = (
        f"given its proposals; its selective search costs {gains['detect_search_ms']:.1f} ms "
        "more, in a proposal worker"
        if gains["detect_search_ms"]
        else "it needs no selective search"
    )
    enrolled = enroll.ok_ms()
    enroll_rate = enrolled.size / enroll.seconds
    enroll_p50 = float(np.median(enrolled)) if enrolled.size else float("nan")
    return f"""## Load

Measured by `sightline bench serving` (`python bench/serving.py`; locust {context["locust"]},
headless, closed-loop clients without think time, loopback), {context["seconds"]} s per cell,
one run on {context["when"]}, **{os.cpu_count()} CPU cores shared by the server, the load
generator and other work** (load average {context["load_before"]} before, {context["load_after"]}
after): absolute figures are this machine's; compare rows with each other. It took
{context["minutes"]:.0f} min. Champions: {context["champions"]}. Requests: a 128x128 PNG
(detect), a 2,000-sample JSON trace (otdr), a 64x64 PNG face (identify), each a raw body.
Batching "on" is params `serve.batch` (max_batch_size {context["batch"].max_batch_size}, wait
{context["batch"].batch_wait_timeout_s * 1000:.0f} ms; the detector and embedder batch, the OTDR
deployment does not; detectors of {unbatched} run one request at a time); "off" is
max_batch_size 1. Both with `serve.proposal_workers` {context["proposal_workers"]} (selective
search of rcnn / fast_rcnn in that many processes beside the detector replica). "{BASELINE}"
is batching off and no proposal workers, as the issue measured "today". One replica per task,
max_ongoing_requests {context["scaling"].max_ongoing_requests}, max_queued_requests
{context["scaling"].max_queued_requests}: beyond that a request gets 503 + Retry-After at once.
Latency percentiles are over the 200 answers; "errors" counts other non-200 answers and
connection failures.

{header}
{chr(10).join(cell.row() for cell in cells)}

- 5xx other than 503: **{five_xx}**; 503 (queue full, Retry-After): {refused}.
- Batching at 16 clients, successful requests on / off: detect {ratio["detect"]:.2f}x,
  identify {ratio["identify"]:.2f}x, otdr (not batched) {ratio["otdr"]:.2f}x.
- Detect at 16 clients against the issue's setup in the same run ("{BASELINE}"):
  {at_16["detect", "on"] / seconds_16:.1f} against {baseline_16 / seconds_16:.1f} req/s,
  **{at_16["detect", "on"] / max(1, baseline_16):.2f}x**. Target >= 2x over today.
{cpu_line(context["cpu"], at_16["detect", "on"])}{repeats_line(context["repeats"])}
- What batching can give at most, measured in the same run: the champions' own forward pass
  on one thread, as in a replica, in images/s one at a time -> {batch_on_size} at once:
  detector {gains["detect_single_per_s"]:.1f} -> {gains["detect_batched_per_s"]:.1f}
  ({gains["detect_batched_per_s"] / gains["detect_single_per_s"]:.2f}x), embedder
  {gains["identify_single_per_s"]:.0f} -> {gains["identify_batched_per_s"]:.0f}
  ({gains["identify_batched_per_s"] / gains["identify_single_per_s"]:.2f}x). One image costs
  the detector {gains["detect_model_ms"]:.1f} ms ({search_note}) and the embedder
  {gains["identify_model_ms"]:.2f} ms of a request whose app time at 1 client is
  {app_p50["detect"]:.1f} / {app_p50["identify"]:.1f} ms (p50, batching off): batching can
  only shrink the model's share. The same for every detector family served (`?model=`),
  images/s one at a time -> {batch_on_size} at once: {family_gains}. rcnn and fast_rcnn are
  timed on precomputed proposals, as their replica runs them when proposal workers search.

**Serve's overhead**: round trip minus the app's own time (`Server-Timing: app;dur=`, the
gateway's FastAPI app from request to response start, task calls included), same requests as
above, batching on. It is what Serve's HTTP proxy, the HTTP exchange on loopback and the
routing to the ingress replica cost; the hop from the ingress to the task replica is inside
the app's time. Target <= 5 ms p50. "Plain HTTP" is the same client and request against
plain uvicorn on this machine, no Serve (`bench/serving_floor.py`: it reads the body and
answers a small JSON), in the same run: the part of the figure that is loopback HTTP and the
client, not Serve.

| route | clients | overhead p50 ms | p95 ms | plain HTTP p50 ms |
|---|---|---|---|---|
{chr(10).join(overhead_rows)}

**Identify with {context["people"]:,} people enrolled** (batching on): {enrolled.size} enrolled
through `POST /v1/faces/enroll` in {enroll.seconds:.0f} s at {enroll.users} clients
({enroll_rate:.1f}/s, p50 {enroll_p50:.0f} ms; {context["people"]:,} this way would take
{context["people"] / max(enroll_rate, 1e-9) / 60:.0f} min here), the other
{context["filled"]:,} in one gallery transaction with random unit embeddings.

{header}
{chr(10).join(cell.row() for cell in identify_cells)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="locust run time per cell")
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=0,
                        help="then detect at 16 clients this many times more, with and without "
                             "proposal workers in turn (a fresh app each)")  # fmt: skip
    args = parser.parse_args(argv)
    settings = load_settings(args.params)

    started = time.monotonic()
    load_before = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        write_payloads(work / "payloads")
        project_uri = tracking_uri = settings.tracking_uri
        if found := champion_families(tracking_uri):
            listed = ", ".join(f"{group} {name}" for group, name in found.items())
            champions = f"the project store's ({tracking_uri}): {listed}"
        else:
            tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
            mlflow.set_tracking_uri(tracking_uri)
            register_stand_ins(settings, work / "artifacts")
            champions = "untrained " + ", ".join(STAND_INS.values()) + " (no demo store here)"
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        os.environ["SIGHTLINE_API_TOKEN"] = TOKEN
        served = load_settings(args.params)  # re-read: the environment now names the store
        served.serve.gallery_path = work / "gallery"
        served.serve.port = free_port()
        batch_on, workers = settings.serve.batch, settings.serve.proposal_workers
        batch_off = ServeBatch(max_batch_size=1)
        gains = batched_forward_gain(tracking_uri, work / "payloads", batch_on.max_batch_size)
        floor = http_floor(work, args.seconds)
        cells: list[Cell] = []
        arms = [  # label, batching, proposal workers, {route: concurrencies}
            ("on", batch_on, workers, dict.fromkeys(ROUTES, CONCURRENCY)),
            ("off", batch_off, workers, dict.fromkeys(ROUTES, CONCURRENCY)),
            (BASELINE, batch_off, 0, {"detect": (1, 16)}),
        ]
        for batching, batch, proposal_workers, plan in arms:
            with app(served, batch, proposal_workers) as url:
                warm_up(url, work, plan)
                for route, concurrencies in plan.items():
                    for users in concurrencies:
                        accounted = batching == "on" and route == "detect" and users == 16
                        before = cpu_snapshot() if accounted else None
                        samples = load(url, route, users, args.seconds, work)
                        cells.append(Cell(route, batching, users, args.seconds, samples))
                        print(cells[-1].row(), flush=True)
                        if before is not None:
                            cpu = cpu_by_role(before, cpu_snapshot())
                if batching == "on":
                    enroll = Cell("enroll", "on", 4, args.seconds,
                                  load(url, "enroll", 4, args.seconds, work))  # fmt: skip
                    filled = fill_gallery(work / "gallery", args.people)
                    load(url, "identify", 1, 5, work)  # the replica loads the new gallery
                    identify_cells = []
                    for users in (1, 16):
                        samples = load(url, "identify", users, args.seconds, work)
                        name = f"identify, {args.people:,} people"
                        identify_cells.append(Cell(name, "on", users, args.seconds, samples))
                    for cell in identify_cells:
                        print(cell.row(), flush=True)
        repeats = []
        for _ in range(args.repeats):
            for batching, batch, proposal_workers in (("on", batch_on, workers),
                                                      (BASELINE, batch_off, 0)):  # fmt: skip
                with app(served, batch, proposal_workers) as url:
                    warm_up(url, work, ["detect"])
                    samples = load(url, "detect", 16, args.seconds, work)
                    repeats.append(Cell("detect", batching, 16, args.seconds, samples))
                    print(repeats[-1].row(), flush=True)
    context = {
        "locust": version("locust"),  # not imported here: it monkey-patches the process
        "seconds": args.seconds,
        "when": time.strftime("%Y-%m-%d"),
        "load_before": load_before,
        "load_after": f"{os.getloadavg()[0]:.1f}",
        "minutes": (time.monotonic() - started) / 60,
        "champions": champions,
        "batch": batch_on,
        "proposal_workers": workers,
        "scaling": settings.serve.scaling,
        "people": args.people,
        "filled": filled,
        "gains": gains,
        "floor": floor,
        "cpu": cpu,
        "repeats": repeats,
    }
    serve.shutdown()
    ray.shutdown()
    os.environ["MLFLOW_TRACKING_URI"] = project_uri  # the report's run goes to the project
    text = report(cells, identify_cells, enroll, context)
    path = settings.path("docs/benchmarks/serving.md")
    metrics = {metric_name(c.route, c.batching, c.users): c.ok_ms().size / c.seconds for c in cells}
    publish(settings, name="serving", group="identification",
            report=replace_section(path, "load", text), metrics=metrics)  # fmt: skip
    print(f"wrote {path}")
    return 0


def metric_name(route: str, batching: str, users: int) -> str:
    """e.g. detect_off_0_workers_16_ok_per_s: MLflow's metric names take no commas."""
    return re.sub(r"\W+", "_", f"{route}_{batching}_{users}_ok_per_s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
