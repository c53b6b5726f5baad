"""`detection_data.format: auto` on the layouts users bring, each written by tests/layouts.py from
one synthetic COCO dataset: the same images, boxes and classes come back from every layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sightline.cli import app
from sightline.data.detection import DetectionDataset, DetectionSplit
from sightline.data.errors import DatasetError
from sightline.data.layouts import detect_format, find_dataset
from sightline.data.layouts.base import PIPELINE_SPLITS
from sightline.data.layouts.summary import size_bin, summarize
from sightline.data.sources import DetectionData
from sightline.data.synth.detection import generate
from sightline.data.synth.params import SynthDetection
from tests import layouts

SPLIT_SIZES = {"train": 8, "val": 4, "test": 3}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SynthDetection(seed=5, image_size=64, **SPLIT_SIZES))
    return root


def auto(root: Path, **fields) -> DetectionData:
    return DetectionData(format="auto", root=root, **fields)


def boxes_by_file(found, split: str) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """file name -> sorted (class name, rounded box): what must survive any layout."""
    source = found.splits[split]
    names = {c["id"]: c["name"] for c in source.coco["categories"]}
    files = {im["id"]: Path(im["file_name"]).name for im in source.coco["images"]}
    out: dict[str, list] = {name: [] for name in files.values()}
    for ann in source.coco["annotations"]:
        box = tuple(round(v) for v in ann["bbox"])
        out[files[ann["image_id"]]].append((names[ann["category_id"]], box))
    return {k: sorted(v) for k, v in out.items()}


WRITERS = {
    "roboflow": layouts.write_roboflow,
    "voc": layouts.write_voc_devkit,
    "yolo": layouts.write_yolo,
    "labelimg": lambda dest, src, splits: layouts.write_labelimg(dest, src, splits, lists=True),
}


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_every_layout_reads_back_the_same_splits_boxes_and_classes(
    layout: str, synthetic: Path, tmp_path: Path
) -> None:
    splits = layouts.read_synthetic(synthetic)
    root = WRITERS[layout](tmp_path / layout, synthetic / "images", splits)
    reference = find_dataset(
        DetectionData(
            format="coco",
            root=synthetic,
            splits={s: f"annotations/{s}.json" for s in PIPELINE_SPLITS},
        ),
        synthetic,
    )

    found = find_dataset(auto(root), tmp_path)

    assert detect_format(root) == layout and found.format == layout
    assert set(found.splits) == set(PIPELINE_SPLITS) and found.drawn_splits == []
    assert {s: len(found.splits[s].coco["images"]) for s in found.splits} == SPLIT_SIZES
    classes = [[c["name"] for c in found.splits[s].coco["categories"]] for s in PIPELINE_SPLITS]
    assert classes[0] == classes[1] == classes[2]  # one class list: labels equal in every split
    assert sorted(classes[0]) == sorted(c["name"] for c in splits["train"]["categories"])
    for split in PIPELINE_SPLITS:  # integer VOC corners: within a pixel of the COCO boxes
        ours, theirs = boxes_by_file(found, split), boxes_by_file(reference, split)
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert [c for c, _ in ours[name]] == [c for c, _ in theirs[name]], name
            assert np.allclose([b for _, b in ours[name]], [b for _, b in theirs[name]], atol=1.01)
    image, target = DetectionDataset(DetectionSplit(found.splits["train"]))[0]
    assert image.shape[0] == 3 and len(target["boxes"]) == len(target["labels"])


def test_roboflow_category_zero_is_dropped_and_image_id_zero_kept(
    synthetic: Path, tmp_path: Path
) -> None:
    root = layouts.write_roboflow(
        tmp_path / "rf", synthetic / "images", layouts.read_synthetic(synthetic)
    )
    found = find_dataset(auto(root), tmp_path)

    assert [c["name"] for c in found.dropped_categories] == ["shapes"]
    assert 0 in {im["id"] for im in found.splits["val"].coco["images"]}
    split = DetectionSplit(found.splits["val"])
    assert 0 not in split.category_ids  # the supercategory is no class
    assert split.num_classes == len(layouts.read_synthetic(synthetic)["val"]["categories"])


def test_unsplit_folder_is_drawn_deterministically_by_fraction(
    synthetic: Path, tmp_path: Path
) -> None:
    root = layouts.write_labelimg(
        tmp_path / "flat", synthetic / "images", layouts.read_synthetic(synthetic), lists=False
    )
    cfg = auto(root, split_fractions={"train": 0.6, "val": 0.2, "test": 0.2}, split_seed=1)

    first, again = find_dataset(cfg, tmp_path), find_dataset(cfg, tmp_path)
    other_seed = find_dataset(cfg.model_copy(update={"split_seed": 2}), tmp_path)

    files = {s: {im["file_name"] for im in first.splits[s].coco["images"]} for s in first.splits}
    assert first.drawn_splits == ["train", "val", "test"]
    assert {s: len(f) for s, f in files.items()} == {"train": 9, "val": 3, "test": 3}
    assert not (files["train"] & files["val"]) and not (files["val"] & files["test"])
    assert files == {
        s: {im["file_name"] for im in again.splits[s].coco["images"]} for s in again.splits
    }
    assert files["val"] != {im["file_name"] for im in other_seed.splits["val"].coco["images"]}


def test_single_coco_file_and_missing_test_split_are_drawn(synthetic: Path, tmp_path: Path) -> None:
    splits = layouts.read_synthetic(synthetic)
    single = find_dataset(
        auto(layouts.write_single_coco(tmp_path / "one", synthetic / "images", splits)), tmp_path
    )
    assert single.format == "coco" and single.drawn_splits == ["train", "val", "test"]
    assert sum(len(s.coco["images"]) for s in single.splits.values()) == sum(SPLIT_SIZES.values())

    no_test = {k: v for k, v in splits.items() if k != "test"}
    found = find_dataset(
        auto(layouts.write_yolo(tmp_path / "y", synthetic / "images", no_test)), tmp_path
    )
    assert found.drawn_splits == ["test"]
    assert len(found.splits["test"].coco["images"]) >= 1
    train = {im["file_name"] for im in found.splits["train"].coco["images"]}
    assert not train & {im["file_name"] for im in found.splits["test"].coco["images"]}


def test_yolo_polygons_grey_images_and_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 40), np.uint8), mode="L").save(tmp_path / "images/train/g.png")
    Image.fromarray(np.zeros((20, 40), np.uint16)).save(tmp_path / "images/train/d.png")
    (tmp_path / "labels/train/g.txt").write_text("1 0.25 0.5 0.5 0.5\n0 0.1 0.1 0.3 0.1 0.2 0.4\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [zero, one]\n")

    found = find_dataset(auto(tmp_path), tmp_path)
    source = found.splits["train"]
    by_file = {im["file_name"]: im for im in source.coco["images"]}
    assert (by_file["g.png"]["width"], by_file["g.png"]["height"]) == (40, 20)
    anns = sorted(source.coco["annotations"], key=lambda a: a["category_id"])
    assert anns[0]["category_id"] == 0 and np.allclose(anns[0]["bbox"], [4, 2, 8, 6])
    assert anns[0]["segmentation"] == [[4.0, 2.0, 12.0, 2.0, 8.0, 8.0]]
    assert np.allclose(anns[1]["bbox"], [0, 5, 20, 10])
    images = [DetectionDataset(DetectionSplit(source))[i][0] for i in range(2)]
    assert all(im.shape == (3, 20, 40) and float(im.max()) <= 1.0 for im in images)

    (tmp_path / "labels/train/d.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(DatasetError, match=r"d\.txt: line 1: expected `class cx cy w h`"):
        find_dataset(auto(tmp_path), tmp_path)
    (tmp_path / "labels/train/d.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match=r"line 1: field 'class': class 7 is not in 0..1"):
        find_dataset(auto(tmp_path), tmp_path)


def test_labelimg_errors_name_the_file(synthetic: Path, tmp_path: Path) -> None:
    root = layouts.write_labelimg(
        tmp_path / "li", synthetic / "images", layouts.read_synthetic(synthetic), lists=True
    )
    (root / "val.csv").write_text("filename\nnot_there.png\n")
    with pytest.raises(DatasetError, match=r"val\.csv: lists 1 images that are not in the dataset"):
        find_dataset(auto(root), tmp_path)
    (root / "val.csv").unlink()
    orphan = root / "annotations" / "orphan.xml"
    orphan.write_text(layouts.voc_xml({"file_name": "orphan.png", "width": 8, "height": 8}, []))
    with pytest.raises(DatasetError, match=r"orphan\.xml: field 'filename': no image orphan\.png"):
        find_dataset(auto(root), tmp_path)


def test_unknown_folder_and_ambiguous_coco_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no detection dataset layout found"):
        find_dataset(auto(tmp_path / "empty"), tmp_path)
    with pytest.raises(DatasetError, match="no such dataset folder"):
        find_dataset(auto(tmp_path / "nowhere"), tmp_path)
    coco = {"images": [], "annotations": [], "categories": []}
    for name in ("a.json", "b.json"):
        (tmp_path / "two" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "two" / name).write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"cannot tell which split .* set detection_data.splits"):
        find_dataset(auto(tmp_path / "two"), tmp_path)


def test_one_category_id_with_two_names_is_refused(synthetic: Path, tmp_path: Path) -> None:
    splits = layouts.read_synthetic(synthetic)
    splits["val"]["categories"][0]["name"] = "renamed"
    root = layouts.write_roboflow(tmp_path / "rf", synthetic / "images", splits)
    with pytest.raises(DatasetError, match="one category id must mean one class in every split"):
        find_dataset(auto(root), tmp_path)


def test_split_fractions_are_checked() -> None:
    with pytest.raises(ValueError, match="add up to 1"):
        DetectionData(split_fractions={"train": 0.8, "val": 0.1})
    with pytest.raises(ValueError, match="positive `train` share"):
        DetectionData(split_fractions={"val": 1.0})


def test_inspect_describes_a_roboflow_export(synthetic: Path, tmp_path: Path) -> None:
    root = layouts.write_roboflow(
        tmp_path / "rf", synthetic / "images", layouts.read_synthetic(synthetic)
    )
    (root / "test" / next(p.name for p in (root / "test").glob("*.png"))).unlink()

    summary = summarize(find_dataset(auto(root), tmp_path))
    assert summary.format == "roboflow" and summary.splits["val"].images == SPLIT_SIZES["val"]
    assert sum(summary.size_histogram.values()) == sum(s.boxes for s in summary.splits.values())
    assert summary.dropped_categories == ["shapes (id 0)"]
    assert any("1 image files missing" in p for p in summary.problems)

    result = CliRunner().invoke(app, ["data", "inspect", str(root)])
    assert result.exit_code == 0, result.output
    for text in ("roboflow dataset", "boxes per class", "box size", "shapes (id 0)", "problem"):
        assert text in result.output
    as_json = json.loads(CliRunner().invoke(app, ["data", "inspect", str(root), "--json"]).output)
    assert as_json["splits"]["train"]["images"] == SPLIT_SIZES["train"]
    sizes = as_json["sizes_from_data"]  # what image_size / anchor_sizes: null resolve to
    assert sizes["image_size"] % 32 == 0 and len(sizes["anchor_sizes"]) == 4
    assert f"anchor_sizes {sizes['anchor_sizes']}" in result.output
    bad = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "no such dataset folder" in bad.output


def test_size_bins() -> None:
    assert [size_bin(w, h) for w, h in ((4, 4), (8, 8), (30, 40), (600, 600))] == [
        "0-8",
        "8-16",
        "32-64",
        ">=512",
    ]
