"""Selective search (Uijlings et al. 2013): class-agnostic region proposals, via OpenCV contrib.

OpenCV's implementation groups graph-based superpixels hierarchically under several colour
spaces and similarity strategies ("fast": 2 colour spaces x 3 k values x 2 strategies;
"quality": 5 x 5 x 4) and ranks regions by `level * rand()`, with the C library's `rand()`.
That ranking is reseeded before every call (under a lock, as the seed is process-wide) so the
same image always gives the same proposals in the same order.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Mode = Literal["fast", "quality"]
MODES: tuple[Mode, ...] = ("fast", "quality")

_LIBC_RAND_SEED = 1  # glibc's initial seed: a fresh process ranks exactly like every call here
_LOCK = threading.Lock()


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:  # no process-wide C library handle (Windows): the ranking is not reseeded
        return None


_LIBC = _libc()


def selective_search(
    image: np.ndarray,
    *,
    mode: Mode = "fast",
    max_proposals: int = 2000,
    min_size: int = 4,
) -> np.ndarray:
    """Proposals for one HxWx3 uint8 RGB image: (N, 4) float32 xyxy pixels, OpenCV's ranking.

    Duplicates are dropped (the first occurrence keeps its rank), so are boxes narrower or
    shorter than `min_size` px; at most `max_proposals` are returned.
    """
    _check_arguments(image, mode, max_proposals, min_size)
    bgr = np.ascontiguousarray(image[..., ::-1])
    with _LOCK:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # callers parallelise over images; one image is not worth threads
        try:
            rects = _run_opencv(bgr, mode)
        finally:
            cv2.setNumThreads(threads)
    boxes = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # OpenCV gives x, y, w, h
    sides = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[(sides >= min_size).all(axis=1)]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)][:max_proposals]


def _run_opencv(bgr: np.ndarray, mode: Mode) -> np.ndarray:
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    if _LIBC is not None:
        _LIBC.srand(_LIBC_RAND_SEED)
    return search.process()


def one_thread_per_worker() -> None:
    """Initializer of a process pool that searches: one search at a time per worker (the
    pool's size is the parallelism), so neither torch nor OpenCV starts threads of its own."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _check_arguments(image: object, mode: str, max_proposals: int, min_size: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 numpy array (HxWx3 RGB), got {kind}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must have shape HxWx3 (RGB), got {image.shape}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if max_proposals < 1:
        raise ValueError(f"max_proposals must be >= 1, got {max_proposals}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")


def proposals_for_image(
    image: Tensor,
    *,
    max_side: int | None = None,
    mode: Mode = "fast",
    max_proposals: int = 2000,
    min_size: int = 4,
) -> Tensor:
    """Selective search on a 3xHxW float image in [0, 1]; (N, 4) float32 xyxy in its pixels.

    With `max_side`, the search runs on a copy shrunk so its longer side is `max_side` (what
    the R-CNN families see) and the boxes are scaled back: the cost stays bounded for large
    uploads, and offline proposals match the ones a model computes itself.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a 3xHxW float tensor, got {tuple(image.shape)}")
    image = image.detach().float().cpu()
    scale = 1.0
    if max_side is not None and max(image.shape[-2:]) > max_side:
        scale = max_side / max(image.shape[-2:])
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True)[0]
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    boxes = selective_search(pixels, mode=mode, max_proposals=max_proposals, min_size=min_size)
    return torch.from_numpy(boxes) / scale


@dataclass(frozen=True)
class SelectiveSearch:
    """Selective-search settings, callable on a 3xHxW float image (see `proposals_for_image`)."""

    mode: Mode = "fast"
    max_proposals: int = 2000
    min_size: int = 4
    max_side: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"proposal mode must be one of {MODES}, got {self.mode!r}")
        if self.max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1, got {self.max_proposals}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"max_side must be >= 1 or None, got {self.max_side}")

    def __call__(self, image: Tensor) -> Tensor:
        return proposals_for_image(
            image,
            max_side=self.max_side,
            mode=self.mode,
            max_proposals=self.max_proposals,
            min_size=self.min_size,
        )


def resolve_proposals(
    images: Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]] | None,
    proposals: Sequence[Tensor] | None,
    search: SelectiveSearch,
) -> list[Tensor]:
    """Each image's proposals in its own pixels: the `proposals` argument if given, else
    `targets[i]["proposals"]` where present, else selective search on the image.

    Errors name `proposals[i]` or `targets[i]['proposals']`.
    """
    if proposals is not None:
        if len(proposals) != len(images):
            raise ValueError(f"got {len(images)} images but {len(proposals)} proposal sets")
        return [
            _checked(boxes, image, f"proposals[{i}]")
            for i, (boxes, image) in enumerate(zip(proposals, images, strict=True))
        ]
    resolved = []
    for i, image in enumerate(images):
        given = targets[i].get("proposals") if targets is not None else None
        if given is None:
            resolved.append(search(image).to(image.device))
        else:
            resolved.append(_checked(given, image, f"targets[{i}]['proposals']"))
    return resolved


def _checked(boxes: object, image: Tensor, where: str) -> Tensor:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{where} must be an (M, 4) tensor of xyxy boxes, got {shape}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{where} holds a box with a non-finite coordinate")
    return boxes.to(device=image.device, dtype=torch.float32)
