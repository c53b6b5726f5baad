"""The COCO evaluator against hand-made cases with known answers (real pycocotools)."""

from __future__ import annotations

import torch
from pycocotools.coco import COCO

from sightline.evaluate.coco import SUMMARY_NAMES, box_xyxy_to_xywh, coco_records, evaluate, predict


def _gt() -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [10, 10, 40, 40],
                "area": 1600,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 7,
                "bbox": [50, 20, 30, 60],
                "area": 1800,
                "iscrowd": 0,
            },
        ],
    }
    coco.createIndex()
    return coco


def test_perfect_detections_score_one() -> None:
    results = [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "score": 0.9},
        {"image_id": 2, "category_id": 7, "bbox": [50, 20, 30, 60], "score": 0.8},
    ]
    metrics, _ = evaluate(_gt(), results)
    assert list(metrics) == SUMMARY_NAMES
    assert metrics["map"] == 1.0 and metrics["map_50"] == 1.0 and metrics["mar_100"] == 1.0
    assert metrics["map_small"] == -1.0  # no small objects: COCO's "absent" marker is kept


def test_wrong_class_and_no_detections_score_zero() -> None:
    wrong = [{"image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 40], "score": 0.9}]
    assert evaluate(_gt(), wrong)[0]["map"] == 0.0
    assert evaluate(_gt(), [])[0] == dict.fromkeys(SUMMARY_NAMES, 0.0)


def test_predict_maps_labels_to_category_ids_and_boxes_to_xywh() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, images):
            return [
                {
                    "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]),
                    "labels": torch.tensor([1]),
                    "scores": torch.tensor([0.9]),
                }
                for _ in images
            ]

    results = predict(Fixed(), [(1, torch.zeros(3, 100, 100))], lambda label: {1: 3, 2: 7}[label])
    assert results["bbox"] == [
        {"image_id": 1, "category_id": 3, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 0.9}
    ]
    assert box_xyxy_to_xywh(torch.tensor([[1.0, 2.0, 4.0, 8.0]])) == [[1.0, 2.0, 3.0, 6.0]]


def _gt_with_masks_and_keypoints() -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 64, "height": 64}],
        "categories": [
            {"id": 5, "name": "person", "keypoints": ["head", "hand", "foot"], "skeleton": []}
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "bbox": [10, 10, 20, 30],
                "area": 600,
                "iscrowd": 0,
                "segmentation": [[10, 10, 30, 10, 30, 40, 10, 40]],
                "keypoints": [20, 12, 2, 12, 25, 2, 25, 38, 1],
                "num_keypoints": 3,
            }
        ],
    }
    coco.createIndex()
    return coco


def test_masks_and_keypoints_are_scored_with_their_own_iou_types() -> None:
    gt = _gt_with_masks_and_keypoints()
    mask = torch.zeros(1, 1, 64, 64)
    mask[0, 0, 10:40, 10:30] = 0.9
    output = {
        "boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.8]),
        "masks": mask,
        "keypoints": torch.tensor([[[20.0, 12.0, 1.0], [12.0, 25.0, 1.0], [25.0, 38.0, 1.0]]]),
    }
    records = coco_records(1, output, lambda label: 5)
    assert set(records) == {"bbox", "segm", "keypoints"}
    assert evaluate(gt, records["segm"], "segm")[0]["mask_map"] == 1.0
    kp = evaluate(gt, records["keypoints"], "keypoints")[0]
    assert kp["kp_map"] == 1.0  # 3 keypoints: scored with the dataset's own sigmas
    shifted = {**output, "keypoints": output["keypoints"] + 15.0}
    assert (
        evaluate(gt, coco_records(1, shifted, lambda label: 5)["keypoints"], "keypoints")[0][
            "kp_map"
        ]
        < 0.5
    )


def test_an_image_without_detections_gives_no_mask_records() -> None:
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "masks": torch.zeros(0, 1, 8, 8),
    }
    assert coco_records(1, empty, lambda label: 5) == {"bbox": [], "segm": []}
