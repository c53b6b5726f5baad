"""Identification end to end on real components, on a folder-per-identity dataset given by
path outside the project (JPEG, grey and odd-sized images, as real data comes): validated, the
tiny triplet family trained through the one Ray Train loop (P x K batches, 2 DDP workers), γ
calibrated and stored with the model, evaluated and registered in a temp MLflow store, served by
Ray Serve on loopback, and the /v1/faces routes exercised over real HTTP (enroll -> identify at
once -> verify -> delete, bad input, tokens, the CLI) and across a redeploy (the gallery
persists).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from ray import serve
from typer.testing import CliRunner

from sightline.cli import app as cli
from sightline.config import load_settings
from sightline.data.synth.identity import SynthIdentity, render_identity_image
from sightline.pipelines import evaluate, register, train, validate
from sightline.serve.app import APP_NAME, deploy
from sightline.workloads.identification import identity_splits
from tests.conftest import own_store
from tests.integration.serving import free_port, served_app

TOKEN = "let-me-in"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY_EMBEDDER = {"embedding_dim": 8, "width": 4, "stages": 2, "weights": None}
FACES = SynthIdentity(identities=24, images_per_identity=7, image_size=32, seed=9)


def write_project(root: Path, data_root: Path, port: int) -> Path:
    params = {
        "identity_data": {"root": str(data_root), "image_size": 32, "channels": 3},
        "identification": {
            "families": ["triplet"],
            "identities_per_batch": 4,
            "images_per_identity": 3,
            "train": {"epochs": 2, "num_workers": 2, "lr": 0.05, "warmup_iters": 1},
        },
        "models": {"triplet": {**TINY_EMBEDDER, "margin": 0.2, "mining": "batch_hard"}},
        "serve": {"port": port, "gallery_path": str(root / "gallery")},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stages(params: Path, family: str) -> None:
    args = ["--family", family, "--params", str(params)]
    assert validate.main(["--group", "identification", "--params", str(params)]) == 0
    for stage in (train, evaluate, register):
        assert stage.main(args) == 0, stage.__name__


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("identification")
    with own_store(root, TOKEN):
        yield root


def write_folder_dataset(root: Path) -> None:
    """Real-looking data: one folder per person, mixed formats, modes and sizes."""
    formats = [
        ("jpg", "RGB", (41, 53)),
        ("png", "L", (60, 60)),
        ("bmp", "RGB", (37, 29)),
        ("webp", "RGB", (48, 48)),
        ("jpeg", "L", (90, 70)),
        ("PNG", "RGBA", (33, 40)),
    ]
    for person in range(16):
        folder = root / f"Person {person:02d}"
        folder.mkdir(parents=True)
        for index in range(7):
            ext, mode, size = formats[(person + index) % len(formats)]
            pixels = render_identity_image(FACES, 200 + person, index)
            image = Image.fromarray(pixels).resize(size).convert(mode)
            image.save(folder / f"IMG_{index:04d}.{ext}")
        (folder / "notes.txt").write_text("ignored")


@pytest.fixture(scope="module")
def project(store: Path, tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Path:
    """The tiny triplet trained on Ray on the folder dataset, evaluated, registered champion."""
    data = tmp_path_factory.mktemp("photos") / "my_faces"  # not under the project
    write_folder_dataset(data)
    params = write_project(store, data, free_port())
    stages(params, "triplet")
    return params


def test_the_pipeline_runs_on_a_folder_dataset_given_by_path(project: Path) -> None:
    settings = load_settings(project)
    assert not settings.identity_data.root.is_relative_to(settings.project_root)
    report = json.loads(settings.path("reports/validation/identification.json").read_text())
    assert report["success"] and report["row_counts"] == {"identities": 16, "images": 112}
    record = json.loads(settings.path("artifacts/models/triplet/model.json").read_text())
    _, splits = identity_splits(settings)
    assert record["num_classes"] == len(splits.train) == 9
    assert record["tags"]["dvc_data_hash"] == "unknown"  # not versioned by this project
    metrics = json.loads(settings.path("metrics/triplet.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0 and 0.0 <= metrics["dir_at_far_1e-2"] <= 1.0


@pytest.fixture(scope="module")
def api(project: Path) -> Iterator[httpx.Client]:
    with served_app(load_settings(project)) as http:
        yield http


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def face(identity: int, image: int) -> bytes:
    return png(render_identity_image(FACES, identity, image))


def enroll(api: httpx.Client, identity: str, *images: bytes, headers=AUTH) -> httpx.Response:
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return api.post("/v1/faces/enroll", data={"identity": identity}, files=files, headers=headers)


def identify(api: httpx.Client, image: bytes) -> dict:
    response = api.post("/v1/faces/identify", files={"image": ("q.png", image, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_trained_model_carries_gamma_and_is_the_champion(project: Path) -> None:
    settings = load_settings(project)
    record = json.loads(settings.path("artifacts/models/triplet/model.json").read_text())
    assert record["extras"]["target_far"] == 0.01 and record["extras"]["gamma"] > 0
    client = MlflowClient()
    run_ = client.get_run(record["run_id"])
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "loss")] == [0, 1]
    assert mlflow.models.get_model_info(record["model_uri"]).metadata["gamma"] == pytest.approx(
        record["extras"]["gamma"]
    )
    champion = client.get_model_version_by_alias("sightline-embedder", "champion")
    assert champion.tags["family"] == "triplet" and "metric.dir_at_far_1e-2" in champion.tags


def test_enroll_identify_verify_delete_over_http(api: httpx.Client, project: Path) -> None:
    gamma = json.loads(
        load_settings(project).path("artifacts/models/triplet/model.json").read_text()
    )["extras"]["gamma"]
    catalog = api.get("/v1/models").json()["groups"]["identification"]
    assert catalog["champion_version"] == "1"

    response = enroll(api, "Grace Hopper", face(100, 0))
    assert response.status_code == 200, response.text
    assert response.json()["templates"] == 1
    seen = identify(api, face(100, 0))  # the very next call sees the enrollment
    assert seen["identity"] == "Grace Hopper" and seen["known"]
    assert seen["gamma"] == pytest.approx(gamma) and seen["distance"] < gamma

    pair = [("image", ("a.png", face(101, 0))), ("image", ("b.png", face(101, 0)))]
    verified = api.post("/v1/faces/verify", files=pair).json()
    assert verified["same"] and verified["distance"] < 1e-3
    claim = api.post(
        "/v1/faces/verify",
        data={"identity": "Grace Hopper"},
        files={"image": ("q.png", face(100, 0))},
    ).json()
    assert claim["same"] and claim["identity"] == "Grace Hopper"

    deleted = api.delete("/v1/faces/Grace Hopper", headers=AUTH)
    assert deleted.json() == {"identity": "Grace Hopper", "removed": 1}
    assert identify(api, face(100, 0))["identity"] == "unknown"


def test_bad_input_and_tokens_get_4xx_json(api: httpx.Client) -> None:
    broken = face(102, 0)[:200]
    cases = [
        (enroll(api, "Ada", face(102, 0), headers={}), 401, "missing_token"),
        (enroll(api, "Ada", face(102, 0), headers={"Authorization": "Bearer x"}), 401, None),
        (enroll(api, "Ada", broken), 400, "corrupt_image"),
        (enroll(api, "unknown", face(102, 0)), 400, "reserved_identity"),
        (api.post("/v1/faces/identify", content=b"", headers={"Content-Type": "image/png"}), 400,
         "empty_image"),
        (api.post("/v1/faces/identify", content=b"text", headers={"Content-Type": "text/plain"}),
         415, "unsupported_content_type"),
        (api.delete("/v1/faces/Ada"), 401, "missing_token"),
        (api.delete("/v1/faces/Nobody", headers=AUTH), 404, "unknown_identity"),
    ]  # fmt: skip
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error"}
        assert code is None or response.json()["error"]["code"] == code
    assert api.get("/v1/faces").json()["identities"] == 0  # nothing bad was stored
    assert api.get("/healthz").status_code == 200


def test_enrollments_survive_a_redeploy(api: httpx.Client, project: Path) -> None:
    settings = load_settings(project)
    image = settings.path("lovelace.png")
    image.write_bytes(face(103, 0))
    url = f"http://127.0.0.1:{settings.serve.port}"
    result = CliRunner().invoke(
        cli, ["enroll", "Ada Lovelace", str(image), "--url", url, "--params", str(project)]
    )  # the CLI enrolls through the running server with $SIGHTLINE_API_TOKEN
    assert result.exit_code == 0, result.output
    assert "Ada Lovelace" in result.output

    serve.delete(APP_NAME)  # every replica goes, the gallery's only copy is its file
    deploy(settings)  # a fresh Faces replica opens the same gallery
    info = api.get("/v1/faces").json()
    assert info == {"identities": 1, "templates": 1, "model_version": "sightline-embedder/v1"}
    assert identify(api, face(103, 0))["identity"] == "Ada Lovelace"
