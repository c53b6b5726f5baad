"""/v1/detect per family: boxes always; keypoints and RLE masks when the model has them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sightline.serve.detector import detect_objects


class PoseAndMask(torch.nn.Module):
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        _, height, width = images[0].shape
        masks = torch.zeros(2, 1, height, width)
        masks[0, 0, 10:20, 5:15] = 0.9
        return [
            {
                "boxes": torch.tensor([[5.0, 10.0, 15.0, 20.0], [0.0, 0.0, 4.0, 4.0]]),
                "labels": torch.tensor([1, 2]),
                "scores": torch.tensor([0.9, 0.1]),
                "masks": masks,
                "keypoints": torch.tensor([[[6.0, 11.0, 1.0]], [[1.0, 1.0, 1.0]]]),
            }
        ]


def test_keypoints_and_masks_follow_the_upload_scale() -> None:
    pixels = np.zeros((32, 40, 3), dtype=np.uint8)  # the shrunk image; the upload was 2x larger
    (hit,) = detect_objects(
        PoseAndMask(), pixels, ["person", "cat"], 0.5, scale=2.0, original_size=(80, 64)
    )
    assert hit.label == "person" and hit.box == [10.0, 20.0, 30.0, 40.0]
    assert hit.keypoints == [[12.0, 22.0, 1.0]]
    rle = {"size": hit.mask["size"], "counts": hit.mask["counts"].encode("ascii")}
    decoded = mask_utils.decode(rle)
    assert decoded.shape == (64, 80)
    assert decoded[25, 15] == 1 and decoded[5, 5] == 0 and 300 < decoded.sum() < 500


def test_plain_detectors_have_no_masks_or_keypoints() -> None:
    class Boxes(torch.nn.Module):
        def forward(self, images):
            return [
                {
                    "boxes": torch.tensor([[1.0, 1.0, 50.0, 9.0]]),
                    "labels": torch.tensor([1]),
                    "scores": torch.tensor([0.7]),
                }
            ]

    (hit,) = detect_objects(Boxes(), np.zeros((10, 20, 3), dtype=np.uint8), ["a"], 0.5)
    assert hit.box == [1.0, 1.0, 20.0, 9.0]  # clamped to the image
    assert hit.mask is None and hit.keypoints is None


def test_an_unbatched_family_skips_the_batch_queue_with_the_same_answer(tmp_path) -> None:
    from sightline.config import ServeBatch
    from sightline.serve.detector import Detector
    from tests.conftest import own_store
    from tests.integration.test_serve_detect import register_untrained_detectors

    def no_batching(*args):
        raise AssertionError("went through the batch queue")

    pixels = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    with own_store(tmp_path) as uri:
        register_untrained_detectors(tmp_path / "artifacts")
        batched = Detector.func_or_class(uri)
        unbatched = Detector.func_or_class(uri, ServeBatch(unbatched_families=["faster_rcnn"]))
        unbatched._detect_batch = no_batching
        expected = asyncio.run(batched.detect(pixels, "1", 0.0))
        assert expected and asyncio.run(unbatched.detect(pixels, "1", 0.0)) == expected
        with pytest.raises(ValueError, match=r"no such model family \['rccn'\]"):
            Detector.func_or_class(uri, ServeBatch(unbatched_families=["rccn"]))
