"""The console at /ui in headless Chromium, against the real app on loopback (Ray Serve, an
MLflow store made here): every page loads without console errors, an image upload draws boxes
that the score slider re-filters without a new request, a .sor upload draws the trace with its
events and KeyEvents (metres rounded), enroll then identify finds the person and shows their
templates, a frame of Chromium's fake camera goes the way of an upload, a bad upload shows the
API's own message. With SIGHTLINE_UPDATE_SCREENSHOTS=1 the pages are saved to docs/ui/*.png.

The models are registered untrained (tiny faster_rcnn, otdr_detector, pixel_template): the
console is under test, not what the models learned.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
import torch
from PIL import Image
from ray import serve

from sightline.config import Serve, Settings
from sightline.data.otdr import EVENT_TYPES, NUM_CLASSES
from sightline.data.sor import sor_bytes
from sightline.data.synth.otdr import simulate_trace
from sightline.data.synth.params import SynthOTDR
from sightline.models.registry import build_model
from sightline.serve.app import run
from sightline.track.registry import log_model, register
from sightline.track.runs import experiment_id
from sightline.workloads import workload_for
from tests.conftest import REPO_ROOT, own_store
from tests.integration.browser import (
    FAKE_CAMERA,
    chromium,
    console_errors,
    require_chromium,
    screenshot,
    wait_for,
)
from tests.integration.serving import free_port
from tests.unit.test_otdr_models import TINY

pytestmark = pytest.mark.browser

TOKEN = "console-test-token"
CLASS_NAMES = ["circle", "square", "triangle", "star", "cross"]
FACE_SIZE = 32
UPDATE_SCREENSHOTS = os.environ.get("SIGHTLINE_UPDATE_SCREENSHOTS") == "1"
SHOTS = REPO_ROOT / "docs" / "ui"


def _register(group: str, family: str, num_classes: int, params: dict, metadata: dict) -> None:
    workload = workload_for(group)
    torch.manual_seed(0)
    model = build_model(family, num_classes=num_classes, **params)
    with mlflow.start_run(experiment_id=experiment_id(workload.experiment)):
        uri = log_model(
            model, family=family, num_classes=num_classes, model_params=params, metadata=metadata
        )
    metrics = {workload.primary_metric: 0.1, workload.champion_metric: 0.1}
    register(uri, workload=workload, family=family, metrics=metrics, tags={})


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Iterator[str]:
    """The app serving one untrained model per task group; yields its base URL."""
    require_chromium()
    root = tmp_path_factory.mktemp("console")
    with own_store(root, TOKEN):
        _register(
            "detection",
            "faster_rcnn",
            len(CLASS_NAMES) + 1,
            {"width": 8, "representation_size": 64},
            {"class_names": CLASS_NAMES, "task": "detect"},
        )
        otdr_params = {
            k: list(v) if isinstance(v, tuple) else v for k, v in TINY["otdr_detector"][1].items()
        }
        _register(
            "otdr",
            "otdr_detector",
            NUM_CLASSES,
            otdr_params,
            {"class_names": list(EVENT_TYPES), "task": "events1d"},
        )
        _register(
            "identification",
            "pixel_template",
            0,
            {"image_size": FACE_SIZE, "channels": 3},
            {"task": "embed", "gamma": 0.5, "rule": "mean"},
        )
        port = free_port()
        settings = Settings(serve=Serve(port=port, gallery_path=str(root / "gallery")))
        run(settings, blocking=False)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while httpx.get(f"{base}/healthz", timeout=30).json()["models_loaded"] < 3:
                assert time.monotonic() < deadline, "the app did not load the three models"
                time.sleep(0.5)
            yield base
        finally:
            serve.shutdown()


@pytest.fixture(scope="module")
def browser(console: str) -> Iterator:
    with chromium(FAKE_CAMERA) as driver:
        yield driver


def open_page(driver, base: str, page: str) -> None:
    driver.get("about:blank")  # a fresh page even from the same URL (#page alone never reloads)
    driver.get(f"{base}/ui/#{page}")
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"), "no load")
    assert console_errors(driver) == []


def image_file(folder: Path, name: str, seed: int, size: tuple[int, int] = (160, 120)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path = folder / name
    Image.fromarray(pixels).save(path)
    return path


def test_every_page_loads_without_console_errors(browser, console: str) -> None:
    for page in ("detect", "otdr", "faces", "models"):
        open_page(browser, console, page)
        assert browser.find_element("id", f"page-{page}").is_displayed()
    wait_for(
        browser, lambda d: len(d.find_elements("css selector", "#models-table tr")) == 4, "models"
    )
    text = browser.find_element("id", "models-table").text
    assert {"faster_rcnn", "otdr_detector", "pixel_template"} <= set(text.split())
    assert "★ champion" in text
    screenshot(browser, SHOTS / "models.png", UPDATE_SCREENSHOTS)


def test_detect_draws_boxes_that_the_slider_filters(browser, console: str, tmp_path: Path) -> None:
    open_page(browser, console, "detect")
    options = [o.text for o in browser.find_elements("css selector", "#detect-model option")]
    assert options[0].startswith("★ champion: faster_rcnn")
    browser.find_element("id", "detect-files").send_keys(str(image_file(tmp_path, "a.png", 1)))
    canvas = wait_for(
        browser, lambda d: d.find_elements("css selector", "canvas.detections"), "nothing drawn"
    )[0]
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (160, 120)

    def drawn_at(value: float) -> int:
        browser.execute_script(
            "const s = document.getElementById('detect-threshold'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input'));",
            value,
        )
        return int(canvas.get_attribute("data-drawn-boxes"))

    everything = drawn_at(0.0)
    assert everything > 0 and drawn_at(1.0) < everything
    assert drawn_at(0.0) == everything  # re-filtered from the same answer, no new request
    meta = browser.find_element("css selector", ".result .meta").text
    assert "faster_rcnn v1" in meta and " ms" in meta
    screenshot(browser, SHOTS / "detect.png", UPDATE_SCREENSHOTS)
    browser.execute_script(DROP_AN_IMAGE, "page-detect")
    wait_for(
        browser,
        lambda d: (
            d.find_element("css selector", ".result h3").text == "dropped.png"
            and d.find_element("css selector", "canvas.detections").get_attribute("width") == "64"
        ),
        "a dropped image is not drawn",
    )
    assert console_errors(browser) == []


# A 64 x 48 PNG made in the page, dropped on the element with id arguments[0].
DROP_AN_IMAGE = """
const canvas = document.createElement("canvas");
canvas.width = 64; canvas.height = 48;
canvas.getContext("2d").fillRect(8, 8, 24, 16);
const data = atob(canvas.toDataURL("image/png").split(",")[1]);
const files = new DataTransfer();
files.items.add(new File([Uint8Array.from(data, (c) => c.charCodeAt(0))], "dropped.png",
  { type: "image/png" }));
document.getElementById(arguments[0]).dispatchEvent(
  new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
"""


def test_a_bad_upload_shows_the_apis_message(browser, console: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    expected = httpx.post(
        f"{console}/v1/detect?score_threshold=0", files={"image": ("notes.png", bad.read_bytes())}
    ).json()["error"]
    open_page(browser, console, "detect")
    browser.find_element("id", "detect-files").send_keys(str(bad))
    error = wait_for(
        browser,
        lambda d: d.find_element("id", "detect-error").text or None,
        "no error shown",
    )
    assert expected["code"] in error and expected["message"] in error
    # The browser logs the refused request itself; nothing else went wrong on the page.
    assert all("status of 4" in message for message in console_errors(browser))


def test_a_sor_upload_draws_the_trace_and_its_events(browser, console: str, tmp_path: Path) -> None:
    # Samples of 0.5-2 m: positions are shown to 0.1 m (finer samples get more digits).
    cfg = SynthOTDR(num_samples=(1024, 1024), resolution_m=(0.5, 2.0))
    trace = simulate_trace(np.random.default_rng(3), cfg, "t")
    sor = tmp_path / "link.sor"
    sor.write_bytes(sor_bytes(trace))
    expected = httpx.post(
        f"{console}/v1/otdr/events?score_threshold=0.5",
        files={"file": ("link.sor", sor.read_bytes())},
    ).json()
    assert expected["key_events"] and "samples_db" not in expected["trace"]
    open_page(browser, console, "otdr")
    browser.find_element("id", "otdr-file").send_keys(str(sor))
    plot = browser.find_element("id", "otdr-plot")
    wait_for(browser, lambda d: plot.get_attribute("data-drawn-samples"), "no trace drawn")
    assert int(plot.get_attribute("data-drawn-samples")) == expected["trace"]["num_samples"]
    assert int(plot.get_attribute("data-drawn-events")) == len(expected["events"])
    event_rows = browser.find_elements("css selector", "#otdr-events tr")
    key_rows = browser.find_elements("css selector", "#otdr-key-events tr")
    assert len(event_rows) == len(expected["events"]) + 1
    assert len(key_rows) == len(expected["key_events"]) + 1
    # Metres are rounded: the resolution to 3 significant digits, positions to 0.1 m here.
    resolution = expected["trace"]["resolution_m"]
    assert (
        f"at {float(f'{resolution:.3g}'):g} m/sample"
        in browser.find_element("id", "otdr-summary").text
    )
    positions = [row.find_elements("tag name", "td")[1].text for row in key_rows[1:]]
    assert positions and all(re.fullmatch(r"\d+\.\d", p) for p in positions), positions
    labels = plot.get_attribute("data-axis-labels").split("|")
    assert labels[0] == "0 m" and all(re.fullmatch(r"\d+(\.\d+)? m", x) for x in labels), labels
    screenshot(browser, SHOTS / "otdr.png", UPDATE_SCREENSHOTS)
    assert console_errors(browser) == []


def test_pasted_samples_are_plotted_with_metres_at_their_precision(browser, console: str) -> None:
    samples = [round(-0.02 * i, 3) for i in range(512)]  # a clean fibre, 5 cm a sample
    open_page(browser, console, "otdr")
    browser.find_element("css selector", "#page-otdr summary").click()
    browser.execute_script(
        "document.getElementById('otdr-samples').value = arguments[0];"
        "document.getElementById('otdr-resolution').value = '0.05';",
        ", ".join(map(str, samples)),
    )
    browser.find_element("id", "otdr-send-samples").click()
    plot = browser.find_element("id", "otdr-plot")
    wait_for(browser, lambda d: plot.get_attribute("data-drawn-samples") == "512", "no trace")
    summary = browser.find_element("id", "otdr-summary").text
    assert "512 samples, 25.60 m at 0.05 m/sample" in summary, summary
    assert plot.get_attribute("data-axis-labels").split("|") == [f"{m} m" for m in range(0, 30, 5)]
    assert console_errors(browser) == []


def set_token(driver) -> None:
    token = driver.find_element("id", "token")
    token.send_keys(TOKEN)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    assert TOKEN not in driver.current_url


def submit_enrollment(driver, identity: str) -> None:
    enroll = driver.find_element("id", "enroll-form")
    enroll.find_element("name", "identity").send_keys(identity)
    enroll.find_element("css selector", "button[type=submit]").click()
    wait_for(
        driver,
        lambda d: f"enrolled {identity}" in d.find_element("id", "faces-result").text,
        "enroll",
    )


def faces_answer(driver, selector: str) -> Any:
    """Wait for the Faces page's answer (or the API's error) and return its `selector` element."""

    def answered(d):
        error = d.find_element("id", "faces-error")
        assert not error.is_displayed(), error.text
        return d.find_elements("css selector", f"#faces-answer {selector}")

    return wait_for(driver, answered, "no answer")[0]


def shown_templates(driver) -> list:
    """The matched person's template thumbnails, once every one has loaded."""
    images = driver.find_elements("css selector", "#faces-answer .templates img.template")
    wait_for(
        driver,
        lambda d: d.execute_script(
            "return arguments[0].every((i) => i.complete && i.naturalWidth > 0)", images
        ),
        "templates not loaded",
    )
    return images


def test_enroll_then_identify_shows_the_persons_templates(
    browser, console: str, tmp_path: Path
) -> None:
    ada = [image_file(tmp_path, f"ada{i}.png", 10, (FACE_SIZE, FACE_SIZE)) for i in range(2)]
    stranger = image_file(tmp_path, "stranger.png", 99, (FACE_SIZE, FACE_SIZE))
    open_page(browser, console, "faces")
    set_token(browser)
    enroll = browser.find_element("id", "enroll-form")
    enroll.find_element("name", "image").send_keys("\n".join(str(p) for p in ada))
    submit_enrollment(browser, "Ada Lovelace")

    def identify(path: Path) -> str:
        form = browser.find_element("id", "identify-form")
        form.find_element("name", "image").send_keys(str(path))
        browser.execute_script("document.getElementById('faces-result').replaceChildren()")
        form.find_element("css selector", "button[type=submit]").click()
        return faces_answer(browser, "[data-identity]").get_attribute("data-identity")

    assert identify(ada[0]) == "Ada Lovelace"
    assert len(shown_templates(browser)) == 2
    text = browser.find_element("id", "faces-result").text
    assert "Ada Lovelace: 2 templates" in text and "γ 0.500" in text and "distance" in text
    screenshot(browser, SHOTS / "faces.png", UPDATE_SCREENSHOTS)
    assert identify(stranger) == "unknown"
    assert not browser.find_elements("css selector", "#faces-answer .templates")

    verify = browser.find_element("id", "verify-form")
    verify.find_element("name", "image").send_keys(str(ada[1]))
    verify.find_element("name", "identity").send_keys("Ada Lovelace")
    verify.find_element("css selector", "button[type=submit]").click()
    assert faces_answer(browser, "[data-same]").get_attribute("data-same") == "true"
    assert len(shown_templates(browser)) == 2
    assert console_errors(browser) == []


def test_a_camera_frame_goes_the_way_of_an_upload(browser, console: str) -> None:
    open_page(browser, console, "faces")
    assert browser.execute_script("return window.isSecureContext")  # 127.0.0.1 is one
    set_token(browser)
    browser.find_element("id", "camera-start").click()
    wait_for(
        browser,
        lambda d: d.execute_script("return document.getElementById('camera-video').videoWidth"),
        "the fake camera shows nothing",
    )
    browser.find_element("css selector", "[data-capture=enroll]").click()
    wait_for(
        browser,
        lambda d: d.execute_script(
            "return document.querySelector('#enroll-form [name=image]').files.length"
        ),
        "no frame captured",
    )
    submit_enrollment(browser, "Camera Person")
    browser.execute_script("document.getElementById('faces-result').replaceChildren()")
    browser.find_element("css selector", "[data-capture=identify]").click()  # sends it at once
    answer = faces_answer(browser, "[data-identity]").get_attribute("data-identity")
    assert answer in {"Camera Person", "unknown"}  # the test pattern moves between frames
    sent = browser.execute_script(
        "return document.querySelector('#identify-form [name=image]').files[0].name"
    )
    assert re.fullmatch(r"camera-.+\.jpg", sent), sent
    browser.find_element("id", "camera-stop").click()
    assert console_errors(browser) == []
