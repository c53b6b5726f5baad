"""Anchor shapes from the training boxes: k-means with the 1 - IoU distance (YOLOv2, sec. 2).

Boxes are compared by shape only (all aligned at the origin), so a cluster centre is a (w, h)
pair and large boxes do not dominate the way they would under a Euclidean distance.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def shape_iou(wh: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """IoU of every (w, h) in `wh` (N, 2) with every centre (K, 2), boxes aligned at the origin."""
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(
        wh[:, None, 1], centres[None, :, 1]
    )
    union = wh[:, None, 0] * wh[:, None, 1] + centres[None, :, 0] * centres[None, :, 1] - inter
    return inter / union


def _check_sizes(wh: np.ndarray, k: int) -> np.ndarray:
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"wh must have shape (N, 2) of box widths and heights, got {wh.shape}")
    if not np.all(np.isfinite(wh)) or np.any(wh <= 0):
        bad = int(np.flatnonzero(~np.all(np.isfinite(wh) & (wh > 0), axis=1))[0])
        raise ValueError(f"wh row {bad} is {wh[bad].tolist()}: widths and heights must be > 0")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(wh) < k:
        raise ValueError(f"k-means needs at least k={k} boxes, got {len(wh)}")
    return wh


def _kmeans_plus_plus(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability ~ its squared 1 - IoU distance."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        distance = (1.0 - shape_iou(wh, np.array(centres)).max(axis=1)) ** 2
        total = distance.sum()
        if total <= 0:
            distinct = len(np.unique(wh, axis=0))
            raise ValueError(f"k-means needs at least k={k} distinct box sizes, got {distinct}")
        centres.append(wh[rng.choice(len(wh), p=distance / total)])
    return np.array(centres)


def _lloyd(wh: np.ndarray, centres: np.ndarray, iters: int) -> np.ndarray:
    """Alternate nearest-centre assignment and cluster means until the assignment is stable.

    A cluster that loses all its boxes keeps its previous centre.
    """
    assignment = np.full(len(wh), -1)
    for _ in range(iters):
        new_assignment = shape_iou(wh, centres).argmax(axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for cluster in range(len(centres)):
            members = wh[assignment == cluster]
            if len(members):
                centres[cluster] = members.mean(axis=0)
    return centres


def kmeans_anchors(
    wh: np.ndarray, k: int, seed: int = 0, iters: int = 100, restarts: int = 10
) -> np.ndarray:
    """Cluster box shapes (N, 2) into k anchor shapes (k, 2), sorted by area; deterministic.

    Distance is 1 - IoU with boxes aligned at the origin and centres are cluster means (YOLOv2).
    Of `restarts` k-means++ seedings, the one with the highest mean best IoU wins, so one
    unlucky seeding does not merge two real clusters.
    """
    wh = _check_sizes(wh, k)
    rng = np.random.default_rng(seed)
    runs = [_lloyd(wh, _kmeans_plus_plus(wh, k, rng), iters) for _ in range(max(1, restarts))]
    best = max(runs, key=lambda centres: shape_iou(wh, centres).max(axis=1).mean())
    return best[np.argsort(best.prod(axis=1), kind="stable")]


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Average over boxes of the IoU with the best-fitting anchor (the YOLOv2 'Avg IOU')."""
    wh = _check_sizes(wh, 1)
    return float(shape_iou(wh, np.asarray(anchors, dtype=np.float64)).max(axis=1).mean())


def coco_box_sizes(coco: dict[str, Any], image_size: int) -> np.ndarray:
    """Widths and heights (N, 2) of a COCO dict's boxes, as seen after resizing to image_size².

    The detectors squash every image to image_size x image_size, so x scales by
    image_size / width and y by image_size / height. Crowd annotations are skipped.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco.get("images", [])}
    scaled: list[tuple[float, float]] = []
    for ann in coco.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        where = f"annotation id={ann.get('id')!r}"
        if ann.get("image_id") not in sizes:
            raise ValueError(f"{where}: image_id {ann.get('image_id')!r} is not in images")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            raise ValueError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        width, height = sizes[ann["image_id"]]
        box_w, box_h = float(bbox[2]), float(bbox[3])
        if not (box_w > 0 and box_h > 0):
            raise ValueError(f"{where}: bbox width and height must be > 0, got {bbox!r}")
        scaled.append((box_w * image_size / width, box_h * image_size / height))
    return np.array(scaled, dtype=np.float64).reshape(-1, 2)


# What `image_size: null` and `anchor_sizes: null` resolve to (the `sightline data inspect` box
# histogram is the evidence): the models squash every image to a square of image_size.
IMAGE_SIZE_MULTIPLE = 32  # every backbone's output stride divides it
IMAGE_SIZE_RANGE = (64, 1024)
ANCHOR_QUANTILES = (0.05, 0.95)  # the box sizes the anchors span; the tails are left out


def image_size_from_data(coco: dict[str, Any]) -> int:
    """The median of the images' longer side, rounded to a multiple of 32 within [64, 1024]:
    objects keep about their own pixel size at the model input."""
    sides = [max(int(im["width"]), int(im["height"])) for im in coco.get("images", [])]
    if not sides:
        raise ValueError("no images to choose an image size from")
    low, high = IMAGE_SIZE_RANGE
    rounded = IMAGE_SIZE_MULTIPLE * round(float(np.median(sides)) / IMAGE_SIZE_MULTIPLE)
    return int(min(high, max(low, rounded)))


def anchor_sizes_from_data(wh: np.ndarray, count: int) -> list[int]:
    """`count` anchor sizes (sqrt(w h) in input pixels), geometric from the 5th to the 95th
    percentile of the training boxes' sizes, e.g. [12, 24, 48, 96]; distinct and >= 4 px."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    sizes = np.sqrt(_check_sizes(wh, 1).prod(axis=1))
    low, high = (float(q) for q in np.quantile(sizes, ANCHOR_QUANTILES))
    if count == 1 or high <= low:
        chosen = [float(np.median(sizes))] * count
    else:
        chosen = list(np.geomspace(low, high, count))
    out: list[int] = []
    for size in chosen:  # rounded, kept apart by at least a pixel, never under 4 px
        out.append(max(4, round(size), out[-1] + 1 if out else 4))
    return out
