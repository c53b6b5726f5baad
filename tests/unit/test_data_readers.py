"""COCO / VOC readers, the detection split and dataset, and their errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from sightline.config import DetectionData
from sightline.data.coco import read_coco, write_coco
from sightline.data.detection import (
    DetectionDataset,
    DetectionSplit,
    SplitSource,
    collate,
    load_split_source,
)
from sightline.data.errors import DatasetError
from sightline.data.voc import parse_voc_xml, voc_to_coco
from tests.unit.conftest import voc_xml

# ---- COCO files -------------------------------------------------------------------------------


def coco_dict(**overrides: Any) -> dict[str, Any]:
    """One 40x30 image, categories with non-contiguous ids 3, 17, 90, no annotations."""
    coco: dict[str, Any] = {
        "images": [{"id": 5, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [],
        "categories": [
            {"id": 90, "name": "toothbrush"},
            {"id": 3, "name": "car"},
            {"id": 17, "name": "cat"},
        ],
    }
    coco.update(overrides)
    return coco


def box_ann(ann_id: int, category_id: int, bbox: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": 5,
        "category_id": category_id,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
        **extra,
    }


def test_write_then_read_round_trips_with_stable_bytes(tmp_path: Path) -> None:
    coco = coco_dict(annotations=[box_ann(1, 3, [1, 2, 3, 4])])
    write_coco(coco, tmp_path / "x" / "a.json")
    write_coco(dict(reversed(coco.items())), tmp_path / "b.json")
    assert read_coco(tmp_path / "x" / "a.json") == coco
    assert (tmp_path / "x" / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"images": [', "not valid JSON at line 1"),
        ("[1, 2]", "top level must be a JSON object"),
        ('{"images": [], "categories": []}', "field 'annotations': missing top-level key"),
        ('{"images": {}, "annotations": [], "categories": []}', "field 'images': must be a list"),
    ],
)
def test_read_coco_names_file_and_field(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=r"bad\.json") as caught:
        read_coco(path)
    assert expected in str(caught.value)
    assert caught.value.file == str(path)


def test_read_coco_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.json: no such annotation file"):
        read_coco(tmp_path / "nope.json")


def test_read_coco_does_not_fix_content(tmp_path: Path) -> None:
    coco = coco_dict(annotations=[box_ann(1, 12345, [0, 0, -1, 4])])
    write_coco(coco, tmp_path / "a.json")
    assert read_coco(tmp_path / "a.json") == coco


@pytest.mark.parametrize(
    ("annotation", "record", "field"),
    [
        (box_ann(7, 4, [0, 0, 5, 5]), "annotation id 7", "category_id"),
        ({**box_ann(7, 3, [0, 0, 5, 5]), "image_id": 6}, "annotation id 7", "image_id"),
        (box_ann(7, 3, [0, 0, 0, 5]), "annotation id 7", "bbox"),
        ({**box_ann(7, 3, [0, 0, 5, 5]), "bbox": [0, 0, 5]}, "annotation id 7", "bbox"),
        ({"image_id": 5}, "annotation #0", "id"),
    ],
)
def test_split_rejects_records_it_cannot_index(annotation: dict, record: str, field: str) -> None:
    source = SplitSource(coco_dict(annotations=[annotation]), Path("."), origin="ann/train.json")
    with pytest.raises(DatasetError) as caught:
        DetectionSplit(source)
    message = str(caught.value)
    assert message.startswith("ann/train.json: ")
    assert record in message and f"field {field!r}" in message


def test_split_rejects_duplicate_image_ids() -> None:
    image = {"id": 5, "file_name": "a.png", "width": 4, "height": 4}
    source = SplitSource(coco_dict(images=[image, image]), Path("."), origin="t.json")
    with pytest.raises(DatasetError, match=r"t\.json: image id 5: field 'id': duplicate id"):
        DetectionSplit(source)


# ---- split: labels, loading ---------------------------------------------------------------------


def test_labels_map_non_contiguous_category_ids() -> None:
    split = DetectionSplit(SplitSource(coco_dict(), Path(".")))
    assert split.category_ids == [3, 17, 90]
    assert split.class_names == ["car", "cat", "toothbrush"]
    assert [split.category_id_to_label(c) for c in (3, 17, 90)] == [1, 2, 3]
    assert [split.label_to_category_id(label) for label in (1, 2, 3)] == [3, 17, 90]
    assert split.image_ids == [5]
    with pytest.raises(ValueError, match="background"):
        split.label_to_category_id(0)
    with pytest.raises(DatasetError, match="unknown category id 4"):
        split.category_id_to_label(4)


def test_load_split_source_coco_resolves_relative_root(tmp_path: Path) -> None:
    write_coco(coco_dict(), tmp_path / "ds" / "ann" / "val.json")
    cfg = DetectionData(root=Path("ds"), images="imgs", splits={"val": "ann/val.json"})
    source = load_split_source(cfg, "val", project_root=tmp_path)
    assert source.coco["images"] == coco_dict()["images"]
    assert source.coco["categories"] == []  # none has an annotation: no class to learn
    assert source.image_dir == tmp_path / "ds" / "imgs"
    assert source.origin == str(tmp_path / "ds" / "ann" / "val.json")


def test_unknown_split_lists_known_splits(tmp_path: Path) -> None:
    cfg = DetectionData(root=tmp_path, splits={"train": "t.json", "val": "v.json"})
    with pytest.raises(
        DatasetError, match=r"unknown split 'tset'; known splits: \['train', 'val'\]"
    ):
        DetectionSplit.load(cfg, "tset", tmp_path)


# ---- dataset items ------------------------------------------------------------------------------


def split_on_disk(
    tmp_path: Path, write_image: Any, annotations: list[dict], **coco: Any
) -> DetectionSplit:
    write_image(tmp_path / "images" / "a.png", 40, 30)
    return DetectionSplit(
        SplitSource(coco_dict(annotations=annotations, **coco), tmp_path / "images")
    )


def test_target_boxes_labels_and_crowd(tmp_path: Path, write_image: Any) -> None:
    anns = [
        box_ann(1, 90, [2, 3, 10, 5]),
        box_ann(2, 17, [0, 0, 40, 30], iscrowd=1),
        box_ann(3, 3, [30.5, 20, 10, 10]),  # spills over the right border by 0.5 px
    ]
    split = split_on_disk(tmp_path, write_image, anns)
    image, target = DetectionDataset(split)[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert torch.equal(target["boxes"], torch.tensor([[2, 3, 12, 8], [30.5, 20, 40, 30]]))
    assert target["labels"].tolist() == [3, 1]
    assert target["iscrowd"].tolist() == [0, 0] and target["iscrowd"].dtype == torch.int64
    assert target["area"].tolist() == [50, 100]
    assert target["image_id"].item() == 5 and target["image_id"].dtype == torch.int64
    assert len(split.coco.getAnnIds(imgIds=[5], iscrowd=None)) == 3  # evaluation keeps crowds


def test_box_outside_the_image_names_annotation(tmp_path: Path, write_image: Any) -> None:
    split = split_on_disk(tmp_path, write_image, [box_ann(9, 3, [45, 1, 5, 5])])
    with pytest.raises(DatasetError, match=r"annotation id 9: field 'bbox': .* outside the image"):
        DetectionDataset(split)[0]


def test_image_without_annotations_gives_empty_target(tmp_path: Path, write_image: Any) -> None:
    split = split_on_disk(tmp_path, write_image, [])
    _, target = DetectionDataset(split, with_masks=True)[0]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (0, 30, 40)


def test_polygon_and_rle_masks(tmp_path: Path, write_image: Any) -> None:
    expected = np.zeros((30, 40), dtype=np.uint8)
    expected[5:15, 10:30] = 1
    compressed = mask_utils.encode(np.asfortranarray(expected))
    compressed["counts"] = compressed["counts"].decode("ascii")  # as stored in JSON
    uncompressed = {"size": [30, 40], "counts": rle_counts(expected)}
    square = [10, 5, 30, 5, 30, 15, 10, 15]
    anns = [
        box_ann(1, 3, [10, 5, 20, 10], segmentation=[square]),
        box_ann(2, 3, [10, 5, 20, 10], segmentation=compressed),
        box_ann(3, 3, [10, 5, 20, 10], segmentation=uncompressed),
    ]
    split = split_on_disk(tmp_path, write_image, anns)
    _, target = DetectionDataset(split, with_masks=True)[0]
    masks = target["masks"]
    assert masks.shape == (3, 30, 40) and masks.dtype == torch.uint8
    for mask in masks:
        assert torch.equal(mask, torch.from_numpy(expected))


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def test_missing_segmentation_names_annotation(tmp_path: Path, write_image: Any) -> None:
    split = split_on_disk(tmp_path, write_image, [box_ann(4, 3, [1, 1, 5, 5])])
    with pytest.raises(DatasetError, match="annotation id 4: field 'segmentation'"):
        DetectionDataset(split, with_masks=True)[0]


def test_keypoints_padded_with_zeros(tmp_path: Path, write_image: Any) -> None:
    categories = [{"id": 1, "name": "person", "keypoints": ["head", "hip"], "skeleton": [[1, 2]]}]
    anns = [
        {**box_ann(1, 1, [1, 1, 5, 5]), "keypoints": [2, 3, 2, 4, 5, 1], "num_keypoints": 2},
        box_ann(2, 1, [10, 10, 5, 5]),
    ]
    split = split_on_disk(tmp_path, write_image, anns, categories=categories)
    _, target = DetectionDataset(split, with_keypoints=True)[0]
    assert target["keypoints"].dtype == torch.float32
    assert target["keypoints"].tolist() == [[[2, 3, 2], [4, 5, 1]], [[0, 0, 0], [0, 0, 0]]]
    bad = split_on_disk(
        tmp_path,
        write_image,
        [{**box_ann(3, 1, [1, 1, 5, 5]), "keypoints": [1]}],
        categories=categories,
    )
    with pytest.raises(DatasetError, match="annotation id 3: field 'keypoints'"):
        DetectionDataset(bad, with_keypoints=True)[0]


def test_keypoints_need_a_category_with_keypoints(tmp_path: Path, write_image: Any) -> None:
    split = split_on_disk(tmp_path, write_image, [])
    with pytest.raises(DatasetError, match="no category defines keypoints"):
        DetectionDataset(split, with_keypoints=True)


@pytest.mark.parametrize(
    ("name", "mode", "save_args"),
    [
        ("gray.png", "L", {}),
        ("palette.png", "P", {}),
        ("palette_transparent.png", "P", {"transparency": 0}),
        ("alpha.png", "RGBA", {}),
        ("gray_alpha.png", "LA", {}),
        ("cmyk.jpg", "CMYK", {}),
        ("deep.png", "I;16", {}),
        ("bilevel.png", "1", {}),
    ],
)
def test_any_image_mode_becomes_rgb_float(
    tmp_path: Path, write_image: Any, name: str, mode: str, save_args: dict
) -> None:
    write_image(tmp_path / name, 37, 23, mode, **save_args)
    coco = coco_dict(images=[{"id": 1, "file_name": name, "width": 37, "height": 23}])
    dataset = DetectionDataset(DetectionSplit(SplitSource(coco, tmp_path)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Pillow's warning for palette images with alpha
        image, _ = dataset[0]
    assert image.shape == (3, 23, 37) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0 and image.max() > 0.0


def test_sixteen_bit_images_scale_to_unit_range(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    coco = coco_dict(images=[{"id": 1, "file_name": "deep.png", "width": 3, "height": 1}])
    image, _ = DetectionDataset(DetectionSplit(SplitSource(coco, tmp_path)))[0]
    assert torch.allclose(image[:, 0], torch.tensor([0.0, 32768 / 65535, 1.0]).expand(3, 3))


def test_exif_orientation_is_applied(tmp_path: Path, write_image: Any) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait
    write_image(tmp_path / "phone.jpg", 40, 20, exif=exif)
    coco = coco_dict(images=[{"id": 1, "file_name": "phone.jpg", "width": 20, "height": 40}])
    image, _ = DetectionDataset(DetectionSplit(SplitSource(coco, tmp_path)))[0]
    assert image.shape == (3, 40, 20)


def test_image_size_mismatch_names_image(tmp_path: Path, write_image: Any) -> None:
    write_image(tmp_path / "a.png", 41, 30)
    split = DetectionSplit(SplitSource(coco_dict(), tmp_path, origin="v.json"))
    with pytest.raises(DatasetError, match=r"v.json: image id 5: field 'width/height': .*41x30"):
        DetectionDataset(split)[0]


def test_missing_and_broken_image_files(tmp_path: Path) -> None:
    dataset = DetectionDataset(DetectionSplit(SplitSource(coco_dict(), tmp_path)))
    with pytest.raises(DatasetError, match=r"a.png: image id 5: image file not found"):
        dataset[0]
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"a.png: image id 5: unreadable image"):
        dataset[0]


def test_collate_keeps_lists(tmp_path: Path, write_image: Any) -> None:
    split = split_on_disk(tmp_path, write_image, [box_ann(1, 3, [1, 1, 5, 5])])
    dataset = DetectionDataset(split)
    images, targets = collate([dataset[0], dataset[0]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == 2
    assert torch.equal(targets[0]["boxes"], targets[1]["boxes"])


# ---- Pascal VOC ---------------------------------------------------------------------------------


def test_voc_to_coco_converts_boxes_and_difficult(voc_root: Path) -> None:
    coco = voc_to_coco(voc_root, "train")
    assert [c["name"] for c in coco["categories"]] == ["bird", "cat", "dog"]
    assert coco["images"] == [
        {"id": 1, "file_name": "img1.jpg", "width": 50, "height": 40},
        {"id": 2, "file_name": "img2.jpg", "width": 50, "height": 40},
    ]
    boxes = [
        (a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in coco["annotations"]
    ]
    assert boxes == [
        (1, 3, [0, 0, 10, 20], 0),
        (1, 2, [4, 5, 46, 35], 1),
        (2, 1, [10, 20, 20, 10], 0),
    ]
    assert len({a["id"] for a in coco["annotations"]}) == 3


def test_voc_split_uses_one_category_list_for_all_splits(voc_root: Path) -> None:
    cfg = DetectionData(format="voc", root=voc_root, splits={"train": "train", "val": "val"})
    train = DetectionSplit.load(cfg, "train", Path("/unused"))
    val = DetectionSplit.load(cfg, "val", Path("/unused"))
    assert train.class_names == val.class_names == ["bird", "cat", "dog"]
    assert val.image_dir == voc_root / "JPEGImages"
    image, target = DetectionDataset(val)[0]
    assert image.shape == (3, 40, 50)
    assert target["labels"].tolist() == [3]
    assert target["boxes"].tolist() == [[1, 1, 3, 3]]


def test_voc_unknown_class_names_xml_object(voc_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"img1.xml: object #0: field 'name': class 'dog'"):
        voc_to_coco(voc_root, "train", class_names=["cat", "bird"])


def test_voc_missing_image_set(voc_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"ImageSets/Main/trainval.txt: no such image set"):
        voc_to_coco(voc_root, "trainval")


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<annotation><size>", r"bad.xml: malformed XML at line 1"),
        ("<annotation></annotation>", r"bad.xml: annotation: field 'size': missing"),
        (
            voc_xml("a.jpg", [], size="<size><width>x</width><height>4</height></size>"),
            r"bad.xml: annotation: field 'size/width': not a number: 'x'",
        ),
        (
            voc_xml("a.jpg", [("dog", [1, 1, 5, 5], 0)]).replace("<xmax>5</xmax>", ""),
            r"bad.xml: object #0: field 'bndbox/xmax': missing",
        ),
        (
            voc_xml("a.jpg", [("dog", [9, 1, 5, 5], 0)]),
            r"bad.xml: object #0: field 'bndbox': corners out of order",
        ),
        (
            voc_xml("a.jpg", [("", [1, 1, 5, 5], 0)]),
            r"bad.xml: object #0: field 'name': missing or empty",
        ),
    ],
)
def test_broken_voc_xml_names_file_record_and_field(
    tmp_path: Path, xml: str, expected: str
) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(xml)
    with pytest.raises(DatasetError, match=expected):
        parse_voc_xml(path)


def test_parse_voc_xml_reads_fields(tmp_path: Path) -> None:
    path = tmp_path / "ok.xml"
    path.write_text(voc_xml("ok.jpg", [("dog", [1, 2, 3, 4], 1)]))
    assert parse_voc_xml(path) == {
        "filename": "ok.jpg",
        "width": 50,
        "height": 40,
        "objects": [{"name": "dog", "bbox": [1, 2, 3, 4], "difficult": True}],
    }
