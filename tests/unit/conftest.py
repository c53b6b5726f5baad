"""Shared unit-test fixtures: small on-disk images and a tiny synthetic detection dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sightline.config import SynthDetection
from sightline.data.synth.detection import generate

ImageWriter = Callable[..., Path]

TINY_SYNTH = SynthDetection(seed=7, image_size=128, train=6, val=4, test=4)


@pytest.fixture
def write_image() -> ImageWriter:
    """`write_image(path, width, height, mode="RGB", **save_args)`: a deterministic test image.

    The content is a smooth pattern converted to `mode` (any PIL mode, "I;16" for 16-bit); extra
    keyword arguments go to `Image.save` (e.g. `exif=...`, `transparency=0`).
    """

    def write(path: Path, width: int, height: int, mode: str = "RGB", **save_args: object) -> Path:
        yy, xx = np.mgrid[0:height, 0:width]
        if mode == "I;16":
            image = Image.fromarray(((xx + yy) * 997 % 65536).astype(np.uint16))
        else:
            rgb = np.stack([xx * 7 % 256, yy * 11 % 256, (xx + yy) * 5 % 256], axis=-1)
            image = Image.fromarray(rgb.astype(np.uint8)).convert(mode)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **save_args)
        return path

    return write


@pytest.fixture(scope="session")
def synth_detection_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic COCO detection dataset (6/4/4 images of 128 px); treat it as read-only."""
    root = tmp_path_factory.mktemp("synth_detection")
    generate(root, TINY_SYNTH)
    return root


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Small convolutions on a shared 2-core machine run many times slower with 2 OpenMP threads.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def voc_xml(filename: str | None, objects: list[tuple[str, list[int], int]], size: str = "") -> str:
    size = size or "<size><width>50</width><height>40</height><depth>3</depth></size>"
    parts = ["<annotation>"]
    if filename:
        parts.append(f"<filename>{filename}</filename>")
    parts.append(size)
    for name, (x0, y0, x1, y1), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
            "</bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


@pytest.fixture
def voc_root(tmp_path: Path, write_image: Any) -> Path:
    """A VOC tree: 'train' = img1 (dog + difficult cat), img2 (bird); 'val' = img3 (dog)."""
    root = tmp_path / "VOC2007"
    files = {
        "img1": voc_xml("img1.jpg", [("dog", [1, 1, 10, 20], 0), ("cat", [5, 6, 50, 40], 1)]),
        "img2": voc_xml(None, [("bird", [11, 21, 30, 30], 0)]),
        "img3": voc_xml("img3.jpg", [("dog", [2, 2, 3, 3], 0)]),
    }
    for stem, xml in files.items():
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
        write_image(root / "JPEGImages" / f"{stem}.jpg", 50, 40)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("img1\nimg2\n\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("img3\n")
    return root


@pytest.fixture(scope="session")
def inprocess_api(tmp_path_factory: pytest.TempPathFactory):
    """The whole HTTP API in one process over real task code and a registry of untrained
    models (tests/unit/serving_app.py), shared by the bad-input and fuzz tests."""
    from tests.unit.serving_app import registered_api

    with registered_api(tmp_path_factory.mktemp("inprocess-api")) as api:
        yield api
