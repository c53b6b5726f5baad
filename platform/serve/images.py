"""Uploaded bytes -> an RGB PIL image, with every way an upload can be bad turned into a 4xx.

Size limits are checked before any pixel is decoded: the byte count first, then the pixel count
from the file header (Pillow's `Image.open` is lazy), so a decompression bomb never allocates.
Pixels are then decoded eagerly so a truncated or corrupt file fails here, not in the model.
Truncated files are never accepted: `ImageFile.LOAD_TRUNCATED_IMAGES` is left at its default.
Degenerate shapes (a side under MIN_IMAGE_SIDE, or sides further apart than MAX_ASPECT_RATIO)
are refused from the header too: detectors scale the longer side to their input size, and such
an image would leave the shorter one at zero pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sightline.serve.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType

READABLE_FORMATS = "JPEG, PNG, BMP, GIF, TIFF or WEBP"
# Integer modes wider than 8 bits; Pillow's own convert("RGB") clips them at 255 instead of scaling.
WIDE_INTEGER_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
MIN_IMAGE_SIDE = 8  # pixels
MAX_ASPECT_RATIO = 20  # longer side / shorter side


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an uploaded image (first frame, EXIF orientation applied) into RGB.

    Raises BadRequest (empty, truncated or corrupt), PayloadTooLarge (more than `max_bytes`
    bytes or `max_pixels` pixels), Unprocessable (a degenerate shape) or UnsupportedMediaType
    (not an image Pillow can read).
    """
    check_byte_size(data, max_bytes)
    with open_lazily(data) as image:
        check_pixel_count(image, max_pixels)
        check_shape(image)
        return to_rgb(decode_upright(image))


def check_byte_size(data: bytes, max_bytes: int) -> None:
    if not data:
        raise BadRequest("empty_image", "the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            "image_too_large", f"the image is {len(data)} bytes; the limit is {max_bytes} bytes"
        )


def open_lazily(data: bytes) -> Image.Image:
    """Read only the header: format, mode and size."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge("too_many_pixels", f"the image has too many pixels: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedMediaType(
            "not_an_image", f"the upload is not an image Pillow can read ({READABLE_FORMATS})"
        ) from None


def check_pixel_count(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadRequest(
            "corrupt_image", f"the {image.format} header declares a {width}x{height} image"
        )
    if width * height > max_pixels:
        raise PayloadTooLarge(
            "too_many_pixels",
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
        )


def check_shape(image: Image.Image) -> None:
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise Unprocessable(
            "image_too_small",
            f"the image is {width}x{height} pixels; each side must be at least {MIN_IMAGE_SIDE}",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise Unprocessable(
            "extreme_aspect_ratio",
            f"the image is {width}x{height} pixels; its longer side may be at most "
            f"{MAX_ASPECT_RATIO} times its shorter side",
        )


def decode_upright(image: Image.Image) -> Image.Image:
    """Decode every pixel of the first frame, then turn it as its EXIF orientation says."""
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    # Pillow's decoders raise many types on bad data (OSError for truncation, SyntaxError,
    # ValueError, struct.error, EOFError, ...): each one means the upload is broken.
    except Exception as exc:
        raise BadRequest(
            "corrupt_image", f"the {image.format} image is truncated or corrupt: {exc}"
        ) from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in WIDE_INTEGER_MODES:
        image = scale_to_8_bit(image)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise UnsupportedMediaType(
            "unsupported_color_mode", f"cannot convert a {image.mode} image to RGB: {exc}"
        ) from None


def scale_to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grey -> 8-bit grey, mapping the 16-bit range onto 0..255."""
    values = np.asarray(image, dtype=np.float32)
    return Image.fromarray(np.clip(values / 257.0, 0, 255).round().astype(np.uint8))


def inference_pixels(image: Image.Image, max_side: int) -> tuple[np.ndarray, float]:
    """HxWx3 uint8 pixels for inference, shrunk so neither side exceeds `max_side`.

    Returns the pixels and the factor that maps boxes on them back to `image`'s pixels.
    """
    scale = max(image.size) / max_side
    if scale <= 1.0:
        return np.asarray(image), 1.0
    width, height = image.size
    small = image.resize(
        (max(1, round(width / scale)), max(1, round(height / scale))), Image.BILINEAR
    )
    return np.asarray(small), width / small.width
