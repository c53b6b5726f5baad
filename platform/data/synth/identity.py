"""Synthetic identity dataset: simple cartoon 'faces', one folder per person.

Layout under `out_root`: `<identity>/<n>.png` (identity `person_00000`, n `000`), the layout
`sightline.data.identity.read_identity_folders` reads. Deterministic: an identity's traits come
from a random stream seeded by (seed, identity) and each image's nuisances from one seeded by
(seed, identity, image), so output is byte-identical on re-run and adding identities or images
never changes the existing ones.

What makes a person (fixed per identity): face shape (super-ellipse width, height, squareness),
ears, eye spacing / height / size / iris colour, eyebrow thickness and tilt, nose length and
width, mouth width and height, skin, hair and lip colours, hair style, a beard.
What varies per image (nuisances): position, scale and in-plane rotation, a lighting gradient
and overall gain, expression (mouth curve, mouth opening, eye openness, raised brows), clothes
colour, background, occluders (sunglasses, hat, a mask or a random patch) and sensor noise.
Shapes are evaluated analytically on a supersampled grid and averaged down (anti-aliasing).
"""

from __future__ import annotations

import colorsys
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sightline.data.synth.params import SynthIdentity

GENERATOR_VERSION = "1"
IDENTITY_PREFIX = "person_"
SUPERSAMPLE = 4
FACE_CENTRE_Y = -0.05  # above the image centre, leaving room for the shoulders
HAIR_STYLES = ("bald", "short", "long", "fringe")
OCCLUDERS = ("none", "sunglasses", "hat", "mask", "patch")
OCCLUDER_WEIGHTS = (0.6, 0.1, 0.1, 0.1, 0.1)


Colour = tuple[float, float, float]  # RGB in [0, 1]


@dataclass(frozen=True)
class FaceTraits:
    """What defines one person. Lengths are fractions of the image side, face centre at 0."""

    face_half_width: float
    face_half_height: float
    squareness: float  # super-ellipse exponent: 2 = ellipse, larger = squarer
    ear_size: float
    eye_half_spacing: float
    eye_height: float  # above the face centre
    eye_radius: float
    iris: Colour
    brow_thickness: float
    brow_tilt: float  # radians, positive = outer end down
    nose_length: float
    nose_width: float
    mouth_half_width: float
    mouth_depth: float  # below the face centre
    skin: Colour
    hair: Colour
    lips: Colour
    hair_style: str
    beard: bool


@dataclass(frozen=True)
class Nuisance:
    """What varies between two images of the same person."""

    shift: tuple[float, float]
    scale: float
    rotation: float  # radians
    light_direction: float  # radians
    light_strength: float
    gain: float
    smile: float  # -1 frown .. 1 smile
    mouth_open: float  # 0 closed .. 1 open
    eye_openness: float  # 0 shut .. 1 open
    brow_raise: float
    clothes: Colour
    background: Colour
    occluder: str
    occluder_colour: Colour
    patch: tuple[float, float, float, float]  # centre x, centre y, half width, half height
    noise: float  # std of additive noise, in [0, 1] intensity
    noise_seed: int


def _hsv(h: float, s: float, v: float) -> Colour:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def identity_traits(rng: np.random.Generator) -> FaceTraits:
    """Draw one person's fixed appearance."""
    hair_hue = rng.choice([0.07, 0.08, 0.1, 0.02, 0.0])
    return FaceTraits(
        face_half_width=rng.uniform(0.21, 0.29),
        face_half_height=rng.uniform(0.27, 0.34),
        squareness=rng.uniform(2.0, 4.5),
        ear_size=rng.uniform(0.03, 0.06),
        eye_half_spacing=rng.uniform(0.07, 0.13),
        eye_height=rng.uniform(0.02, 0.09),
        eye_radius=rng.uniform(0.025, 0.045),
        iris=_hsv(rng.choice([0.08, 0.3, 0.58, 0.1]), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.7)),
        brow_thickness=rng.uniform(0.008, 0.025),
        brow_tilt=rng.uniform(-0.35, 0.35),
        nose_length=rng.uniform(0.05, 0.13),
        nose_width=rng.uniform(0.015, 0.045),
        mouth_half_width=rng.uniform(0.05, 0.11),
        mouth_depth=rng.uniform(0.12, 0.2),
        skin=_hsv(rng.uniform(0.02, 0.11), rng.uniform(0.2, 0.65), rng.uniform(0.35, 0.95)),
        hair=_hsv(hair_hue, rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.9)),
        lips=_hsv(rng.uniform(-0.03, 0.03), rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.8)),
        hair_style=str(rng.choice(HAIR_STYLES)),
        beard=bool(rng.random() < 0.2),
    )


def image_nuisance(rng: np.random.Generator) -> Nuisance:
    """Draw one image's pose, light, expression, clothes, occlusion and noise."""
    return Nuisance(
        shift=(rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.06)),
        scale=rng.uniform(0.9, 1.1),
        rotation=rng.uniform(-0.17, 0.17),
        light_direction=rng.uniform(0.0, 2 * np.pi),
        light_strength=rng.uniform(0.0, 0.6),
        gain=rng.uniform(0.75, 1.2),
        smile=rng.uniform(-1.0, 1.0),
        mouth_open=max(0.0, rng.uniform(-0.6, 1.0)),
        eye_openness=min(1.0, rng.uniform(0.3, 1.3)),
        brow_raise=rng.uniform(0.0, 0.03),
        clothes=_hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.9)),
        background=_hsv(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.3, 0.9)),
        occluder=str(rng.choice(OCCLUDERS, p=OCCLUDER_WEIGHTS)),
        occluder_colour=_hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.05, 0.9)),
        patch=(
            rng.uniform(-0.3, 0.3),
            rng.uniform(-0.3, 0.3),
            rng.uniform(0.06, 0.15),
            rng.uniform(0.06, 0.15),
        ),
        noise=rng.uniform(0.0, 0.04),
        noise_seed=int(rng.integers(2**32)),
    )


class _Canvas:
    """A supersampled RGB canvas painted with masks given in the face's own coordinates."""

    def __init__(self, size: int, nuisance: Nuisance) -> None:
        n = size * SUPERSAMPLE
        centres = ((np.arange(n) + 0.5) / n - 0.5).astype(np.float32)  # in [-0.5, 0.5)
        y, x = np.meshgrid(centres, centres, indexing="ij")
        self.x, self.y = x, y
        # Face coordinates: undo the pose (shift, then rotation and scale about the centre).
        dx, dy = x - nuisance.shift[0], y - nuisance.shift[1] - FACE_CENTRE_Y
        cos, sin = np.cos(nuisance.rotation), np.sin(nuisance.rotation)
        self.u = (cos * dx + sin * dy) / nuisance.scale
        self.v = (-sin * dx + cos * dy) / nuisance.scale
        self.pixels = np.empty((n, n, 3), dtype=np.float32)
        self.pixels[:] = nuisance.background

    def paint(self, mask: np.ndarray, colour: Colour) -> None:
        self.pixels[mask] = colour

    def downsampled(self, size: int) -> np.ndarray:
        return self.pixels.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))


def _ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((u - cx) / a) ** 2 + ((v - cy) / b) ** 2 <= 1.0


def _super_ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float, p: float) -> np.ndarray:
    return np.abs(u / a) ** p + np.abs(v / b) ** p <= 1.0


def _bar(
    u: np.ndarray, v: np.ndarray, cx: float, cy: float, half_length: float, half_width: float,
    angle: float,
) -> np.ndarray:  # fmt: skip
    """A rotated rectangle centred at (cx, cy)."""
    cos, sin = np.cos(angle), np.sin(angle)
    along = (u - cx) * cos + (v - cy) * sin
    across = -(u - cx) * sin + (v - cy) * cos
    return (np.abs(along) <= half_length) & (np.abs(across) <= half_width)


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(min(1.0, c * factor) for c in colour)  # type: ignore[return-value]


def render_face(traits: FaceTraits, nuisance: Nuisance, size: int) -> np.ndarray:
    """One image, uint8 (size, size, 3) RGB."""
    canvas = _Canvas(size, nuisance)
    u, v = canvas.u, canvas.v
    t = traits
    # Body and neck, then hair behind the head, ears, face.
    canvas.paint(_ellipse(u, v, 0.0, 0.62, 0.42, 0.26), nuisance.clothes)
    canvas.paint(_bar(u, v, 0.0, 0.36, 0.08, 0.07, 0.0), _shade(t.skin, 0.85))
    if t.hair_style == "long":
        hair_back = _ellipse(u, v, 0.0, 0.06, t.face_half_width * 1.25, t.face_half_height * 1.2)
        canvas.paint(hair_back, t.hair)
    for side in (-1.0, 1.0):
        ear = _ellipse(u, v, side * t.face_half_width, 0.0, t.ear_size, t.ear_size * 1.6)
        canvas.paint(ear, _shade(t.skin, 0.9))
    face = _super_ellipse(u, v, t.face_half_width, t.face_half_height, t.squareness)
    canvas.paint(face, t.skin)
    if t.beard:
        canvas.paint(face & (v > t.mouth_depth - 0.03), _shade(t.hair, 0.9))
    if t.hair_style != "bald":
        cap = _ellipse(u, v, 0.0, 0.0, t.face_half_width * 1.08, t.face_half_height * 1.08)
        hairline = -t.face_half_height * (0.35 if t.hair_style == "fringe" else 0.6)
        canvas.paint(cap & (v < hairline), t.hair)
    _paint_eyes(canvas, t, nuisance)
    _paint_nose_and_mouth(canvas, t, nuisance)
    _paint_occluder(canvas, t, nuisance)
    pixels = canvas.downsampled(size)
    pixels = _lit(pixels, nuisance)
    noise_rng = np.random.default_rng(nuisance.noise_seed)
    pixels = pixels + noise_rng.normal(0.0, nuisance.noise, pixels.shape)
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _paint_eyes(canvas: _Canvas, t: FaceTraits, nuisance: Nuisance) -> None:
    u, v = canvas.u, canvas.v
    eye_y = -t.eye_height
    for side in (-1.0, 1.0):
        eye_x = side * t.eye_half_spacing
        height = t.eye_radius * max(0.15, nuisance.eye_openness) * 0.75
        eye = _ellipse(u, v, eye_x, eye_y, t.eye_radius * 1.3, height)
        canvas.paint(eye, (0.95, 0.95, 0.93))
        canvas.paint(eye & _ellipse(u, v, eye_x, eye_y, t.eye_radius * 0.7, t.eye_radius * 0.7),
                     t.iris)  # fmt: skip
        canvas.paint(eye & _ellipse(u, v, eye_x, eye_y, t.eye_radius * 0.3, t.eye_radius * 0.3),
                     (0.05, 0.05, 0.05))  # fmt: skip
        brow_y = eye_y - t.eye_radius * 1.6 - nuisance.brow_raise
        brow = _bar(u, v, eye_x, brow_y, t.eye_radius * 1.5, t.brow_thickness, side * t.brow_tilt)
        canvas.paint(brow, _shade(t.hair, 0.8))


def _paint_nose_and_mouth(canvas: _Canvas, t: FaceTraits, nuisance: Nuisance) -> None:
    u, v = canvas.u, canvas.v
    nose_top = -t.eye_height + t.eye_radius
    nose_bottom = nose_top + t.nose_length
    # A wedge widening towards the tip, a shade darker than the skin.
    along = np.clip((v - nose_top) / max(t.nose_length, 1e-6), 0.0, 1.0)
    nose = (v >= nose_top) & (v <= nose_bottom) & (np.abs(u) <= t.nose_width * (0.3 + along))
    canvas.paint(nose, _shade(t.skin, 0.8))
    # Mouth: a parabolic band; smile bends the corners up, an open mouth thickens it.
    half = t.mouth_half_width
    curve = t.mouth_depth - nuisance.smile * 0.03 * (1.0 - (u / half) ** 2)
    thickness = 0.012 + 0.025 * nuisance.mouth_open
    mouth = (np.abs(u) <= half) & (np.abs(v - curve) <= thickness)
    canvas.paint(mouth, t.lips)
    if nuisance.mouth_open > 0.3:
        inner = (np.abs(u) <= half * 0.8) & (np.abs(v - curve) <= thickness * 0.5)
        canvas.paint(inner, (0.15, 0.05, 0.05))


def _paint_occluder(canvas: _Canvas, t: FaceTraits, nuisance: Nuisance) -> None:
    u, v = canvas.u, canvas.v
    colour = nuisance.occluder_colour
    if nuisance.occluder == "sunglasses":
        for side in (-1.0, 1.0):
            lens = _ellipse(u, v, side * t.eye_half_spacing, -t.eye_height, 0.06, 0.04)
            canvas.paint(lens, _shade(colour, 0.3))
        canvas.paint(_bar(u, v, 0.0, -t.eye_height, t.eye_half_spacing, 0.006, 0.0), colour)
    elif nuisance.occluder == "hat":
        crown = _ellipse(u, v, 0.0, -t.face_half_height * 0.8, t.face_half_width * 1.2, 0.14)
        canvas.paint(crown & (v < -t.face_half_height * 0.55), colour)
    elif nuisance.occluder == "mask":
        cover = _super_ellipse(u, v, t.face_half_width, t.face_half_height, t.squareness)
        canvas.paint(cover & (v > t.mouth_depth - t.nose_length * 0.6), colour)
    elif nuisance.occluder == "patch":
        cx, cy, hw, hh = nuisance.patch
        patch = (np.abs(canvas.x - cx) <= hw) & (np.abs(canvas.y - cy) <= hh)
        canvas.paint(patch, colour)


def _lit(pixels: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """A linear lighting gradient across the image times an overall gain."""
    size = pixels.shape[0]
    centres = (np.arange(size) + 0.5) / size - 0.5
    y, x = np.meshgrid(centres, centres, indexing="ij")
    along = x * np.cos(nuisance.light_direction) + y * np.sin(nuisance.light_direction)
    light = nuisance.gain * (1.0 + nuisance.light_strength * 2.0 * along)
    return pixels * light[..., None]


def identity_name(index: int) -> str:
    return f"{IDENTITY_PREFIX}{index:05d}"


def render_identity_image(cfg: SynthIdentity, identity: int, image: int) -> np.ndarray:
    """Image `image` of identity `identity` (uint8 RGB), the same bytes on every call."""
    traits = identity_traits(np.random.default_rng([cfg.seed, identity]))
    nuisance = image_nuisance(np.random.default_rng([cfg.seed, identity, image]))
    return render_face(traits, nuisance, cfg.image_size)


def generate(out_root: Path, cfg: SynthIdentity) -> dict[str, int]:
    """Write `<out_root>/<identity>/<n>.png`; returns the number of identities and images.

    Identity folders a previous, larger run left behind (same `person_` prefix) are removed so
    the folder always holds exactly this configuration; other folders are left alone.
    """
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    wanted = {identity_name(i) for i in range(cfg.identities)}
    for stale in out_root.glob(f"{IDENTITY_PREFIX}*"):
        if stale.is_dir() and stale.name not in wanted:
            shutil.rmtree(stale)
    for identity in range(cfg.identities):
        folder = out_root / identity_name(identity)
        folder.mkdir(exist_ok=True)
        for stale_png in folder.glob("*.png"):
            stale_png.unlink()
        for image in range(cfg.images_per_identity):
            _write_png(folder / f"{image:03d}.png", render_identity_image(cfg, identity, image))
    return {"identities": cfg.identities, "images": cfg.identities * cfg.images_per_identity}


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    path.write_bytes(encoded.tobytes())
