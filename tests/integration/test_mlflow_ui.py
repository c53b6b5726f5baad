"""The MLflow UI as a user first sees it, in headless Chromium: a Sightline experiment opens on
its training runs, each with its DVC dataset in the Dataset column, and the documented filter
`tags.kind = 'training'` leaves the benchmark run out."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from sightline.track.lineage import DvcDataset
from sightline.track.runs import EXPERIMENT_KIND, experiment_id, start_training_run, ui_path
from tests.conftest import own_store
from tests.integration.browser import chromium, require_chromium, wait_for
from tests.integration.serving import free_port

DVC_HASH = "0123456789abcdef0123456789abcdef.dir"
EXPERIMENT = "sightline-detection"
SERVER_START_S = 90.0
COLUMN_HEADERS = ("css selector", "[role='columnheader']")


@pytest.fixture
def ui_store(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A store with two training runs logged as the train stage logs them, and a benchmark
    run; yields (tracking URI, experiment id)."""
    require_chromium()
    data_root = tmp_path / "data" / "detection"
    data_root.mkdir(parents=True)
    with own_store(tmp_path) as uri:
        exp = experiment_id(EXPERIMENT, tmp_path / "mlartifacts")
        for family in ("ssd", "yolo"):
            dataset = DvcDataset(
                name="data/detection",
                data_root=data_root,
                dvc_hash=DVC_HASH,
                columns={"image": "string", "boxes": "string", "labels": "string"},
                split_sizes={"train_images": 24},
            )
            run_id = start_training_run(
                family,
                experiment=EXPERIMENT,
                params={"lr": 0.01},
                tags={"dvc_data_hash": DVC_HASH},
                dataset=dataset,
            )
            with mlflow.start_run(run_id=run_id):
                mlflow.log_metric("map", 0.25)
        with mlflow.start_run(
            experiment_id=exp, run_name="bench-detectors", tags={"kind": "benchmark"}
        ):
            mlflow.log_metric("map", 0.25)
        yield uri, exp


@pytest.fixture
def mlflow_ui(ui_store: tuple[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`mlflow server` on that store, on a free loopback port; yields (base URL, experiment)."""
    uri, exp = ui_store
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = (tmp_path / "mlflow-server.log").read_text()
                    raise RuntimeError(f"mlflow server did not start: {output}") from None
                time.sleep(0.5)
        yield base, exp
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _run_rows(driver) -> dict[str, str]:
    """Run name -> the text of its row in the runs table. The grid draws a row in pieces
    (pinned and scrolling columns) that share a row-id; the run name is the link in it."""
    texts: dict[str, list[str]] = defaultdict(list)
    names: dict[str, str] = {}
    for piece in driver.find_elements("css selector", "div[role='row'][row-id]"):
        row_id = piece.get_attribute("row-id")
        texts[row_id].append(piece.text)
        for link in piece.find_elements("css selector", "a"):
            if link.text and row_id not in names:
                names[row_id] = link.text
    return {name: "\n".join(texts[row_id]) for row_id, name in names.items()}


def test_experiment_opens_on_training_runs_with_their_dataset(mlflow_ui) -> None:
    base, exp = mlflow_ui
    (key, kind), = EXPERIMENT_KIND.items()  # fmt: skip
    assert mlflow.get_experiment(exp).tags[key] == kind
    with chromium() as driver:
        driver.get(base + "/" + ui_path(exp))
        wait_for(driver, lambda d: "/runs" in d.current_url, "the experiment did not open on runs")
        wait_for(driver, lambda d: {"ssd", "yolo"} <= set(_run_rows(d)), "no training runs shown")
        wait_for(
            driver,
            lambda d: "Dataset" in {h.text.strip() for h in d.find_elements(*COLUMN_HEADERS)},
            "the runs table has no Dataset column",
        )
        dataset = f"data/detection ({DVC_HASH})"
        rows = wait_for(
            driver,
            lambda d: (
                (rows := _run_rows(d))
                and all(dataset in rows.get(family, "") for family in ("ssd", "yolo"))
                and rows
            ),
            "the Dataset column does not show the training runs' DVC dataset",
        )
        assert "bench-detectors" in rows  # every run is there without a filter

        only_training = urllib.parse.quote("tags.kind = 'training'")
        driver.get(f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning"
                   f"&searchFilter={only_training}")  # fmt: skip
        wait_for(
            driver,
            lambda d: set(_run_rows(d)) == {"ssd", "yolo"},
            "the filter tags.kind = 'training' did not leave the benchmark run out",
        )
