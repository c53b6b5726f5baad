"""The /v1/faces routes and the Faces deployment's logic, in one process: the FastAPI routes of
faces_routes.py over the real Faces class (its Serve decorator aside), a real MLflow registry
in a temp dir and a real gallery file. Serve itself is exercised by
tests/integration/test_identification.py.

The embedders are pixel_template models (the embedding is the normalised image), so distances
are predictable: an image and a slightly noisy copy are close, two noise images are far.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sightline.models import build_model
from sightline.serve.faces import Faces, gallery_file
from sightline.serve.faces_routes import MAX_ENROLL_IMAGES, add_faces_routes
from sightline.track.registry import log_model, register
from sightline.track.runs import experiment_id
from sightline.workloads import workload_for
from tests.api import routes_client
from tests.conftest import own_store

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GAMMA = 0.3
MAX_UPLOAD = 200_000


def register_embedder(store: Path, image_size: int, gamma: float = GAMMA) -> None:
    params = {"image_size": image_size, "channels": 3}
    model = build_model("pixel_template", 1, **params)
    with mlflow.start_run(
        experiment_id=experiment_id("sightline-identification", store / "artifacts")
    ):
        uri = log_model(
            model,
            family="pixel_template",
            num_classes=1,
            model_params=params,
            metadata={"task": "embed", "gamma": gamma, "rule": "mean", "target_far": 0.01},
        )
    register(
        uri, workload=workload_for("identification"), family="pixel_template",
        metrics={"dir_at_far_1e-2": 0.1, "val_dir_at_far_1e-2": 0.1},
        tags={}, eval_scope="test",
    )  # fmt: skip


def face(seed: int, size: tuple[int, int] = (40, 48), noise: float = 0.0) -> np.ndarray:
    """A 'person' is a noise pattern; `noise` jitters it (another photo of the same person)."""
    base = np.random.default_rng(seed).integers(0, 256, (12, 10, 3)).astype(np.float64)
    jitter = np.random.default_rng(seed + 1000).normal(0, noise, base.shape)
    small = np.clip(base + jitter, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.NEAREST))


def png(pixels: np.ndarray, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def build(store: Path, token: str | None = TOKEN) -> tuple[TestClient, Faces]:
    faces = Faces.func_or_class(mlflow.get_tracking_uri(), str(store / "gallery"))
    client = routes_client(add_faces_routes, faces, api_token=token, max_upload_bytes=MAX_UPLOAD)
    return client, faces


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real MLflow store whose champion is a pixel_template at 16 px (gamma GAMMA)."""
    root = tmp_path_factory.mktemp("faces-registry")
    with own_store(root):
        register_embedder(root, image_size=16)
        yield root


@pytest.fixture
def api(registry: Path, tmp_path: Path) -> Iterator[TestClient]:
    client, _ = build(tmp_path)  # a fresh gallery per test
    with client:
        yield client


def enroll(api: TestClient, identity: str, *images: bytes, headers=AUTH) -> httpx.Response:
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return api.post("/v1/faces/enroll", data={"identity": identity}, files=files, headers=headers)


def identify(api: TestClient, image: bytes) -> dict:
    response = api.post("/v1/faces/identify", files={"image": ("q.png", image, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


def test_without_a_champion_the_routes_say_how_to_get_one(
    tmp_path: Path, mlflow_store: str
) -> None:
    client, _ = build(tmp_path)
    response = client.post("/v1/faces/identify", files={"image": ("q.png", png(face(1)))})
    assert error_code(response, 503) == "no_champion"


def test_enroll_then_identify_verify_and_delete(api: TestClient) -> None:
    assert identify(api, png(face(1)))["identity"] == "unknown"  # nobody enrolled yet
    assert identify(api, png(face(1)))["distance"] is None

    response = enroll(api, "alice", png(face(1)), png(face(1, (30, 30), noise=4), "L"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["identity"] == "alice" and body["added"] == 2 and body["templates"] == 2
    assert body["model"] == {
        "name": "sightline-embedder",
        "version": "1",
        "family": "pixel_template",
    }
    assert enroll(api, "bob", png(face(2), fmt="JPEG")).status_code == 200

    seen = identify(api, png(face(1, (64, 80), noise=3)))  # another photo, other size
    assert seen["identity"] == "alice" and seen["known"] and seen["distance"] < GAMMA
    assert seen["gamma"] == GAMMA and seen["rule"] == "mean"
    assert [c["identity"] for c in seen["candidates"]] == ["alice", "bob"]
    stranger = identify(api, png(face(3)))
    assert stranger["identity"] == "unknown" and not stranger["known"]
    assert stranger["distance"] >= GAMMA

    files = [("image", ("a.png", png(face(1)))), ("image", ("b.png", png(face(1, noise=3))))]
    same = api.post("/v1/faces/verify", files=files).json()
    assert same["same"] and same["distance"] < GAMMA and "identity" not in same
    files = [("image", ("a.png", png(face(1)))), ("image", ("b.png", png(face(2))))]
    assert not api.post("/v1/faces/verify", files=files).json()["same"]
    claim = api.post(
        "/v1/faces/verify", data={"identity": "bob"}, files={"image": ("q.png", png(face(2)))}
    ).json()
    assert claim["same"] and claim["identity"] == "bob"

    assert api.get("/v1/faces").json() == {
        "identities": 2,
        "templates": 3,
        "model_version": "sightline-embedder/v1",
    }
    deleted = api.delete("/v1/faces/alice", headers=AUTH)
    assert deleted.json() == {"identity": "alice", "removed": 2}
    assert identify(api, png(face(1)))["identity"] == "unknown"


def test_mutating_routes_need_the_token(api: TestClient) -> None:
    assert error_code(enroll(api, "eve", png(face(5)), headers={}), 401) == "missing_token"
    wrong = {"Authorization": "Bearer nope"}
    assert error_code(enroll(api, "eve", png(face(5)), headers=wrong), 401) == "invalid_token"
    assert enroll(api, "eve", png(face(5))).status_code == 200
    assert error_code(api.delete("/v1/faces/eve"), 401) == "missing_token"
    assert error_code(api.delete("/v1/faces/eve", headers=wrong), 401) == "invalid_token"
    assert api.get("/v1/faces").json()["identities"] == 1  # nothing was deleted


def test_a_server_without_a_token_refuses_enrollment(registry: Path, tmp_path: Path) -> None:
    client, _ = build(tmp_path, token=None)
    assert error_code(enroll(client, "eve", png(face(5))), 401) == "token_not_configured"


def test_bad_enrollments_are_4xx_and_store_nothing(api: TestClient) -> None:
    assert enroll(api, "carol", png(face(7))).status_code == 200
    good, whole = png(face(8)), png(face(9))
    broken = whole[: len(whole) // 2]  # truncated pixel data
    cases = {
        "missing_identity": api.post(
            "/v1/faces/enroll", files={"image": ("a.png", good)}, headers=AUTH
        ),
        "missing_image": api.post(
            "/v1/faces/enroll",
            data={"identity": "dan"},
            files={"photo": ("a.png", good)},
            headers=AUTH,
        ),
        "reserved_identity": enroll(api, "Unknown", good),
        "invalid_enrollment": enroll(api, "dan\x07", good),
        "corrupt_image": enroll(api, "dan", good, broken),
        "not_an_image": enroll(api, "dan", b"hello, not an image"),
        "invalid_multipart": enroll(api, "dan", *[good] * (MAX_ENROLL_IMAGES + 1)),
        "image_too_large": enroll(api, "dan", np.zeros(MAX_UPLOAD + 1, np.uint8).tobytes()),
        "unsupported_content_type": api.post(
            "/v1/faces/enroll", json={"identity": "dan"}, headers=AUTH
        ),
    }
    statuses = {"not_an_image": 415, "unsupported_content_type": 415, "image_too_large": 413}
    for code, response in cases.items():
        assert error_code(response, statuses.get(code, 400)) in {code, "body_too_large"}, code
    message = cases["corrupt_image"].json()["error"]["message"]
    assert message.startswith("image 2 (1.png):"), message
    assert api.get("/v1/faces").json()["identities"] == 1  # only carol


def test_bad_queries_are_4xx(api: TestClient) -> None:
    assert enroll(api, "carol", png(face(7))).status_code == 200
    raw = api.post(
        "/v1/faces/identify", content=png(face(7)), headers={"Content-Type": "image/png"}
    )
    assert raw.json()["identity"] == "carol"  # a raw image body works too
    assert error_code(api.post("/v1/faces/identify"), 400) == "empty_body"
    bad = api.post("/v1/faces/identify", files={"image": ("x.png", b"\x89PNG broken")})
    assert bad.status_code in (400, 415)
    three = [("image", (f"{i}.png", png(face(i)))) for i in range(3)]
    assert error_code(api.post("/v1/faces/verify", files=three), 400) == "wrong_image_count"
    nobody = api.post(
        "/v1/faces/verify", data={"identity": "zed"}, files={"image": ("q.png", png(face(7)))}
    )
    assert error_code(nobody, 404) == "unknown_identity"
    assert error_code(api.delete("/v1/faces/zed", headers=AUTH), 404) == "unknown_identity"


def test_enrollments_survive_a_restart_and_a_new_champion_reembeds_them(
    tmp_path: Path, mlflow_store: str
) -> None:
    store = tmp_path
    register_embedder(store, image_size=16)
    client, first = build(store)
    assert enroll(client, "alice", png(face(1)), png(face(1, noise=4))).status_code == 200
    first._gallery.close()

    register_embedder(store, image_size=24, gamma=0.25)  # v2; the champion only moves if better
    mlflow.MlflowClient().set_registered_model_alias("sightline-embedder", "champion", "2")
    client, second = build(store)  # a restart: the same gallery file, a new champion
    assert gallery_file(store / "gallery").is_file()
    info = client.get("/v1/faces").json()
    assert info == {"identities": 1, "templates": 2, "model_version": "sightline-embedder/v2"}
    assert second._gallery.embedding_dim == 3 * 24 * 24  # re-embedded by the new model
    seen = identify(client, png(face(1, noise=3)))
    assert seen["identity"] == "alice" and seen["gamma"] == 0.25
    assert seen["model"]["version"] == "2"


def test_a_person_shows_their_templates_as_thumbnails(api: TestClient) -> None:
    big = face(1, (200, 240))
    name = "Ada / Lovelace"  # a "/" in the name: the thumbnail URLs still reach her
    assert enroll(api, name, png(big), png(face(1, (30, 30), noise=4), "L")).status_code == 200
    response = api.get(f"/v1/faces/people/{name}", headers=AUTH)
    assert response.status_code == 200, response.text
    person = response.json()
    assert person["identity"] == name and person["templates"] == 2
    thumbnails = person["thumbnails"]
    assert [t["position"] for t in thumbnails] == [0, 1]
    assert person["enrolled_at"] == thumbnails[0]["enrolled_at"]
    assert thumbnails[0]["url"] == "/v1/faces/people/Ada%20%2F%20Lovelace/templates/0.jpg"
    sizes = []
    for thumbnail in thumbnails:
        image = api.get(thumbnail["url"], headers=AUTH)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.headers["cache-control"] == "no-store"
        sizes.append(Image.open(io.BytesIO(image.content)).size)
    # Stored at most TEMPLATE_MAX_SIDE (200 x 240 -> 213 x 256), served at most 96 a side.
    assert sizes == [(80, 96), (30, 30)]


def test_unknown_people_and_templates_are_404_and_faces_need_the_token(api: TestClient) -> None:
    assert enroll(api, "bob", png(face(2))).status_code == 200
    assert error_code(api.get("/v1/faces/people/zed", headers=AUTH), 404) == "unknown_identity"
    missing = api.get("/v1/faces/people/zed/templates/0.jpg", headers=AUTH)
    assert error_code(missing, 404) == "unknown_identity"
    beyond = api.get("/v1/faces/people/bob/templates/1.jpg", headers=AUTH)
    assert error_code(beyond, 404) == "unknown_template"
    assert "'bob' has no template 1" in beyond.json()["error"]["message"]
    negative = api.get("/v1/faces/people/bob/templates/-1.jpg", headers=AUTH)
    assert error_code(negative, 404) == "unknown_identity"  # "bob/templates/-1.jpg" is nobody
    assert error_code(api.get("/v1/faces/people/bob"), 401) == "missing_token"
    assert error_code(api.get("/v1/faces/people/bob/templates/0.jpg"), 401) == "missing_token"
