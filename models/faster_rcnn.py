"""Faster R-CNN: a Region Proposal Network and Fast R-CNN heads sharing one backbone.

torchvision supplies the mechanism (AnchorGenerator, RPN with 3x3 conv + 1x1 cls/reg heads,
NMS on objectness, RoIAlign, box heads, the four losses); this module picks a backbone that
trains from scratch and exposes the paper's knobs (anchor sizes x ratios, top-N proposals).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from sightline.models.backbones import SmallConvNet, load_local_weights
from sightline.models.targets import check_rcnn_inputs


def build(
    num_classes: int,
    *,
    image_size: int = 128,
    width: int = 32,
    stages: int = 3,
    anchor_sizes: Sequence[int] = (16, 32, 64),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 300,
    box_batch_size_per_image: int = 512,
    representation_size: int = 256,
    box_detections_per_img: int = 100,
    weights: str | None = None,
) -> FasterRCNN:
    """Build a Faster R-CNN; `num_classes` counts the background class (label 0)."""
    backbone = SmallConvNet(width=width, stages=stages)
    # One feature map, k = len(sizes) * len(ratios) anchors per location, as in the paper.
    anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, representation_size)
    model = FasterRCNN(
        backbone,
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=box_detections_per_img,
    )
    # Mask/keypoint variants attach their branch to this model; the hook reads the heads at
    # call time, so it checks masks and keypoints for them too.
    model.register_forward_pre_hook(check_rcnn_inputs, with_kwargs=True)
    load_local_weights(model, weights)
    return model
