"""Mask R-CNN: Faster R-CNN plus a per-RoI, per-class mask branch beside the box branch.

torchvision's `MaskRCNN` is exactly a `FasterRCNN` whose `roi_heads` also hold a mask RoI pool,
a mask head and a mask predictor (see its `__init__`); `RoIHeads` trains and runs the branch
whenever the three are set, and the transform pastes the masks back at each input's size. So
this family takes the faster_rcnn family's model, with every one of its knobs (backbone, anchor
sizes x ratios, top-N proposals), and attaches a small mask branch: RoIAlign 14x14 -> a few 3x3
convs -> 2x deconvolution -> one 28x28 mask logit map per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from sightline.models import faster_rcnn
from sightline.models.local_weights import load_local_weights


def build(
    num_classes: int,
    *,
    mask_roi_size: int = 14,
    mask_layers: Sequence[int] = (32, 32),
    mask_dim_reduced: int = 32,
    weights: str | None = None,
    **faster_rcnn_params: Any,
) -> FasterRCNN:
    """Build a Mask R-CNN; `num_classes` counts the background class (label 0).

    `faster_rcnn_params` are the faster_rcnn family's knobs (`image_size`, `width`, `stages`,
    `anchor_sizes`, `aspect_ratios`, `rpn_*_top_n_*`, ...). The mask predictor outputs
    2 * `mask_roi_size` px masks (28x28 for the default 14x14 RoIAlign).
    """
    if not mask_layers:
        raise ValueError("mask_layers must name at least one conv layer width, got []")
    model = faster_rcnn.build(num_classes, **faster_rcnn_params)
    heads = model.roi_heads
    heads.mask_roi_pool = MultiScaleRoIAlign(
        featmap_names=["0"], output_size=mask_roi_size, sampling_ratio=2
    )
    heads.mask_head = MaskRCNNHeads(model.backbone.out_channels, list(mask_layers), dilation=1)
    heads.mask_predictor = MaskRCNNPredictor(mask_layers[-1], mask_dim_reduced, num_classes)
    # After the mask branch exists, so a Mask R-CNN checkpoint restores all of it.
    load_local_weights(model, weights)
    return model
