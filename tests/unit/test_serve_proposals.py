"""The detector replica's selective-search workers (serve/proposals.py): the proposals a model
would find itself, from real worker processes, and a pool that survives a killed worker."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest
import torch

from sightline.models.registry import build_model
from sightline.serve.detector import run_detector
from sightline.serve.proposals import MAX_RESTARTS, ProposalPool, image_tensor

RCNN_PARAMS = {"width": 8, "feature_dim": 32, "crop_size": 16}


@pytest.fixture(scope="module")
def rcnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("rcnn", num_classes=3, **RCNN_PARAMS).eval()


def shapes(seed: int) -> np.ndarray:
    """A 64x64 image with a few flat rectangles: selective search finds regions in it."""
    rng = np.random.default_rng(seed)
    pixels = np.full((64, 64, 3), 200, dtype=np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, 48, 2)
        pixels[y : y + 16, x : x + 16] = rng.integers(0, 255, 3)
    return pixels


def test_workers_find_the_proposals_the_model_finds_itself(rcnn) -> None:
    pool = ProposalPool(2)
    try:
        images = [shapes(seed) for seed in range(4)]

        async def all_at_once() -> list[torch.Tensor | None]:
            return await asyncio.gather(*(pool.proposals(rcnn, image) for image in images))

        found = asyncio.run(all_at_once())
        for image, boxes in zip(images, found, strict=True):
            assert boxes is not None and len(boxes) > 0
            assert torch.equal(boxes, rcnn.search(image_tensor(image)))
        (by_model,), (given,) = (
            run_detector(rcnn, images[:1]),
            run_detector(rcnn, images[:1], found[:1]),
        )
        assert all(torch.equal(by_model[key], given[key]) for key in by_model)
    finally:
        pool.close()


def test_no_workers_start_for_models_that_do_not_search(rcnn) -> None:
    faster = build_model("faster_rcnn", num_classes=3, width=8, representation_size=32).eval()
    pool = ProposalPool(2)
    pool.serve_models([faster])
    assert pool._executor is None
    assert asyncio.run(pool.proposals(faster, shapes(0))) is None
    assert asyncio.run(ProposalPool(0).proposals(rcnn, shapes(0))) is None  # off: model searches
    with pytest.raises(ValueError, match="proposal_workers must be >= 0"):
        ProposalPool(-1)


def test_a_killed_worker_costs_no_request(rcnn) -> None:
    pool = ProposalPool(1)
    try:
        pool.serve_models([rcnn])
        image = shapes(1)
        expected = rcnn.search(image_tensor(image))
        assert torch.equal(asyncio.run(pool.proposals(rcnn, image)), expected)
        (pid,) = pool._executor._processes  # the one worker, started by serve_models
        os.kill(pid, signal.SIGKILL)
        # The pool notices the dead worker on the next call: that request still gets its
        # proposals (searched in this process), and later ones come from a new worker.
        assert torch.equal(asyncio.run(pool.proposals(rcnn, image)), expected)
        assert torch.equal(asyncio.run(pool.proposals(rcnn, image)), expected)
        assert pid not in pool._executor._processes
    finally:
        pool.close()


def test_workers_that_keep_dying_leave_the_search_to_the_replica(rcnn) -> None:
    pool = ProposalPool(1)
    try:
        image = shapes(2)
        expected = rcnn.search(image_tensor(image))
        for _ in range(MAX_RESTARTS + 1):
            pool.serve_models([rcnn])
            (pid,) = pool._executor._processes
            os.kill(pid, signal.SIGKILL)
            assert torch.equal(asyncio.run(pool.proposals(rcnn, image)), expected)
        assert pool.workers == 0 and pool._executor is None
        assert asyncio.run(pool.proposals(rcnn, image)) is None  # the model searches itself
    finally:
        pool.close()
