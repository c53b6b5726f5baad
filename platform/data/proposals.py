"""Selective-search proposals for a whole split, computed once per dataset version and stored.

The R-CNN families train and evaluate on external proposals. Selective search costs ~0.1 s per
small image on one core, so a split's proposals are computed once (a DVC output) and read back
by image id. One compressed .npz per split holds:

- `image_ids` (N,) int64 and `counts` (N,) int64: image i owns the next counts[i] rows of
- `boxes` (sum counts, 4) float32 xyxy in the image's own pixels, in selective search's ranking;
- `settings`: the JSON of the selective-search settings, for provenance.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_iou

from sightline.data.detection import DetectionSplit, Target, load_rgb_image
from sightline.data.errors import DatasetError
from sightline.models.selective_search import Mode, SelectiveSearch, one_thread_per_worker

Proposals = dict[int, np.ndarray]
Progress = Callable[[int, int], None]  # (images done, images in all)
REQUIRED_KEYS = ("image_ids", "counts", "boxes")


def compute_split_proposals(
    split: DetectionSplit,
    out_path: str | Path,
    *,
    mode: Mode = "fast",
    max_proposals: int = 2000,
    min_size: int = 4,
    max_side: int | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> Proposals:
    """Selective search on every image of `split`, written to `out_path` (.npz) and returned.

    `workers` > 1 spreads images over that many processes (one OpenCV thread each). The file
    is written atomically: an interrupted run leaves any earlier file as it was.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    search = SelectiveSearch(mode, max_proposals, min_size, max_side)
    jobs = [(str(split.image_path(i)), f"image id {i}", search) for i in split.image_ids]
    proposals: Proposals = {}
    for image_id, boxes in zip(split.image_ids, _search_all(jobs, workers), strict=True):
        proposals[image_id] = boxes
        if progress is not None:
            progress(len(proposals), len(jobs))
    save_proposals(proposals, out_path, search)
    return proposals


def _search_all(jobs: list[tuple[str, str, SelectiveSearch]], workers: int) -> Iterator[np.ndarray]:
    if workers == 1 or len(jobs) <= 1:
        yield from map(_search_one, jobs)
        return
    # No OpenCV worker threads may exist here when the pool forks: a child inherits the
    # parent's OpenCV pool state without its threads, and its first OpenCV call (the
    # initializer's setNumThreads) then waits on them for ever. Any cv2 call in this process
    # before (a resize, a blur) starts those threads; one thread while the pool runs stops them.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        processes = min(workers, len(jobs))
        with _pool_context().Pool(processes, initializer=one_thread_per_worker) as pool:
            yield from pool.imap(_search_one, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    finally:
        cv2.setNumThreads(threads)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts in milliseconds (spawn re-imports torch in every worker: seconds), and is safe
    # here because each worker drops to one torch and one OpenCV thread first, as torch's own
    # DataLoader workers do.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _search_one(job: tuple[str, str, SelectiveSearch]) -> np.ndarray:
    path, record, search = job
    return search(load_rgb_image(Path(path), record)).numpy().astype(np.float32)


def save_proposals(
    proposals: Proposals, out_path: str | Path, search: SelectiveSearch | None = None
) -> None:
    """Write proposals as one compressed .npz (see the module docstring), atomically."""
    out_path = Path(out_path)
    ids = list(proposals)
    arrays = [np.asarray(proposals[i], dtype=np.float32).reshape(-1, 4) for i in ids]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out_path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(
                stream,
                image_ids=np.asarray(ids, dtype=np.int64),
                counts=np.asarray([len(a) for a in arrays], dtype=np.int64),
                boxes=np.concatenate(arrays) if arrays else np.zeros((0, 4), np.float32),
                settings=np.asarray(json.dumps(asdict(search) if search else {})),
            )
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; a DVC output is shared
        os.replace(temporary, out_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_proposals(path: str | Path) -> Proposals:
    """Read a proposals file: image id -> (N, 4) float32 xyxy boxes in that image's pixels."""
    path = Path(path)
    stored = _read_npz(path)
    missing = [key for key in REQUIRED_KEYS if key not in stored]
    if missing:
        raise DatasetError.at(path, f"not a proposals file: missing arrays {missing}")
    ids, counts, boxes = (stored[key] for key in REQUIRED_KEYS)
    _check_layout(path, ids, counts, boxes)
    per_image = np.split(boxes, np.cumsum(counts)[:-1]) if len(ids) else []
    return {int(i): b for i, b in zip(ids.tolist(), per_image, strict=True)}


def read_settings(path: str | Path) -> dict[str, Any]:
    """The selective-search settings a proposals file was computed with ({} when unknown)."""
    stored = _read_npz(Path(path))
    return json.loads(str(stored["settings"])) if "settings" in stored else {}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError.at(path, "proposals file not found (compute the split's proposals)")
    try:
        opened = np.load(path, allow_pickle=False)
        if not isinstance(opened, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with opened:
            return {key: opened[key] for key in opened.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError.at(path, f"unreadable proposals file: {exc}") from None


def _check_layout(path: Path, ids: np.ndarray, counts: np.ndarray, boxes: np.ndarray) -> None:
    if ids.ndim != 1 or counts.shape != ids.shape:
        raise DatasetError.at(
            path, f"image_ids {ids.shape} and counts {counts.shape} must be equal-length vectors"
        )
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DatasetError.at(path, f"boxes must have shape (N, 4), got {boxes.shape}")
    if int(counts.sum()) != len(boxes) or (counts < 0).any():
        raise DatasetError.at(
            path, f"counts sum to {int(counts.sum())} but there are {len(boxes)} boxes"
        )
    if len(np.unique(ids)) != len(ids):
        raise DatasetError.at(path, "an image id appears more than once", field="image_ids")


def truth_boxes(split: DetectionSplit, image_id: int) -> Tensor:
    """(N, 4) float32 xyxy boxes of an image's non-crowd annotations."""
    anns = [a for a in split.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
    boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def proposals_of(proposals: Proposals, image_id: int, origin: str = "proposals") -> np.ndarray:
    try:
        return proposals[image_id]
    except KeyError:
        raise DatasetError.at(
            origin,
            "no proposals for this image (were they computed for another dataset version?)",
            record=f"image id {image_id}",
        ) from None


def proposal_recall(split: DetectionSplit, proposals: Proposals, iou: float) -> float:
    """Fraction of non-crowd truth boxes with a proposal at IoU >= `iou` (NaN without truths)."""
    covered = total = 0
    for image_id in split.image_ids:
        truths = truth_boxes(split, image_id)
        if not len(truths):
            continue
        total += len(truths)
        boxes = torch.from_numpy(proposals_of(proposals, image_id))
        if len(boxes):
            covered += int((box_iou(truths, boxes).amax(dim=1) >= iou).sum())
    return covered / total if total else math.nan


def mean_proposals_per_image(proposals: Proposals) -> float:
    return float(np.mean([len(b) for b in proposals.values()])) if proposals else 0.0


def proposal_stats(
    split: DetectionSplit, proposals: Proposals, ious: Iterable[float] = (0.5, 0.7)
) -> dict[str, float]:
    """`recall_50`, `recall_70`, ... and `proposals_per_image`: a DVC metrics dict."""
    stats = {
        f"recall_{round(100 * iou)}": round(proposal_recall(split, proposals, iou), 4)
        for iou in ious
    }
    stats["proposals_per_image"] = round(mean_proposals_per_image(proposals), 2)
    return stats


class DatasetWithProposals(Dataset[tuple[Tensor, Target]]):
    """A detection dataset whose targets also carry `proposals` (M, 4) float32 xyxy px.

    Augmentation wraps it (sightline.data.augment moves the proposals with the pixels).
    """

    def __init__(
        self, dataset: Dataset[tuple[Tensor, Target]], proposals: Proposals, origin: str
    ) -> None:
        self.dataset = dataset
        self.proposals = proposals
        self.origin = origin

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image, target = self.dataset[index]
        image_id = int(target["image_id"])
        boxes = proposals_of(self.proposals, image_id, self.origin)
        return image, {**target, "proposals": torch.from_numpy(boxes.copy())}
