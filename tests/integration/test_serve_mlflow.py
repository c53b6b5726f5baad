"""A registered Sightline model works from MLflow itself: `mlflow models serve` on the
champion alias (models from code: MLflow runs pyfunc_model.py, which rebuilds the network from
the weights and record; nothing unpickled), answering POST /invocations with the model's own
logged input example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from tests.conftest import own_store
from tests.integration.serving import free_port
from tests.unit.test_faces_routes import register_embedder

STARTUP_S = 120  # a loaded 2-core machine
IMAGE_SIZE = 16


def wait_for_ping(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer /ping within {STARTUP_S} s")


def test_mlflow_models_serve_answers_the_champions_input_example(tmp_path: Path) -> None:
    with own_store(tmp_path) as tracking_uri:
        register_embedder(tmp_path, image_size=IMAGE_SIZE)
        model_uri = "models:/sightline-embedder@champion"
        model_dir = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path)))
        example = (model_dir / "serving_input_example.json").read_text()
        port = free_port()
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
        # MLflow execs `uvicorn`: the venv's bin must be on PATH, as in an activated venv.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
        log = (tmp_path / "mlflow-serve.log").open("w")
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_ping(url, server)
            json_body = {"Content-Type": "application/json"}
            answer = httpx.post(f"{url}/invocations", content=example, headers=json_body,
                                timeout=60)  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    assert answer.status_code == 200, answer.text
    embeddings = np.asarray(answer.json()["predictions"], dtype=np.float32)
    faces = np.asarray(json.loads(example)["inputs"])
    assert faces.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert embeddings.shape[0] == 1 and embeddings.shape[1] > 0
    assert np.isfinite(embeddings).all()
