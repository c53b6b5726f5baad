"""What the crop-classifying families (sliding_window, rcnn) share: the image at model scale,
and boxes warped to a fixed square with a margin of context, via RoIAlign on the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align


def to_model_scale(
    image: Tensor, image_size: int, mean: Tensor, std: Tensor
) -> tuple[Tensor, float]:
    """The image normalised, its longer side scaled to `image_size`; and that scale."""
    scale = image_size / max(image.shape[-2:])
    if scale != 1.0:
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", antialias=scale < 1
        )[0]
    return (image - mean) / std, scale


def warp_with_context(image: Tensor, boxes: Tensor, crop_size: int, margin: float) -> Tensor:
    """(N, C, crop, crop) warps of xyxy `boxes`, each widened by `margin` x its size per side."""
    pad = (boxes[:, 2:] - boxes[:, :2]) * margin
    padded = torch.cat([boxes[:, :2] - pad, boxes[:, 2:] + pad], dim=1).to(image)
    return roi_align(image[None], [padded], output_size=crop_size, sampling_ratio=2, aligned=True)
