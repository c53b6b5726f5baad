"""Scheduled retraining end to end on the local cluster (Ray head + 2 workers, MLflow server on
PostgreSQL, DVC directory remote): every tick is `sightline schedule --once-now --submit`, so
the job goes through the Ray Jobs API with the project as its working_dir, pulls its data from
the DVC remote and pushes what it builds there; the submitter commits dvc.lock here.

A first tick trains and registers the champion and a server (the session's own Ray instance)
serves it; a tick with unchanged data registers nothing; a new data version (more images,
pushed) retrains, registers, and the server answers with the new champion after the job's
reload, with no request dropped meanwhile; a deliberately worse data version (its training
boxes moved off the objects) leaves the champion where it is.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from sightline.config import load_settings
from sightline.data.synth.detection import generate
from tests.integration.cluster import LocalCluster
from tests.integration.dvc_project import copy_project_code
from tests.integration.serving import free_port, served_app
from tests.integration.test_dvc_status import dvc
from tests.integration.test_pipeline_dvc import DETECTION_CHAIN
from tests.integration.tiny import tiny_params, write_params
from tests.unit.test_retrain import GIT_ENV, git, retrain_runs, summary

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

BIN = Path(sys.executable).parent
TOKEN = "retrain-test-token"
MODEL = "sightline-detector"


def new_data_version(root: Path, train_images: int, seed: int) -> None:
    """Regenerate data/detection with another size or seed, `dvc add` it, commit data.dvc."""
    params = tiny_params()
    params["synth"]["detection"].update({"train": train_images, "seed": seed})
    (root / "synth").mkdir(exist_ok=True)  # git-ignored: only the synth settings are read
    settings = load_settings(write_params(root / "synth", params))
    shutil.rmtree(root / "data" / "detection", ignore_errors=True)
    generate(root / "data" / "detection", settings.synth.detection)


def publish_data(root: Path, message: str) -> None:
    dvc(root, "add", "-q", "data")
    dvc(root, "push", "-q")
    git(root, "add", "data.dvc")
    git(root, "commit", "-q", "-m", message)


def tick(root: Path, env: dict[str, str], cluster: LocalCluster) -> dict:
    command = [
        str(BIN / "sightline"), "schedule", "--cron", "0 2 * * *", "--once-now", "--submit",
        "--address", cluster.dashboard_url, "--targets", DETECTION_CHAIN,
        "--params", str(root / "params.yaml"),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "tick: retrain ok" in output and "SUCCEEDED" in output, output[-3000:]
    return {**summary(done.stdout), "tick_wall_s": round(time.monotonic() - started, 1)}


def champion_version(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def served_version(http) -> str:
    models = http.get("/v1/models").json()["models"]
    (card,) = [m for m in models if m["name"] == MODEL and m["champion"]]
    return str(card["version"])


class Traffic(threading.Thread):
    """POST /v1/detect in a loop until stopped; keeps every status code it got."""

    def __init__(self, http_factory, image: bytes) -> None:
        super().__init__(daemon=True)
        self.http_factory, self.image = http_factory, image
        self.codes: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        with self.http_factory() as http:
            while not self.stopped.is_set():
                files = {"image": ("a.png", self.image, "image/png")}
                self.codes.append(http.post("/v1/detect", files=files).status_code)


def test_scheduled_retraining_end_to_end(
    tmp_path: Path,
    local_cluster: LocalCluster,
    ray_cluster: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    root = tmp_path / "project"
    root.mkdir()
    copy_project_code(root)
    port = free_port()
    params = tiny_params(
        epochs=3, num_workers=2, threads_per_worker=1, storage_path=str(local_cluster.storage)
    )
    params["serve"]["port"] = port
    params_path = write_params(root, params)
    (root / ".gitignore").write_text("/synth/\n/mlartifacts/\n/logs/\n")
    remote = local_cluster.dvc_remote / tmp_path.name
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "-d", "cluster", str(remote))
    new_data_version(root, train_images=6, seed=3)
    publish_data(root, "data v1: 6 training images")  # `dvc add` git-ignores data/ first
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "project")
    env = {
        **GIT_ENV,
        **local_cluster.env,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "SIGHTLINE_API_TOKEN": TOKEN,
        "SIGHTLINE_SERVE_URL": f"http://127.0.0.1:{port}",
        "DVC_NO_ANALYTICS": "1",
        "SIGHTLINE_JOB_PYTHON": sys.executable,  # the cluster's interpreter: this venv's
    }
    client = MlflowClient(local_cluster.mlflow_uri)

    serve_url = env.pop("SIGHTLINE_SERVE_URL")  # nothing serves yet
    first = tick(root, env, local_cluster)
    env["SIGHTLINE_SERVE_URL"] = serve_url
    assert first["champions_moved"], first
    assert "train@faster_rcnn" in first["stages_run"]
    v1 = champion_version(client)
    assert "dvc.lock" in git(root, "show", "--name-only", "--format=%s", "HEAD")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", local_cluster.mlflow_uri)
    monkeypatch.setenv("SIGHTLINE_API_TOKEN", TOKEN)
    settings = load_settings(params_path)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 30)).save(buffer, format="PNG")
    with served_app(settings) as http:
        assert served_version(http) == v1

        unchanged = tick(root, env, local_cluster)
        assert unchanged["stages_run"] == [] and unchanged["registered"] == []
        assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
        assert json.loads(dvc(root, "status", "--json", "--with-deps", DETECTION_CHAIN)) == {}

        new_data_version(root, train_images=24, seed=3)
        publish_data(root, "data v2: 24 training images")
        traffic = Traffic(lambda: httpx.Client(base_url=str(http.base_url), timeout=120),
                          buffer.getvalue())  # fmt: skip
        traffic.start()
        try:
            better = tick(root, env, local_cluster)
        finally:
            traffic.stopped.set()
            traffic.join()
        assert better["registered"] and better["champions_moved"], better
        v2 = champion_version(client)
        assert v2 != v1 and served_version(http) == v2
        assert traffic.codes and set(traffic.codes) == {200}, "no request dropped"

        worse_root = root / "data" / "detection" / "annotations"
        for split in ("train.json",):
            coco = json.loads((worse_root / split).read_text())
            for annotation in coco["annotations"]:  # boxes in the corner, off every object
                annotation["bbox"] = [0, 0, 4, 4]
            (worse_root / split).write_text(json.dumps(coco))
        publish_data(root, "data v3: training boxes off the objects")
        worse = tick(root, env, local_cluster)
        assert worse["registered"] and not worse["champions_moved"], worse
        assert champion_version(client) == v2 and served_version(http) == v2

    runs = retrain_runs({"MLFLOW_TRACKING_URI": local_cluster.mlflow_uri})
    assert [r.data.tags["champion_moved"] for r in runs] == ["false", "true", "false", "true"]
    ticks = (("full", first), ("no-op", unchanged), ("new data", better), ("worse data", worse))
    print("tick wall seconds:", {name: report["tick_wall_s"] for name, report in ticks})
    print("retrain step seconds:", json.dumps({name: report["steps"] for name, report in ticks}))
    print(f"requests served during the new-data tick: {len(traffic.codes)}, all 200")
