"""Keypoint R-CNN: the pose variant of Mask R-CNN, one heatmap per keypoint per RoI.

Like `mask_rcnn`, this takes the faster_rcnn family's model with all of its knobs and attaches
the branch torchvision's `KeypointRCNN.__init__` would attach (`RoIHeads` runs it whenever the
keypoint RoI pool, head and predictor are set): RoIAlign 14x14 -> a few 3x3 convs -> 2x
deconvolution + 2x bilinear upsampling -> K heatmaps of 56x56, trained with a per-keypoint
softmax cross-entropy over heatmap positions; keypoints with visibility 0 are ignored.

Trained on the keypoint-bearing class only (typically `num_classes=2`: background + person).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from sightline.models import faster_rcnn
from sightline.models.local_weights import load_local_weights


def build(
    num_classes: int,
    *,
    num_keypoints: int,
    keypoint_roi_size: int = 14,
    keypoint_layers: Sequence[int] = (32, 32, 32, 32),
    weights: str | None = None,
    **faster_rcnn_params: Any,
) -> FasterRCNN:
    """Build a Keypoint R-CNN; `num_classes` counts the background class (label 0) and
    `num_keypoints` is what the training data's categories name (the detection workload reads
    it from the dataset, so params.yaml never keeps it in step by hand).

    `faster_rcnn_params` are the faster_rcnn family's knobs (`image_size`, `width`, `stages`,
    `anchor_sizes`, `aspect_ratios`, `rpn_*_top_n_*`, ...). Heatmaps are 4 * `keypoint_roi_size`
    px per side (56x56 for the default 14x14 RoIAlign).
    """
    if num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    if not keypoint_layers:
        raise ValueError("keypoint_layers must name at least one conv layer width, got []")
    model = faster_rcnn.build(num_classes, **faster_rcnn_params)
    heads = model.roi_heads
    heads.keypoint_roi_pool = MultiScaleRoIAlign(
        featmap_names=["0"], output_size=keypoint_roi_size, sampling_ratio=2
    )
    heads.keypoint_head = KeypointRCNNHeads(model.backbone.out_channels, list(keypoint_layers))
    heads.keypoint_predictor = KeypointRCNNPredictor(keypoint_layers[-1], num_keypoints)
    # After the keypoint branch exists, so a Keypoint R-CNN checkpoint restores all of it.
    load_local_weights(model, weights)
    return model
