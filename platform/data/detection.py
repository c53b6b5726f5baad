"""Detection splits (any layout of sightline.data.layouts) -> a pycocotools index and a
torchvision-style Dataset.

Labels: label = 1 + position of the category id in the sorted category ids, label 0 is
background, so non-contiguous COCO ids (1..90 with gaps) map to 1..C. Crowd annotations are kept
in the COCO index (evaluation ignores them there) and dropped from training targets, as
torchvision's detection references do.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from sightline.data.coco import check_coco_index
from sightline.data.errors import DatasetError
from sightline.data.layouts import SplitSource, find_dataset
from sightline.data.sources import DetectionData

Target = dict[str, Tensor]

# Scale to [0, 1] for modes that are not 8-bit per channel (16-bit PNG loads as I;16 or I).
HIGH_DEPTH_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 1.0}


def load_split_source(cfg: DetectionData, split: str, project_root: Path) -> SplitSource:
    """One split of the configured dataset, in whichever layout it is (sightline.data.layouts)."""
    return find_dataset(cfg, project_root).source(split)


def coco_index(coco: dict[str, Any]) -> COCO:
    """A pycocotools COCO object over an in-memory dict (no file read, no console chatter)."""
    index = COCO()
    index.dataset = coco
    with contextlib.redirect_stdout(io.StringIO()):
        index.createIndex()
    return index


class DetectionSplit:
    """One split: its COCO index, image folder and the label <-> category id mapping."""

    def __init__(self, source: SplitSource) -> None:
        check_coco_index(source.coco, source.origin)
        self.origin = source.origin
        self.coco = coco_index(source.coco)
        self.image_dir = Path(source.image_dir)
        self.image_ids: list[int] = [image["id"] for image in source.coco["images"]]
        self.category_ids: list[int] = sorted(self.coco.cats)
        self.class_names: list[str] = [self.coco.cats[cid]["name"] for cid in self.category_ids]
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids, start=1)}

    @classmethod
    def load(cls, cfg: DetectionData, split: str, project_root: Path) -> DetectionSplit:
        return cls(load_split_source(cfg, split, project_root))

    @property
    def num_classes(self) -> int:
        """Number of object classes, background excluded."""
        return len(self.category_ids)

    @property
    def keypoint_names(self) -> list[str]:
        """The keypoints of the category that names the most (none: [])."""
        lists = [list(cat.get("keypoints") or []) for cat in self.coco.cats.values()]
        return max(lists, key=len, default=[])

    @property
    def num_keypoints(self) -> int:
        """The most keypoints any category names (0 when none has keypoints)."""
        return len(self.keypoint_names)

    def label_to_category_id(self, label: int) -> int:
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(
                f"label {label} is not in 1..{len(self.category_ids)} (0 = background)"
            )
        return self.category_ids[label - 1]

    def category_id_to_label(self, category_id: int) -> int:
        try:
            return self._label_of[category_id]
        except KeyError:
            raise DatasetError.at(
                self.origin, f"unknown category id {category_id}", field="category_id"
            ) from None

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def __len__(self) -> int:
        return len(self.image_ids)


class DetectionDataset(Dataset[tuple[Tensor, Target]]):
    """Items are (image float32 3xHxW in [0, 1], target dict in torchvision's detection format).

    Target: boxes (N, 4) float32 xyxy absolute px, labels int64, image_id int64, area float32,
    iscrowd int64, masks (N, H, W) uint8 with `with_masks`, keypoints (N, K, 3) float32 with
    `with_keypoints`. Augmentation wraps it (sightline.data.augment.AugmentedDataset), after
    any proposals are attached, so that they move with the pixels.
    """

    def __init__(
        self,
        split: DetectionSplit,
        *,
        with_masks: bool = False,
        with_keypoints: bool = False,
    ) -> None:
        if with_keypoints and split.num_keypoints == 0:
            raise DatasetError.at(
                split.origin, "no category defines keypoints", field="categories.keypoints"
            )
        self.split = split
        self.with_masks = with_masks
        self.with_keypoints = with_keypoints

    def __len__(self) -> int:
        return len(self.split.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.split.image_ids[index]
        image = load_rgb_image(self.split.image_path(image_id), f"image id {image_id}")
        self._check_size(image_id, image)
        return image, self._target(image_id)

    def _check_size(self, image_id: int, image: Tensor) -> None:
        record = self.split.coco.imgs[image_id]
        height, width = image.shape[-2:]
        if (width, height) != (record["width"], record["height"]):
            raise DatasetError.at(
                self.split.origin,
                f"{self.split.image_path(image_id)} is {width}x{height} (after EXIF orientation) "
                f"but the record says {record['width']}x{record['height']}",
                record=f"image id {image_id}",
                field="width/height",
            )

    def _target(self, image_id: int) -> Target:
        coco = self.split.coco
        anns = [ann for ann in coco.imgToAnns[image_id] if not ann.get("iscrowd", 0)]
        record = coco.imgs[image_id]
        target: Target = {
            "boxes": self._boxes(anns, record),
            "labels": torch.tensor(
                [self.split.category_id_to_label(ann["category_id"]) for ann in anns],
                dtype=torch.int64,
            ),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "area": torch.tensor(
                [ann.get("area", ann["bbox"][2] * ann["bbox"][3]) for ann in anns],
                dtype=torch.float32,
            ),
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
        }
        if self.with_masks:
            target["masks"] = self._masks(anns, record)
        if self.with_keypoints:
            target["keypoints"] = self._keypoints(anns)
        return target

    def _boxes(self, anns: list[dict[str, Any]], record: dict[str, Any]) -> Tensor:
        boxes = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        # Sub-pixel spill over the border is common and harmless; clamp it.
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, record["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, record["height"])
        empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if empty.any():
            ann = anns[int(empty.nonzero()[0])]
            raise DatasetError.at(
                self.split.origin,
                f"box {ann['bbox']} lies outside the image",
                record=f"annotation id {ann['id']}",
                field="bbox",
            )
        return boxes

    def _masks(self, anns: list[dict[str, Any]], record: dict[str, Any]) -> Tensor:
        masks = [self._mask(ann) for ann in anns]
        if not masks:
            return torch.zeros((0, record["height"], record["width"]), dtype=torch.uint8)
        return torch.from_numpy(np.stack(masks)).to(torch.uint8)

    def _mask(self, ann: dict[str, Any]) -> np.ndarray:
        segmentation = ann.get("segmentation")
        record = f"annotation id {ann['id']}"
        if not segmentation:
            raise DatasetError.at(
                self.split.origin,
                "missing or empty (masks were requested)",
                record=record,
                field="segmentation",
            )
        try:
            return self.split.coco.annToMask(ann)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise DatasetError.at(
                self.split.origin,
                f"not a polygon list or RLE: {exc}",
                record=record,
                field="segmentation",
            ) from None

    def _keypoints(self, anns: list[dict[str, Any]]) -> Tensor:
        count = self.split.num_keypoints
        keypoints = torch.zeros((len(anns), count, 3), dtype=torch.float32)
        for row, ann in enumerate(anns):
            values = ann.get("keypoints") or []
            if len(values) % 3 or len(values) > 3 * count:
                raise DatasetError.at(
                    self.split.origin,
                    f"must be x, y, v triples for at most {count} keypoints, got {len(values)} "
                    "values",
                    record=f"annotation id {ann['id']}",
                    field="keypoints",
                )
            if values:
                keypoints[row, : len(values) // 3] = torch.tensor(
                    values, dtype=torch.float32
                ).reshape(-1, 3)
        return keypoints


def collate(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Images of different sizes stay a list, as torchvision detection models expect."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def load_rgb_image(path: Path, record: str) -> Tensor:
    """Any PIL mode (L, P, RGBA, CMYK, I;16, ...) -> float32 3xHxW in [0, 1], EXIF-oriented."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            array = _rgb_float_array(image)
    except FileNotFoundError:
        raise DatasetError.at(path, "image file not found", record=record) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError.at(path, f"unreadable image: {exc}", record=record) from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _rgb_float_array(image: Image.Image) -> np.ndarray:
    if image.mode in HIGH_DEPTH_SCALE:
        gray = np.asarray(image, dtype=np.float32) / HIGH_DEPTH_SCALE[image.mode]
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when P with transparency goes straight to RGB
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def keypoint_categories_only(source: SplitSource) -> SplitSource:
    """The categories that define keypoints, and their annotations only.

    Keypoint R-CNN learns the pose of one kind of object; trained on everything, its keypoint
    head would be asked for poses of circles. Image records are all kept (negatives).
    """
    categories = [c for c in source.coco["categories"] if c.get("keypoints")]
    if not categories:
        raise DatasetError.at(source.origin, "no category defines keypoints", field="categories")
    kept = {c["id"] for c in categories}
    coco = {
        **source.coco,
        "categories": categories,
        "annotations": [a for a in source.coco["annotations"] if a["category_id"] in kept],
    }
    return SplitSource(coco=coco, image_dir=source.image_dir, origin=source.origin)


def load_task_split(
    cfg: DetectionData, split: str, project_root: Path, task: str
) -> DetectionSplit:
    """The split a family of `task` trains and is evaluated on (see keypoint_categories_only)."""
    source = load_split_source(cfg, split, project_root)
    if task == "keypoints":
        source = keypoint_categories_only(source)
    return DetectionSplit(source)


def task_dataset(split: DetectionSplit, task: str) -> DetectionDataset:
    """Targets with the fields a task's models need: masks to segment, keypoints for pose."""
    return DetectionDataset(split, with_masks=task == "segment", with_keypoints=task == "keypoints")
