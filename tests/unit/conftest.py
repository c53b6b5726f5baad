"""Shared unit-test fixtures: small on-disk images and a tiny synthetic detection dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
