"""OTDR end to end on real components: the trace dataset validated, both families (window
classifier, 1-D detector) trained tiny through the one training loop (Ray Train's local mode),
evaluated and registered in a temp MLflow store by the pipeline stages, benchmarked, then
served by Ray Serve on loopback: a .sor file built here goes through POST /v1/otdr/events over
real HTTP, bad uploads get 4xx JSON errors and the next good upload is still answered.
`sightline otdr detect` runs the registered champion on the same file.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from sightline.cli import app as cli
from sightline.config import load_settings
from sightline.data.otdr import EVENT_TYPES, load_split
from sightline.data.sor import sor_bytes
from sightline.data.synth.otdr import generate
from sightline.data.synth.params import SynthOTDR
from sightline.pipelines import evaluate, register, train, validate
from tests.api import assert_error
from tests.conftest import REPO_ROOT, own_store
from tests.integration.serving import free_port, served_app
from tests.unit.test_otdr_models import TINY

FAMILIES = ["otdr_window", "otdr_detector"]
TRACES = SynthOTDR(seed=5, train=8, val=4, test=3, num_samples=(1024, 1536))
MAX_SAMPLES = 4096
URL = "/v1/otdr/events"


def write_project(root: Path, port: int) -> Path:
    params = {
        "otdr_data": {"root": "data/otdr"},
        "otdr": {
            "families": FAMILIES,
            # Ray Train local mode (the loop in this process): these tests are about the stages.
            "train": {"epochs": 2, "num_workers": 0, "batch_size": 4, "warmup_iters": 1},
        },
        "models": {f: {k: list(v) if isinstance(v, tuple) else v for k, v in TINY[f][1].items()}
                   for f in FAMILIES},
        "serve": {"port": port, "max_trace_samples": MAX_SAMPLES},
    }  # fmt: skip
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Iterator[Path]:
    """A project whose OTDR stages ran: validate, train, evaluate, register (both families)."""
    root = tmp_path_factory.mktemp("otdr")
    with own_store(root):
        params = write_project(root, free_port())
        generate(root / "data" / "otdr", TRACES)
        assert validate.main(["--group", "otdr", "--params", str(params)]) == 0
        for family in FAMILIES:
            args = ["--family", family, "--params", str(params)]
            for stage in (train, evaluate, register):
                assert stage.main(args) == 0, (stage.__name__, family)
        yield root


def test_stages_wrote_metrics_and_registered_both_families(project: Path) -> None:
    for family in FAMILIES:
        metrics = json.loads((project / "metrics" / f"{family}.json").read_text())
        assert 0 <= metrics["map_50"] <= 1 and "untrained_map_50" in metrics
        assert {f"ap_50_{t}" for t in EVENT_TYPES} | {"false_alarms_per_km"} <= set(metrics)
        report = json.loads((project / "reports/registry/otdr" / f"{family}.json").read_text())
        assert report["registered_model"] == "sightline-otdr"
    runs = mlflow.search_runs(experiment_names=["sightline-otdr"], output_format="list")
    artifacts = {
        a.path
        for r in runs
        if r.info.run_name == "otdr_detector"
        for a in mlflow.MlflowClient().list_artifacts(r.info.run_id, "evaluation")
    }
    assert "evaluation/map_50_vs_snr.png" in artifacts


def test_bench_compares_the_families_on_the_test_traces(project: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_otdr", REPO_ROOT / "bench" / "otdr.py")
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO_ROOT / "bench"))  # the bench scripts import `common`
    sys.modules[spec.name] = bench  # its dataclasses look their module up while defined
    try:
        spec.loader.exec_module(bench)
        assert bench.main(["--params", str(project / "params.yaml")]) == 0
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
        del sys.modules[spec.name]
    report = (project / "docs" / "benchmarks" / "otdr.md").read_text()
    assert "| otdr_window |" in report and "| otdr_detector |" in report
    assert "## Per SNR band" in report and "inference ms / km" in report
    (bench_run,) = mlflow.search_runs(
        experiment_names=["sightline-otdr"], filter_string="tags.kind = 'benchmark'",
        output_format="list",
    )  # fmt: skip
    assert "otdr_detector.map_50" in bench_run.data.metrics


@pytest.fixture(scope="module")
def client(project: Path) -> Iterator[httpx.Client]:
    with served_app(load_settings(project / "params.yaml")) as http:
        yield http


def champion_family(project: Path) -> str:
    reports = [
        json.loads((project / "reports/registry/otdr" / f"{f}.json").read_text()) for f in FAMILIES
    ]
    promoted = [f for f, r in zip(FAMILIES, reports, strict=True) if r["promoted"]]
    return promoted[-1]  # the last family registered that took the alias


def test_a_sor_file_goes_through_the_endpoint(client: httpx.Client, project: Path) -> None:
    trace = load_split(project / "data" / "otdr", "test")[0]
    for version in (1, 2):
        response = client.post(
            URL,
            files={"file": ("link.sor", sor_bytes(trace, version))},
            params={"score_threshold": 0.0},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["name"] == "sightline-otdr"
        assert body["model"]["family"] == champion_family(project)
        assert body["trace"]["num_samples"] == len(trace.samples)
        assert body["trace"]["length_m"] == pytest.approx(trace.length_m, rel=1e-4)
        for event in body["events"]:
            assert event["type"] in EVENT_TYPES and event["score"] >= 0
            assert 0 <= event["position_m"] <= body["trace"]["length_m"]
    window = client.post(
        URL,
        json={"samples": trace.samples.tolist(), "resolution_m": trace.resolution_m},
        params={"model": "otdr_window"},
    )
    assert window.status_code == 200, window.text
    assert window.json()["model"]["family"] == "otdr_window"
    groups = client.get("/v1/models").json()["groups"]
    assert set(groups["otdr"]["families"]) == set(FAMILIES)


def test_bad_uploads_get_4xx_and_the_server_keeps_serving(
    client: httpx.Client, project: Path
) -> None:
    trace = load_split(project / "data" / "otdr", "test")[1]
    data = sor_bytes(trace)
    samples = trace.samples.tolist()
    nan_body = json.dumps({"samples": [*samples[:5], float("nan")], "resolution_m": 1.0})
    cases = [
        (client.post(URL, files={"file": ("empty.sor", b"")}), 400, "empty_file"),
        (client.post(URL, files={"file": ("a.txt", b"no trace here\n" * 9)}), 400, "invalid_sor"),
        (client.post(URL, files={"file": ("cut.sor", data[: len(data) // 3])}), 400, "invalid_sor"),
        (
            client.post(URL, content=nan_body, headers={"Content-Type": "application/json"}),
            422,
            "invalid_trace",
        ),
        (client.post(URL, json={"samples": samples, "resolution_m": 0}), 422, "invalid_trace"),
        (
            client.post(URL, json={"samples": [0.0] * (MAX_SAMPLES + 1), "resolution_m": 1}),
            413,
            "trace_too_long",
        ),
        (client.post(URL, files={"sor": ("a.sor", data)}), 400, "missing_file"),
        (client.post(URL, content=data, headers={"Content-Type": "text/csv"}), 415,
         "unsupported_content_type"),
        (client.post(URL, files={"file": ("a.sor", data)}, params={"model": "yolo"}), 404,
         "unknown_model"),
    ]  # fmt: skip
    for response, status, code in cases:
        assert_error(response, status, code)
    final = client.post(URL, files={"file": ("link.sor", data)})
    assert final.status_code == 200, final.text
    assert final.json()["trace"]["num_samples"] == len(trace.samples)


def test_cli_runs_the_registered_champion_on_a_sor_file(project: Path) -> None:
    trace = load_split(project / "data" / "otdr", "test")[2]
    path = project / "fibre.sor"
    path.write_bytes(sor_bytes(trace, 1))

    result = CliRunner().invoke(
        cli,
        ["otdr", "detect", str(path), "--params", str(project / "params.yaml")],
        env={"COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    assert f"{len(trace.samples)} samples" in result.output
    assert f"({champion_family(project)})" in result.output and "position (m)" in result.output


def test_training_keeps_the_best_epoch_and_stops_when_validation_stalls(
    tmp_path: Path, ray_cluster: str
) -> None:
    """lr 0: the weights never change (the 1-D models have no batch statistics), so no epoch
    after the first scored one (the second: validation_delay 1) scores better; patience 1 stops
    after the third of 5 epochs, and the run records the per-epoch scores and the epoch kept."""
    with own_store(tmp_path):
        path = write_project(tmp_path, free_port())
        params = yaml.safe_load(path.read_text())
        recipe = {"epochs": 5, "lr": 0.0, "patience": 1, "validation_delay": 1}
        params["otdr"]["train"].update(recipe)
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        generate(tmp_path / "data" / "otdr", TRACES)
        assert train.main(["--family", "otdr_window", "--params", str(path)]) == 0
        client = mlflow.MlflowClient()
        (run,) = mlflow.search_runs(experiment_names=["sightline-otdr"], output_format="list")
        history = client.get_metric_history(run.info.run_id, "val_map_50")
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["selected_epoch"] == 1 and run.data.metrics["stopped_early"] == 1
    logged = {k: run.data.params[f"train.{k}"] for k in ("keep_epoch", "patience")}
    assert logged == {"keep_epoch": "best", "patience": "1"}
