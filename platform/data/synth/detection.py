"""Synthetic detection dataset: shapes and pictogram persons on textured backgrounds, as COCO.

Layout under `out_root`: images/{split}/{split}_{i:05d}.png and annotations/{split}.json, with
`file_name` relative to images/. Every image is drawn from its own random stream seeded by
(seed, split, index), so output is byte-identical on re-run and one split's size never changes
another split's images.

Scenes: a muted background (noise, gradient or stripes), thin distractor marks (lines, arcs, dots,
crosses), then 1-6 saturated objects painted in order, later ones occluding earlier ones.
Annotations describe what is visible: box, area and polygons come from each object's visible
pixels, objects hidden for more than 60% are not annotated, and person keypoints under another
object get visibility 1. Sizes follow COCO's area classes; in every split of at least 3 images,
image 0 holds a large object (from 128 px up), image 1 a medium and image 2 a small one on top.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sightline.data.coco import write_coco
from sightline.data.synth.params import SynthDetection

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = "1"

CIRCLE, RECTANGLE, TRIANGLE, STAR, PERSON = 1, 2, 3, 4, 5
PERSON_KEYPOINTS = ["head", "neck", "left_hand", "right_hand", "hip", "left_foot", "right_foot"]
CATEGORIES: list[dict[str, Any]] = [
    {"id": CIRCLE, "name": "circle", "supercategory": "shape"},
    {"id": RECTANGLE, "name": "rectangle", "supercategory": "shape"},
    {"id": TRIANGLE, "name": "triangle", "supercategory": "shape"},
    {"id": STAR, "name": "star", "supercategory": "shape"},
    {
        "id": PERSON,
        "name": "person",
        "supercategory": "person",
        "keypoints": PERSON_KEYPOINTS,
        # 1-based keypoint indices, as in COCO.
        "skeleton": [[1, 2], [2, 3], [2, 4], [2, 5], [5, 6], [5, 7]],
    },
]

# Target object areas in px (absolute, like COCO's classes: small < 32², large >= 96²), with
# margins so rasterisation and small occluders do not move an object across a class boundary.
AREA_RANGES = {"small": (80.0, 900.0), "medium": (1300.0, 8000.0), "large": (11500.0, 14400.0)}
MIN_IMAGE_SIZE = 64
MIN_LARGE_SCENE_SIZE = 128  # a large object plus small occluders stays >= 96² only from here
LARGE_SCENE_PROBABILITY = 0.12
MAX_OBJECTS = 6
MAX_SMALL_OCCLUDERS = 2  # on top of a large object
PLACEMENT_TRIES = 12
MAX_COVERED_FRACTION = 0.4  # a new object may hide at most this much of any earlier one
MIN_VISIBLE_FRACTION = 0.4  # below this an object counts as hidden and is not annotated
MIN_VISIBLE_PIXELS = 20
MARGIN = 1.0  # px kept free at the image border
POLYGON_UPSCALE = 4  # contours traced at 1/4 px so polygons hug pixel edges
SUBPIXEL_SHIFT = 4  # cv2 drawing with 1/16 px precision


@dataclass(frozen=True)
class Geometry:
    """An object's outline in continuous px (pixel i spans [i, i+1)).

    Filled polygons, discs (centre, radius) and thick strokes (start, end, thickness) are unioned;
    `keypoints` (K, 2) move and scale with the outline.
    """

    polygons: tuple[np.ndarray, ...] = ()
    discs: tuple[tuple[np.ndarray, float], ...] = ()
    strokes: tuple[tuple[np.ndarray, np.ndarray, float], ...] = ()
    keypoints: np.ndarray | None = None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lows = [p.min(axis=0) for p in self.polygons]
        highs = [p.max(axis=0) for p in self.polygons]
        lows += [c - r for c, r in self.discs]
        highs += [c + r for c, r in self.discs]
        lows += [np.minimum(p, q) - t / 2 for p, q, t in self.strokes]
        highs += [np.maximum(p, q) + t / 2 for p, q, t in self.strokes]
        return np.min(lows, axis=0), np.max(highs, axis=0)

    def transformed(self, scale: float, offset: np.ndarray) -> Geometry:
        def move(points: np.ndarray) -> np.ndarray:
            return points * scale + offset

        return Geometry(
            polygons=tuple(move(p) for p in self.polygons),
            discs=tuple((move(c), r * scale) for c, r in self.discs),
            strokes=tuple((move(p), move(q), t * scale) for p, q, t in self.strokes),
            keypoints=None if self.keypoints is None else move(self.keypoints),
        )

    def rasterise(self, size: int) -> np.ndarray:
        mask = np.zeros((size, size), dtype=np.uint8)
        for polygon in self.polygons:
            cv2.fillPoly(mask, [_cv_points(polygon)], 1, cv2.LINE_8, SUBPIXEL_SHIFT)
        for centre, radius in self.discs:
            cv2.circle(
                mask, _cv_point(centre), round(radius * 16), 1, -1, cv2.LINE_8, SUBPIXEL_SHIFT
            )
        for start, end, thickness in self.strokes:
            cv2.line(
                mask,
                _cv_point(start),
                _cv_point(end),
                1,
                max(1, round(thickness)),
                cv2.LINE_8,
                SUBPIXEL_SHIFT,
            )
        return mask.astype(bool)


@dataclass(frozen=True)
class ObjectSpec:
    category_id: int
    area_class: str
    forced: bool = False  # placed whatever it overlaps (it is drawn last, so fully visible)


@dataclass(frozen=True)
class PaintedObject:
    category_id: int
    geometry: Geometry
    mask: np.ndarray


def generate(out_root: Path, cfg: SynthDetection) -> dict[str, int]:
    """Write the train/val/test splits under `out_root`; returns the number of images per split."""
    if cfg.image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"synth image_size must be >= {MIN_IMAGE_SIZE}, got {cfg.image_size}")
    if cfg.seed < 0:
        raise ValueError(f"synth seed must be >= 0, got {cfg.seed}")
    counts = {split: getattr(cfg, split) for split in SPLITS}
    for split, count in counts.items():
        _write_split(Path(out_root), split, count, cfg)
    return counts


def _write_split(out_root: Path, split: str, count: int, cfg: SynthDetection) -> None:
    image_dir = out_root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in image_dir.glob(f"{split}_*.png"):
        stale.unlink()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
        pixels, annotated = render_scene(rng, cfg.image_size, index)
        file_name = f"{split}/{split}_{index:05d}.png"
        _write_png(out_root / "images" / file_name, pixels)
        image_id = index + 1
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": cfg.image_size,
                "height": cfg.image_size,
            }
        )
        for ann in annotated:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    coco = {
        "info": {
            "description": "Sightline synthetic detection",
            "version": GENERATOR_VERSION,
            "seed": cfg.seed,
            "split": split,
            "image_size": cfg.image_size,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    write_coco(coco, out_root / "annotations" / f"{split}.json")


def _write_png(path: Path, rgb: np.ndarray) -> None:
    # cv2's encoder is the fastest here (PNG writing dominates the runtime) and, like any PNG
    # without metadata chunks, gives the same bytes for the same pixels.
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    path.write_bytes(encoded.tobytes())


def render_scene(
    rng: np.random.Generator, size: int, index: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image (uint8 HxWx3) and its annotations (without id / image_id)."""
    canvas = _background(rng, size)
    _draw_clutter(canvas, rng)
    owner = np.full((size, size), -1, dtype=np.int32)  # index of the object seen at each pixel
    painted: list[PaintedObject] = []
    for spec in _scene_specs(rng, size, index):
        placed = _place(rng, spec, size, owner, len(painted))
        if placed is None:
            continue
        _paint(canvas, placed.mask, rng)
        owner[placed.mask] = len(painted)
        painted.append(placed)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.5) + _noise(rng, 2.0, canvas.shape)
    pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    annotations = [
        ann
        for k, obj in enumerate(painted)
        if (ann := _annotation(obj, owner == k, owner, k)) is not None
    ]
    return pixels, annotations


# ---- what goes into a scene ---------------------------------------------------------------------


def _scene_specs(rng: np.random.Generator, size: int, index: int) -> list[ObjectSpec]:
    if size >= MIN_LARGE_SCENE_SIZE and (index == 0 or rng.random() < LARGE_SCENE_PROBABILITY):
        large = ObjectSpec(int(rng.choice([CIRCLE, RECTANGLE])), "large")
        occluders = int(rng.integers(0, MAX_SMALL_OCCLUDERS + 1))
        return [large, *(ObjectSpec(_any_category(rng), "small") for _ in range(occluders))]
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    specs = [
        ObjectSpec(_any_category(rng), "small" if rng.random() < 0.55 else "medium")
        for _ in range(count)
    ]
    forced_class = {1: "medium", 2: "small"}.get(index)
    if forced_class:
        specs[-1] = replace(specs[-1], area_class=forced_class, forced=True)
    return specs


def _any_category(rng: np.random.Generator) -> int:
    return int(rng.integers(1, len(CATEGORIES) + 1))


def _place(
    rng: np.random.Generator, spec: ObjectSpec, size: int, owner: np.ndarray, painted: int
) -> PaintedObject | None:
    low, high = AREA_RANGES[spec.area_class]
    area = math.exp(rng.uniform(math.log(low), math.log(high)))
    shape = SHAPE_BUILDERS[spec.category_id](rng, area, size - 2 * MARGIN - 2)
    visible_areas = np.bincount(owner.ravel() + 1, minlength=painted + 1)[1:]
    for _ in range(PLACEMENT_TRIES):
        geometry = _random_position(rng, shape, size)
        mask = geometry.rasterise(size)
        covered = np.bincount(owner[mask] + 1, minlength=painted + 1)[1:]
        if spec.forced or np.all(covered <= MAX_COVERED_FRACTION * visible_areas):
            return PaintedObject(spec.category_id, geometry, mask)
    return None


def _random_position(rng: np.random.Generator, shape: Geometry, size: int) -> Geometry:
    """Shrink the shape if it does not fit, then move it to a random place inside the image."""
    low, high = shape.bounds()
    room = size - 2 * MARGIN
    scale = min(1.0, room / float(np.max(high - low)))
    low, high = low * scale, high * scale
    first = MARGIN - low
    last = np.maximum(first, size - MARGIN - high)  # equal when the shape fills the room exactly
    offset = rng.uniform(first, last)
    return shape.transformed(scale, offset)


# ---- shapes (centred near the origin; sized by target area; `limit` = largest side that fits) --


def _circle(rng: np.random.Generator, area: float, limit: float) -> Geometry:
    return Geometry(discs=((np.zeros(2), math.sqrt(area / math.pi)),))


def _rectangle(rng: np.random.Generator, area: float, limit: float) -> Geometry:
    if area >= AREA_RANGES["large"][0]:
        # Large ones stay upright, near square and clipped per side, which keeps them large.
        aspect, angle = rng.uniform(0.8, 1.25), 0.0
    else:
        aspect, angle = math.exp(rng.uniform(math.log(0.5), math.log(2.0))), rng.uniform(-35, 35)
    width = min(limit, math.sqrt(area * aspect))
    height = min(limit, math.sqrt(area / aspect))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * [width / 2, height / 2]
    return Geometry(polygons=(_rotate(corners, angle),))


def _triangle(rng: np.random.Generator, area: float, limit: float) -> Geometry:
    radius = math.sqrt(area / (3 * math.sqrt(3) / 4))
    angles = rng.uniform(0, 360) + np.array([0.0, 120.0, 240.0]) + rng.uniform(-12, 12, 3)
    radii = radius * rng.uniform(0.9, 1.1, 3)
    return Geometry(polygons=(_polar(angles, radii),))


def _star(rng: np.random.Generator, area: float, limit: float) -> Geometry:
    inner_ratio = rng.uniform(0.4, 0.5)
    outer = math.sqrt(area / (5 * inner_ratio * math.sin(math.radians(36))))
    angles = rng.uniform(0, 72) + np.arange(10) * 36.0
    radii = np.where(np.arange(10) % 2 == 0, outer, outer * inner_ratio)
    return Geometry(polygons=(_polar(angles, radii),))


PERSON_AREA_PER_HEIGHT_SQUARED = 0.27  # measured mask area / height² of the pictogram


def _person(rng: np.random.Generator, area: float, limit: float) -> Geometry:
    """A pictogram person facing the viewer (its left is the image's right), y pointing down."""
    height = math.sqrt(area / PERSON_AREA_PER_HEIGHT_SQUARED)
    head = np.array([0.0, 0.12]) * height
    neck = np.array([0.0, 0.27]) * height
    hip = np.array([rng.uniform(-0.06, 0.06), 0.62]) * height
    arm, leg = 0.4 * height, 0.4 * height

    def limb(origin: np.ndarray, length: float, angle_from_down: float) -> np.ndarray:
        angle = math.radians(angle_from_down)
        return origin + length * np.array([math.sin(angle), math.cos(angle)])

    left_hand = limb(neck, arm, rng.uniform(15, 150))
    right_hand = limb(neck, arm, -rng.uniform(15, 150))
    left_foot = limb(hip, leg, rng.uniform(8, 35))
    right_foot = limb(hip, leg, -rng.uniform(8, 35))
    limb_width, torso_width = 0.08 * height, 0.15 * height
    return Geometry(
        discs=((head, 0.12 * height),),
        strokes=(
            (neck, hip, torso_width),
            (neck, left_hand, limb_width),
            (neck, right_hand, limb_width),
            (hip, left_foot, limb_width * 1.2),
            (hip, right_foot, limb_width * 1.2),
        ),
        keypoints=np.stack([head, neck, left_hand, right_hand, hip, left_foot, right_foot]),
    )


SHAPE_BUILDERS: dict[int, Callable[[np.random.Generator, float, float], Geometry]] = {
    CIRCLE: _circle,
    RECTANGLE: _rectangle,
    TRIANGLE: _triangle,
    STAR: _star,
    PERSON: _person,
}


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return points @ np.array([[c, s], [-s, c]])


def _polar(degrees: np.ndarray, radii: np.ndarray) -> np.ndarray:
    radians = np.radians(degrees)
    return np.stack([radii * np.cos(radians), radii * np.sin(radians)], axis=1)


def _cv_points(points: np.ndarray) -> np.ndarray:
    # cv2 puts pixel centres on integers; ours are at i + 0.5.
    return np.rint((points - 0.5) * (1 << SUBPIXEL_SHIFT)).astype(np.int32)


def _cv_point(point: np.ndarray) -> tuple[int, int]:
    x, y = _cv_points(point)
    return int(x), int(y)


# ---- pixels -------------------------------------------------------------------------------------


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.85))


def _vivid_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32) * 255


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted noise, a gradient or stripes, as float32 HxWx3 in 0..255."""
    first, second = _muted_colour(rng), _muted_colour(rng)
    kind = int(rng.integers(3))
    if kind == 0:
        noise = _noise(rng, rng.uniform(20, 45), (size, size, 3))
        return first + cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.7, 3.0))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == 1:
        mix = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    else:
        periods = size / rng.uniform(6, 24)
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * periods * along + rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:
            mix = (mix > 0.5).astype(np.float32)
    mix = mix[..., None]
    return first * (1 - mix) + second * mix + _noise(rng, 4.0, (size, size, 3))


def _noise(rng: np.random.Generator, sigma: float, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _draw_clutter(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Thin marks that are not objects: lines, open arcs, dots and crosses."""
    size = canvas.shape[0]
    for _ in range(int(rng.integers(2, 9))):
        colour = tuple(
            float(v) for v in (_vivid_colour(rng) if rng.random() < 0.5 else _muted_colour(rng))
        )
        x, y = (int(v) for v in rng.integers(0, size, 2))
        kind = int(rng.integers(4))
        if kind == 0:
            end = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(canvas, (x, y), end, colour, 1)
        elif kind == 1:
            axes = tuple(int(v) for v in rng.integers(3, 20, 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(canvas, (x, y), axes, 0.0, start, start + rng.uniform(40, 200), colour, 1)
        elif kind == 2:
            cv2.circle(canvas, (x, y), int(rng.integers(1, 3)), colour, -1)
        else:
            arm = int(rng.integers(2, 5))
            cv2.line(canvas, (x - arm, y - arm), (x + arm, y + arm), colour, 1)
            cv2.line(canvas, (x - arm, y + arm), (x + arm, y - arm), colour, 1)


def _paint(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Fill the mask with a vivid colour that stands out from what is under it, lightly shaded."""
    under = canvas[mask].mean(axis=0)
    colour = max(
        (_vivid_colour(rng) for _ in range(6)), key=lambda c: float(np.linalg.norm(c - under))
    )
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)).astype(np.float32)
    ramp = (ramp - ramp.mean()) / max(float(np.ptp(ramp)), 1.0)
    shade = rng.uniform(10, 40) * ramp[:, None] + _noise(rng, 5.0, (len(xs), 3))
    canvas[ys, xs] = colour + shade


# ---- annotations --------------------------------------------------------------------------------


def _annotation(
    obj: PaintedObject, visible: np.ndarray, owner: np.ndarray, k: int
) -> dict[str, Any] | None:
    area = int(visible.sum())
    if area < max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * obj.mask.sum()):
        return None
    polygons = mask_polygons(visible)
    if not polygons:
        return None
    ys, xs = np.nonzero(visible)
    x0, y0 = int(xs.min()), int(ys.min())
    ann: dict[str, Any] = {
        "category_id": obj.category_id,
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "area": area,
        "iscrowd": 0,
        "segmentation": polygons,
    }
    if obj.geometry.keypoints is not None:
        ann["keypoints"] = _keypoint_triples(obj.geometry.keypoints, owner, k)
        ann["num_keypoints"] = len(obj.geometry.keypoints)
    return ann


def _keypoint_triples(points: np.ndarray, owner: np.ndarray, k: int) -> list[float | int]:
    """[x, y, v] per keypoint: v = 2 where the object itself is seen there, 1 where occluded."""
    size = owner.shape[0]
    triples: list[float | int] = []
    for x, y in points:
        column, row = (min(max(int(v), 0), size - 1) for v in (x, y))
        triples += [round(float(x), 2), round(float(y), 2), 2 if owner[row, column] == k else 1]
    return triples


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer outlines of a binary mask as COCO polygons [x1, y1, x2, y2, ...] along pixel edges."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    x0, y0, up = int(xs.min()), int(ys.min()), POLYGON_UPSCALE
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1].astype(np.uint8)
    big = cv2.resize(crop, None, fx=up, fy=up, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2)
        if len(points) >= 3:
            corners = (points + 0.5) / up + [x0, y0]
            polygons.append([float(v) for v in corners.ravel()])
    return polygons
