"""The COCO evaluator against hand-made cases with known answers (real pycocotools)."""

from __future__ import annotations

import torch
from pycocotools.coco import COCO

from sightline.evaluate.coco import SUMMARY_NAMES, box_xyxy_to_xywh, evaluate, predict


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
    assert results == [
        {"image_id": 1, "category_id": 3, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 0.9}
    ]
    assert box_xyxy_to_xywh(torch.tensor([[1.0, 2.0, 4.0, 8.0]])) == [[1.0, 2.0, 3.0, 6.0]]
