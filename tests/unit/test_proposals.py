"""A split's proposals: computed once, stored as .npz, read back by image id; recall math."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sightline.data.detection import DetectionDataset, DetectionSplit, SplitSource
from sightline.data.errors import DatasetError
from sightline.data.proposals import (
    DatasetWithProposals,
    compute_split_proposals,
    load_proposals,
    mean_proposals_per_image,
    proposal_recall,
    proposal_stats,
    read_settings,
    save_proposals,
)


@pytest.fixture(scope="module")
def val_split(synth_detection_root: Path) -> DetectionSplit:
    from sightline.data.coco import read_coco

    root = synth_detection_root
    coco = read_coco(root / "annotations" / "val.json")
    return DetectionSplit(SplitSource(coco, root / "images", origin="val.json"))


def hand_made_split() -> DetectionSplit:
    """Image 1: two truths and a crowd box; image 2: one truth; image 3: no objects."""
    image = {"file_name": "x.png", "width": 100, "height": 100}
    coco = {
        "images": [{**image, "id": i} for i in (1, 2, 3)],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 20, 20]},
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [80, 0, 10, 10], "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 7, "bbox": [10, 10, 40, 40]},
        ],
    }
    return DetectionSplit(SplitSource(coco, Path("/nowhere"), origin="hand-made"))


def test_recall_counts_non_crowd_truths_covered_at_the_iou() -> None:
    split = hand_made_split()
    proposals = {
        1: np.array([[0, 0, 10, 10], [50, 50, 66, 70]], np.float32),  # IoU 1.0 and 0.8
        2: np.array([[10, 10, 30, 50]], np.float32),  # IoU 0.5 with the 40x40 truth
        3: np.zeros((0, 4), np.float32),
    }
    assert proposal_recall(split, proposals, 0.5) == 1.0
    assert proposal_recall(split, proposals, 0.7) == pytest.approx(2 / 3)
    assert proposal_recall(split, proposals, 0.9) == pytest.approx(1 / 3)
    assert mean_proposals_per_image(proposals) == 1.0
    stats = proposal_stats(split, proposals, (0.5, 0.7))
    assert stats == {"recall_50": 1.0, "recall_70": 0.6667, "proposals_per_image": 1.0}


def test_recall_without_truths_is_nan_and_missing_images_are_named() -> None:
    split = hand_made_split()
    empty = DetectionSplit(
        SplitSource({**split.coco.dataset, "annotations": []}, Path("/nowhere"), "empty")
    )
    none = np.zeros((0, 4), np.float32)
    assert math.isnan(proposal_recall(empty, {1: none, 2: none, 3: none}, 0.5))
    with pytest.raises(DatasetError, match="image id 2: no proposals"):
        proposal_recall(split, {1: none}, 0.5)


def test_store_round_trips_every_image_including_empty_ones(tmp_path: Path) -> None:
    proposals = {
        5: np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32),
        9: np.zeros((0, 4), np.float32),
        2: np.array([[0.5, 0.5, 10.25, 20.0]], np.float32),
    }
    path = tmp_path / "out" / "train.npz"
    save_proposals(proposals, path)
    loaded = load_proposals(path)
    assert list(loaded) == [5, 9, 2]
    for image_id, boxes in proposals.items():
        assert loaded[image_id].dtype == np.float32
        assert np.array_equal(loaded[image_id], boxes)
    save_proposals({}, path)
    assert load_proposals(path) == {}


def test_split_proposals_are_computed_once_and_stored(
    val_split: DetectionSplit, tmp_path: Path
) -> None:
    path = tmp_path / "val.npz"
    progress: list[tuple[int, int]] = []
    computed = compute_split_proposals(
        val_split, path, mode="fast", max_proposals=50, progress=lambda *p: progress.append(p)
    )
    assert progress[-1] == (len(val_split), len(val_split))
    loaded = load_proposals(path)
    assert sorted(loaded) == sorted(val_split.image_ids)
    for image_id in val_split.image_ids:
        assert np.array_equal(loaded[image_id], computed[image_id])
        assert 0 < len(loaded[image_id]) <= 50
        record = val_split.coco.imgs[image_id]
        assert (loaded[image_id][:, 2] <= record["width"]).all()
    assert read_settings(path) == {
        "mode": "fast",
        "max_proposals": 50,
        "min_size": 4,
        "max_side": None,
    }
    assert proposal_recall(val_split, loaded, 0.5) >= 0.8


def test_worker_processes_give_the_same_proposals(
    val_split: DetectionSplit, tmp_path: Path
) -> None:
    one = compute_split_proposals(val_split, tmp_path / "a.npz", max_proposals=30, max_side=64)
    two = compute_split_proposals(
        val_split, tmp_path / "b.npz", max_proposals=30, max_side=64, workers=2
    )
    assert all(np.array_equal(one[i], two[i]) for i in val_split.image_ids)


def test_worker_processes_start_after_this_process_used_opencv_threads(
    synth_detection_root: Path, tmp_path: Path
) -> None:
    """A caller that ran an OpenCV op on its thread pool (a blur, as the synthesizer does) and
    then asked for worker processes: their forks waited for ever on threads they do not have
    (bench/robustness hung so). In a subprocess, so a regression fails here instead of hanging."""
    script = f"""
import cv2, numpy as np
from sightline.data.coco import read_coco
from pathlib import Path
from sightline.data.detection import DetectionSplit, SplitSource
from sightline.data.proposals import compute_split_proposals
root = Path({str(synth_detection_root)!r})
coco = read_coco(root / "annotations" / "val.json")
split = DetectionSplit(SplitSource(coco, root / "images", origin="val.json"))
for _ in range(3):
    cv2.GaussianBlur(np.random.rand(2048, 2048).astype(np.float32), (0, 0), 3)
    compute_split_proposals(split, {str(tmp_path / "p.npz")!r}, max_proposals=10, workers=2)
print("done", cv2.getNumThreads() == cv2.getNumberOfCPUs())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["done", "True"]  # the caller's OpenCV threads are back


def test_a_failed_run_names_the_image_and_keeps_the_earlier_file(tmp_path: Path) -> None:
    split = hand_made_split()  # its image files do not exist
    path = tmp_path / "train.npz"
    save_proposals({1: np.ones((1, 4), np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(DatasetError, match="image id 1"):
        compute_split_proposals(split, path)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "train.npz"]  # no temp file left
    with pytest.raises(ValueError, match="workers must be >= 1"):
        compute_split_proposals(split, path, workers=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        compute_split_proposals(split, path, mode="slow")  # type: ignore[arg-type]


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as stream:
        np.savez_compressed(stream, **arrays)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.npz", "proposals file not found"),
        (lambda d: (d / "text.npz").write_text("hello") and d / "text.npz", "unreadable"),
        (
            lambda d: _write_npz(d / "other.npz", image_ids=np.arange(2)),
            r"missing arrays \['counts', 'boxes'\]",
        ),
        (
            lambda d: _write_npz(
                d / "counts.npz",
                image_ids=np.arange(2),
                counts=np.array([1, 5]),
                boxes=np.zeros((3, 4), np.float32),
            ),
            "counts sum to 6 but there are 3 boxes",
        ),
        (
            lambda d: _write_npz(
                d / "shape.npz",
                image_ids=np.arange(1),
                counts=np.array([1]),
                boxes=np.zeros((1, 5), np.float32),
            ),
            r"shape \(N, 4\)",
        ),
        (
            lambda d: _write_npz(
                d / "dupes.npz",
                image_ids=np.array([3, 3]),
                counts=np.array([0, 0]),
                boxes=np.zeros((0, 4), np.float32),
            ),
            "more than once",
        ),
    ],
)
def test_bad_proposals_files_are_clear_errors_naming_the_file(
    tmp_path: Path, make, message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(DatasetError, match=message) as caught:
        load_proposals(path)
    assert str(path) in str(caught.value)


def test_dataset_targets_carry_their_image_proposals(val_split: DetectionSplit) -> None:
    dataset = DetectionDataset(val_split)
    proposals = {i: np.full((2, 4), float(i), np.float32) for i in val_split.image_ids}
    wrapped = DatasetWithProposals(dataset, proposals, origin="val.npz")
    assert len(wrapped) == len(dataset)
    _, target = wrapped[1]
    assert torch.equal(target["proposals"], torch.full((2, 4), float(target["image_id"])))
    assert set(target) >= {"boxes", "labels", "image_id"}
    missing = DatasetWithProposals(dataset, {}, origin="val.npz")
    with pytest.raises(DatasetError, match=r"val.npz: image id \d+: no proposals"):
        missing[0]
