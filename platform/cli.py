"""The `sightline` command: one entry point for data, the pipeline stages and serving.

Stage commands run the same modules DVC runs (`python -m sightline.pipelines.<stage>`), so a
stage behaves identically from the CLI and from `dvc repro`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sightline.config import SettingsError, load_settings
from sightline.console import VERBOSE_ENV

app = typer.Typer(
    help="Sightline: train, evaluate, track and serve detectors.", no_args_is_help=True
)
data_app = typer.Typer(help="Generate and convert datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
otdr_app = typer.Typer(help="OTDR traces: detect events in .sor files.", no_args_is_help=True)
app.add_typer(otdr_app, name="otdr")
console = Console()

ParamsOption = Annotated[
    Path | None, typer.Option("--params", help="params.yaml to use (default: ./params.yaml)")
]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help=f"print Ray's and MLflow's own logs here instead of logs/<stage>.log "
        f"(as {VERBOSE_ENV}=1 does)",
    ),
]


def error(message: str) -> None:
    """One unwrapped line, so a long path stays greppable."""
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


def _settings(params: Path | None):
    try:
        return load_settings(params)
    except SettingsError as exc:
        error(str(exc))
        raise typer.Exit(2) from None


def _stage(module: str, *args: str, params: Path | None, verbose: bool = False) -> None:
    command = [sys.executable, "-m", f"sightline.pipelines.{module}", *args]
    if params is not None:
        command += ["--params", str(params)]
    env = {**os.environ, VERBOSE_ENV: "1"} if verbose else None
    raise typer.Exit(subprocess.run(command, check=False, env=env).returncode)


@data_app.command("synth")
def data_synth(
    params: ParamsOption = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(help="which dataset(s): detection, otdr, identity (default: all of them)"),
    ] = None,
) -> None:
    """Write the synthetic datasets (deterministic from their seeds) to their data roots."""
    import importlib

    from sightline.workloads import all_workloads

    settings = _settings(params)
    roots = {w.synth_kind: w.data_root(settings) for w in all_workloads() if w.synth_kind}
    for name in kind or list(roots):
        if name not in roots:
            raise typer.BadParameter(f"unknown dataset kind {name!r}; known: {list(roots)}")
        generate = importlib.import_module(f"sightline.data.synth.{name}").generate
        root = roots[name]
        with console.status(f"generating synthetic {name} data into {root} ..."):
            counts = generate(root, getattr(settings.synth, name))
        console.print(f"{name}: wrote {counts} to {root}")


@data_app.command("voc2coco")
def data_voc2coco(
    voc_root: Annotated[Path, typer.Argument(help="a VOC year folder (Annotations/, JPEGImages/)")],
    image_set: Annotated[str, typer.Argument(help="an ImageSets/Main name, e.g. train")],
    out: Annotated[Path, typer.Argument(help="COCO JSON file to write")],
) -> None:
    """Convert a Pascal VOC image set to COCO JSON (file_names relative to JPEGImages/)."""
    from sightline.data.coco import write_coco
    from sightline.data.voc import voc_to_coco

    coco = voc_to_coco(voc_root, image_set)
    write_coco(coco, out)
    console.print(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} boxes to {out}")


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(help="a dataset folder in any supported layout")],
    layout: Annotated[
        str,
        typer.Option("--format", help="auto, coco, roboflow, voc, labelimg, yolo, or sor (OTDR)"),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Say what a dataset holds before anything trains: a detection dataset's layout, splits,
    boxes per class, box sizes and problems; or a folder of OTDR .sor files."""
    from pydantic import ValidationError

    from sightline.data.errors import DatasetError
    from sightline.data.layouts import find_dataset
    from sightline.data.layouts.summary import renderables, summarize
    from sightline.data.otdr_sor_folder import describe_sor_folder
    from sightline.data.sources import DetectionData, OTDRData

    root = path.resolve()
    if layout == "sor" or (layout == "auto" and _holds_sor_files(root)):
        described = describe_sor_folder(OTDRData(format="sor", root=root), Path.cwd())
        lines = [f"{key}: {value}" for key, value in described.items() if key != "problems"]
        lines += [f"problem: {p}" for p in described["problems"]] or ["no problems found"]
        typer.echo(json.dumps(described, indent=2) if as_json else "\n".join(lines))
        return
    try:
        found = find_dataset(DetectionData(format=layout, root=root), Path.cwd())
    except (DatasetError, ValidationError) as exc:
        console.print(f"[red]cannot read {escape(str(path))}:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    summary = summarize(found)
    train = found.splits.get("train")
    sizes = _sizes_from_data(train.coco) if train is not None else None
    if as_json:
        typer.echo(json.dumps({**summary.as_dict(), "sizes_from_data": sizes}, indent=2))
        return
    for item in renderables(summary):
        console.print(item)
    if sizes is not None:
        console.print(
            f"from the training boxes (models.<family>.image_size / anchor_sizes: null): "
            f"image_size {sizes['image_size']}, anchor_sizes {sizes['anchor_sizes']}"
        )


def _sizes_from_data(train_coco: dict) -> dict | None:
    """What `image_size: null` and the R-CNN family's `anchor_sizes: null` resolve to (the
    training stage's own resolvers); None without images or boxes."""
    from sightline.models.anchors import image_size_from_data
    from sightline.models.faster_rcnn import anchor_sizes_from_train_boxes

    if not train_coco.get("images"):
        return None
    params = {"image_size": image_size_from_data(train_coco), "anchor_sizes": None}
    resolved = anchor_sizes_from_train_boxes(params, train_coco)
    if resolved.get("anchor_sizes") is None:  # no box to size them by
        return None
    return {"image_size": resolved["image_size"], "anchor_sizes": resolved["anchor_sizes"]}


def _holds_sor_files(root: Path) -> bool:
    return root.is_dir() and any(p.suffix.lower() == ".sor" for p in root.rglob("*"))


@app.command()
def validate(
    params: ParamsOption = None,
    group: Annotated[
        str,
        typer.Option(
            help="which dataset: detection (COCO / VOC), otdr (traces) or identification "
            "(one folder per person)"
        ),
    ] = "detection",
) -> None:
    """Check a dataset with Great Expectations (fails on any broken expectation)."""
    _stage("validate", "--group", group, params=params)


@app.command()
def train(family: str, params: ParamsOption = None, verbose: VerboseOption = False) -> None:
    """Train one model family on Ray Train, tracked in MLflow."""
    _stage("train", "--family", family, params=params, verbose=verbose)


@app.command()
def evaluate(family: str, params: ParamsOption = None, verbose: VerboseOption = False) -> None:
    """COCO-evaluate a trained family on the validation split."""
    _stage("evaluate", "--family", family, params=params, verbose=verbose)


@app.command()
def tune(family: str, params: ParamsOption = None, verbose: VerboseOption = False) -> None:
    """Ray Tune search over a family's `tune.spaces` (child runs under one MLflow parent run);
    the best trial is registered, and becomes champion only if it beats the champion."""
    _stage("tune", "--family", family, params=params, verbose=verbose)


@app.command()
def register(family: str, params: ParamsOption = None) -> None:
    """Register a trained family; `champion` moves only if it beats the current one."""
    _stage("register", "--family", family, params=params)


@app.command()
def repro(
    targets: Annotated[
        list[str] | None, typer.Argument(help="DVC stages to reproduce (default: all)")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """`dvc repro TARGETS` with every stage joining one Ray instance: started here (or
    RAY_ADDRESS joined) and handed to the stages as RAY_ADDRESS, instead of a local Ray start
    of seconds in each training stage; and the stages forked from one process that has
    imported the stack (sightline.stage_server), instead of importing it in each stage."""
    import ray

    from sightline.cluster import ensure_ray
    from sightline.stage_server import running_server

    ensure_ray()  # exports RAY_ADDRESS (and Ray's auth mode) for the stages
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    try:
        # Started after Ray: the server's environment is the one the stages get.
        with running_server():
            command = [sys.executable, "-m", "dvc", "repro", *(targets or [])]
            code = subprocess.run(command, check=False).returncode
    finally:
        ray.shutdown()
    raise typer.Exit(code)


TargetsOption = Annotated[
    list[str] | None,
    typer.Option("--targets", help="DVC stages to retrain (repeatable; default: all)"),
]
ServeUrlOption = Annotated[
    str | None,
    typer.Option(
        "--serve-url",
        help="the serving app to reload when a champion moves (default: $SIGHTLINE_SERVE_URL)",
    ),
]
NoPushOption = Annotated[bool, typer.Option("--no-push", help="do not `dvc push` the outputs")]
SubmitOption = Annotated[
    bool, typer.Option("--submit", help="run it on the Ray cluster through the Ray Jobs API")
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        help="the Ray Jobs API for --submit, e.g. http://HEAD:8265 "
        "(default: $RAY_JOB_ADDRESS, else $RAY_ADDRESS)"
    ),
]
JobPythonOption = Annotated[
    str,
    typer.Option(
        "--python",
        envvar="SIGHTLINE_JOB_PYTHON",
        help="the Python the submitted job runs on the cluster (with Sightline installed)",
    ),
]


@app.command()
def retrain(
    targets: TargetsOption = None,
    serve_url: ServeUrlOption = None,
    no_push: NoPushOption = False,
    no_commit: Annotated[
        bool, typer.Option("--no-commit", help="do not `git commit` dvc.lock and the metrics")
    ] = False,
    submit: SubmitOption = False,
    address: AddressOption = None,
    python: JobPythonOption = "python",
    tag: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE tag for the summary run (repeatable)")
    ] = None,
    params: ParamsOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Retrain as one job: dvc pull -> validate -> dvc repro (a no-op when data and params did
    not change) -> register -> reload the server -> dvc push -> git commit dvc.lock, then a
    summary (MLflow run, kind=retrain; reports/retrain/<time>.json). Exit code != 0 names the
    step that failed."""
    from sightline.retrain.job import RetrainJob, RetrainOptions

    settings = _settings(params)
    pairs = [item.partition("=") for item in tag or []]
    if any(not key or not sep for key, sep, _ in pairs):
        error(f"--tag takes KEY=VALUE, got {tag}")
        raise typer.Exit(2)
    options = RetrainOptions(
        targets=list(targets or []),
        serve_url=serve_url,
        push=not no_push,
        commit=not no_commit,
        verbose=verbose,
        tags={key: value for key, _, value in pairs},
    )
    log = lambda line: console.print(escape(line), soft_wrap=True, highlight=False)  # noqa: E731
    if submit:
        from sightline.retrain.submit import SubmitError
        from sightline.retrain.submit import submit as submit_job

        try:
            raise typer.Exit(submit_job(settings, options, address, python, log))
        except SubmitError as exc:
            error(str(exc))
            raise typer.Exit(2) from None
    report = RetrainJob(settings, options, log).run()
    console.print(f"summary: {escape(str(report.report_path))}", soft_wrap=True, highlight=False)
    if report.status != "ok":
        error(report.error or f"step {report.failed_step} failed")
        raise typer.Exit(1)


@app.command()
def schedule(
    cron: Annotated[str, typer.Option(help='a crontab line\'s five time fields, e.g. "0 2 * * *"')],
    submit: SubmitOption = False,
    address: AddressOption = None,
    targets: TargetsOption = None,
    serve_url: ServeUrlOption = None,
    no_push: NoPushOption = False,
    once_now: Annotated[
        bool, typer.Option("--once-now", help="run one tick now and exit with its outcome")
    ] = False,
    params: ParamsOption = None,
) -> None:
    """Run `sightline retrain` (or --submit it) at every cron time, never two at once; one line
    per tick on the console and in logs/schedule.log."""
    from sightline.retrain.schedule import ScheduleError, run_schedule

    settings = _settings(params)
    args = [arg for target in targets or [] for arg in ("--targets", target)]
    args += ["--serve-url", serve_url] if serve_url else []
    args += ["--no-push"] if no_push else []
    args += ["--submit"] if submit else []
    args += ["--address", address] if address else []
    args += ["--params", str(params)] if params else []
    try:
        code = run_schedule(
            cron,
            settings.project_root.resolve(),
            args,
            settings.path("logs") / "schedule.log",
            once_now=once_now,
        )
    except ScheduleError as exc:
        error(str(exc))
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(help="a script in bench/: detectors, otdr, serving, tuning..."),
    ],
    params: ParamsOption = None,
) -> None:
    """Run a benchmark from bench/ (results in docs/benchmarks/<name>.md and MLflow); options
    after the name go to the script (e.g. `sightline bench ladder --max-epochs 8`)."""
    settings = _settings(params)
    script = settings.path("bench") / f"{name}.py"
    # bench/common.py holds the scripts' shared helpers, *_locustfile.py locust's users: they
    # are not benchmarks.
    known = sorted(
        p.stem
        for p in script.parent.glob("*.py")
        if p.stem != "common" and not p.stem.endswith("_locustfile")
    )
    if name not in known:
        error(f"no benchmark {name!r}; have {known}")
        raise typer.Exit(2)
    command = [sys.executable, str(script)] + (["--params", str(params)] if params else [])
    command += ctx.args
    raise typer.Exit(subprocess.run(command, check=False).returncode)


@app.command()
def serve(params: ParamsOption = None) -> None:
    """Start the Ray Serve app (HTTP) with the registered champions; refuses a port that is
    already served (one server per port)."""
    from sightline.serve.app import PortInUse, run

    try:
        run(_settings(params), blocking=True)
    except PortInUse as exc:
        error(str(exc))
        raise typer.Exit(1) from None


@app.command()
def enroll(
    name: Annotated[str, typer.Argument(help="the person's identity, e.g. 'Ada Lovelace'")],
    images: Annotated[list[Path], typer.Argument(help="one or more face images of that person")],
    url: Annotated[
        str | None, typer.Option(help="the server (default: http://<serve.host>:<serve.port>)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="bearer token (default: $SIGHTLINE_API_TOKEN)")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="write into serve.gallery_path directly, no server")
    ] = False,
    params: ParamsOption = None,
) -> None:
    """Enroll a person's face images for identification, without retraining: through the
    running server (POST /v1/faces/enroll), or with --local straight into the gallery file
    with the registered champion embedder."""
    from sightline.serve.errors import ApiError

    settings = _settings(params)
    missing = [str(path) for path in images if not path.is_file()]
    if missing:
        error(f"no such image file: {', '.join(missing)}")
        raise typer.Exit(2)
    try:
        if local:
            from sightline.serve.faces import enroll_local  # torch: only when needed

            result = enroll_local(
                settings.tracking_uri,
                settings.path(settings.serve.gallery_path),
                name,
                images,
                max_bytes=settings.serve.max_upload_bytes,
                max_pixels=settings.serve.max_image_pixels,
            )
        else:
            result = _enroll_over_http(
                url or f"http://{settings.serve.host}:{settings.serve.port}",
                token or settings.api_token,
                name,
                images,
            )
    except ApiError as exc:
        error(exc.message)
        raise typer.Exit(1) from None
    model = result["model"]
    console.print(
        f"enrolled {result['added']} image(s) of {result['identity']!r} "
        f"({result['templates']} templates) with {model['name']} v{model['version']}",
        soft_wrap=True,
    )


def _enroll_over_http(url: str, token: str | None, name: str, images: list[Path]) -> dict:
    import httpx

    from sightline.serve.errors import ApiError

    files = [("image", (path.name, path.read_bytes())) for path in images]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/v1/faces/enroll",
            data={"identity": name},
            files=files,
            headers=headers,
            timeout=120,
        )
    except httpx.TransportError as exc:
        raise ApiError(
            "no_server",
            f"cannot reach {url} ({exc}); start it with `sightline serve`, or use --local",
        ) from None
    body = response.json() if "json" in response.headers.get("content-type", "") else {}
    if response.status_code != 200:
        detail = body.get("error", {})
        raise ApiError(
            detail.get("code", f"http_{response.status_code}"),
            f"{response.status_code} {detail.get('message', response.text[:200])}",
        )
    return body


@otdr_app.command("detect")
def otdr_detect(
    file: Annotated[Path, typer.Argument(help="a Telcordia SR-4731 .sor file (v1 or v2)")],
    model: Annotated[
        str | None, typer.Option(help="a model family (default: the registered champion)")
    ] = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="use artifacts/models/<model> (default otdr_detector)"),
    ] = False,
    score_threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="default: serve.default_score_threshold")
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Detect the events of a .sor trace with the registered champion (or a family, or a
    local trained model) and print them in metres."""
    from sightline.data.sor import SorError, read_sor
    from sightline.serve.otdr import detect_events, load_otdr_model  # torch: only when needed

    settings = _settings(params)
    try:
        trace = read_sor(file)
    except SorError as exc:
        error(str(exc))
        raise typer.Exit(2) from None
    try:
        loaded = load_otdr_model(settings, model, local=local)
    except (LookupError, FileNotFoundError) as exc:
        error(str(exc))
        raise typer.Exit(2) from None
    threshold = (
        settings.serve.default_score_threshold if score_threshold is None else score_threshold
    )
    events = detect_events(
        loaded.model, trace.samples, trace.resolution_m, loaded.class_names, threshold
    )
    table = Table(
        title=f"{file.name}: {len(trace.samples)} samples every {trace.resolution_m:.3f} m "
        f"({trace.length_m / 1000:.2f} km), {trace.wavelength_nm:g} nm",
        caption=f"{loaded.description}; score >= {threshold:g}; the file's own KeyEvents table "
        f"lists {len(trace.key_events)} event(s)",
    )
    for column in ("#", "type", "position (m)", "extent (m)", "score"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for number, event in enumerate(events, start=1):
        table.add_row(
            str(number),
            event.type,
            f"{event.position_m:.2f}",
            f"{event.extent_m:.2f}",
            f"{event.score:.3f}",
        )
    console.print(table)


@app.command()
def summary(params: ParamsOption = None) -> None:
    """Print the metrics of every evaluated family, per task group, and where to look next."""
    from sightline.artifacts import metrics_path, registry_report_path
    from sightline.workloads import all_workloads

    settings = _settings(params)
    shown = 0
    for workload in all_workloads():
        group = workload.name
        families = [f for f in workload.families(settings) if metrics_path(settings, f).is_file()]
        if not families:
            continue
        shown += 1
        table = Table(title=f"Sightline {group}: {settings.evaluate.split} metrics")
        table.add_column("metric")
        for family in families:
            table.add_column(family, justify="right")
        results = {f: _read_json(metrics_path(settings, f)) for f in families}
        for name in workload.summary_metrics:
            table.add_row(name, *[_cell(results[f].get(name)) for f in families])
        registry = [_read_json(registry_report_path(settings, group, f)) for f in families]
        table.add_row(
            "registered",
            *[
                f"v{r['version']}{' (champion)' if r.get('promoted') else ''}" if r else "-"
                for r in registry
            ],
        )
        console.print(table)
    if not shown:
        console.print("No family has been evaluated yet: run `make demo` (or `dvc repro`).")
    console.print(
        "\nCompare runs:  .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"
        "  -> http://127.0.0.1:5000\n"
        "Serve models:  .venv/bin/sightline serve"
        f"  -> POST an image to http://{settings.serve.host}:{settings.serve.port}/v1/detect",
        soft_wrap=True,
        highlight=False,
    )


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    app()
