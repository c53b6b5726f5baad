"""Pascal VOC XML layouts: the VOC devkit (Annotations/, JPEGImages/, ImageSets/Main/) and the
flat folder labelImg writes (images and one .xml per labelled image, side by side or in
images/ + annotations/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sightline.data.errors import DatasetError
from sightline.data.layouts.base import (
    IMAGE_SUFFIXES,
    PIPELINE_SPLITS,
    UNSPLIT,
    Parts,
    SplitSource,
    assign_listed,
    image_files,
)
from sightline.data.sources import DetectionData
from sightline.data.voc import voc_class_names, voc_to_coco, xml_files_to_coco

ANNOTATION_DIRS = ("annotations", "Annotations", "labels", "xml")
IMAGE_DIRS = ("images", "JPEGImages", "imgs", "img")
LIST_SUFFIXES = (".txt", ".csv")


def voc_devkit_root(root: Path) -> Path | None:
    """The VOC year folder: root itself, or the one folder up to two levels below it that is one
    (VOCdevkit/VOC2007 in the folder the devkit was unpacked in)."""
    if _is_voc_year(root):
        return root
    if not root.is_dir():
        return None
    below = _subfolders(root)
    below += [g for c in below for g in _subfolders(c)]
    years = [folder for folder in below if _is_voc_year(folder)]
    return years[0] if len(years) == 1 else None


def _subfolders(folder: Path) -> list[Path]:
    # scandir's d_type: no stat per entry (an image folder may hold 100k files).
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir())


def _is_voc_year(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def read_voc_devkit(root: Path, cfg: DetectionData) -> Parts:
    """Image sets named in `detection_data.splits`, else ImageSets/Main/{train,val,test}.txt
    (or trainval.txt as train), else every annotation as one unsplit pool."""
    voc_root = voc_devkit_root(root) or root
    sets = dict(cfg.splits) or _found_image_sets(voc_root)
    if sets:
        # One category list over every split keeps category ids equal across splits.
        names = voc_class_names(voc_root, sets.values())
        sources = {
            split: SplitSource(
                coco=voc_to_coco(voc_root, image_set, names),
                image_dir=voc_root / "JPEGImages",
                origin=str(voc_root / "ImageSets" / "Main" / f"{image_set}.txt"),
            )
            for split, image_set in sets.items()
        }
        sources = _unique_image_ids(sources)
        notes = [f"{split}: ImageSets/Main/{name}.txt" for split, name in sets.items()]
        return Parts("voc", voc_root, sources, notes)
    files = sorted((voc_root / "Annotations").glob("*.xml"))
    coco = xml_files_to_coco(files, lambda xml, voc: voc["filename"] or f"{xml.stem}.jpg")
    pool = SplitSource(coco, voc_root / "JPEGImages", str(voc_root / "Annotations"))
    return Parts("voc", voc_root, {UNSPLIT: pool}, ["no ImageSets/Main lists: splits drawn"])


def _found_image_sets(voc_root: Path) -> dict[str, str]:
    main = voc_root / "ImageSets" / "Main"
    found = {split: split for split in PIPELINE_SPLITS if (main / f"{split}.txt").is_file()}
    if "train" not in found and (main / "trainval.txt").is_file():
        found["train"] = "trainval"
        found.pop("val", None)  # trainval holds val's images
    return found


def _unique_image_ids(sources: dict[str, SplitSource]) -> dict[str, SplitSource]:
    """voc_to_coco numbers each image set from 1; give ids unique over the whole dataset."""
    offset, out = 0, {}
    for split, source in sources.items():
        images = [{**im, "id": im["id"] + offset} for im in source.coco["images"]]
        anns = [{**a, "image_id": a["image_id"] + offset} for a in source.coco["annotations"]]
        out[split] = SplitSource(
            {**source.coco, "images": images, "annotations": anns}, source.image_dir, source.origin
        )
        offset += len(images)
    return out


def labelimg_folders(root: Path) -> tuple[Path, Path] | None:
    """(annotation folder, image folder) of a labelImg-style dataset, or None."""
    xml_dirs = [root / d for d in ANNOTATION_DIRS if any((root / d).glob("*.xml"))]
    if any(root.glob("*.xml")):
        xml_dirs.insert(0, root)
    if not xml_dirs:
        return None
    image_dirs = [root / d for d in IMAGE_DIRS if (root / d).is_dir()] or [root]
    return xml_dirs[0], image_dirs[0]


def read_labelimg(root: Path, cfg: DetectionData) -> Parts:
    """Every .xml with its image (the XML's <filename> if that file exists, else the image with
    the XML's stem); images without an XML are not labelled yet and are left out. Splits: list
    files from `detection_data.splits` (relative to root), else root/{train,val,test}.txt|.csv,
    else drawn."""
    folders = labelimg_folders(root)
    if folders is None:
        raise DatasetError.at(root, "no .xml annotation files in it or in annotations/")
    xml_dir, image_dir = folders
    by_stem = _images_by_stem(image_dir)
    xml_files = sorted(xml_dir.glob("*.xml"))
    coco = xml_files_to_coco(xml_files, lambda xml, voc: _image_for(xml, voc, image_dir, by_stem))
    pool = SplitSource(coco, image_dir, str(xml_dir))
    notes = [f"annotations: {xml_dir}", f"images: {image_dir}"]
    unlabelled = len(by_stem) - len(coco["images"])
    if unlabelled > 0:
        notes.append(f"{unlabelled} images have no .xml (not labelled): left out")
    lists = _list_files(root, cfg)
    if not lists:
        return Parts("labelimg", root, {UNSPLIT: pool}, notes)
    notes += [f"{split}: {path}" for split, path in lists.items()]
    return Parts("labelimg", root, assign_listed(pool, lists), notes)


def _images_by_stem(image_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in image_files(image_dir)}


def _image_for(xml: Path, voc: dict[str, Any], image_dir: Path, by_stem: dict[str, Path]) -> str:
    named = voc["filename"]
    if named and (image_dir / named).is_file():
        return named
    image = by_stem.get(xml.stem) or (by_stem.get(Path(named).stem) if named else None)
    if image is None:
        raise DatasetError.at(
            xml,
            f"no image {named or xml.stem + '.*'} in {image_dir} "
            f"(looked for {', '.join(IMAGE_SUFFIXES)})",
            field="filename",
        )
    return str(image.relative_to(image_dir))


def _list_files(root: Path, cfg: DetectionData) -> dict[str, Path]:
    if cfg.splits:
        return {split: root / name for split, name in cfg.splits.items()}
    found = {}
    for split in PIPELINE_SPLITS:
        for suffix in LIST_SUFFIXES:
            if (root / f"{split}{suffix}").is_file():
                found[split] = root / f"{split}{suffix}"
                break
    return found
