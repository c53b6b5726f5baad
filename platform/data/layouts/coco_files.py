"""COCO JSON layouts: one annotation file per split, one file for everything (no splits), and the
Roboflow export (`<split>/_annotations.coco.json` with the split's images beside it)."""

from __future__ import annotations

import re
from pathlib import Path

from sightline.data.coco import read_coco
from sightline.data.errors import DatasetError
from sightline.data.layouts.base import UNSPLIT, Parts, SplitSource, split_alias
from sightline.data.sources import DetectionData

ROBOFLOW_FILE = "_annotations.coco.json"
SAMPLED_IMAGES = 5  # file_names tried when looking for the folder a JSON's images are in


def read_coco_files(root: Path, cfg: DetectionData) -> Parts:
    """`detection_data.splits` maps split -> annotation file; without it, the COCO JSON files in
    root/ and root/annotations/ are found and told apart by a split word in their names
    (instances_train2017.json, val.json, ...); a single file without one is the unsplit pool."""
    files = {split: root / path for split, path in cfg.splits.items()} or _found_files(root)
    parts = Parts("coco", root, {})
    how = "detection_data.splits" if cfg.splits else "found"
    for split, path in files.items():
        label = "every image (no splits)" if split == UNSPLIT else split
        parts.notes.append(f"{label}: {path} ({how})")
        try:
            coco = read_coco(path)
        except DatasetError as exc:
            parts.errors[split] = exc
            continue
        image_dir = _image_dir(root, path, coco, cfg.images, split)
        parts.sources[split] = SplitSource(coco=coco, image_dir=image_dir, origin=str(path))
    return parts


def read_roboflow(root: Path, cfg: DetectionData) -> Parts:
    """Roboflow's COCO export: train/ valid/ test/, each an `_annotations.coco.json` beside its
    images."""
    parts = Parts("roboflow", root, {})
    for folder in sorted(p for p in root.iterdir() if (p / ROBOFLOW_FILE).is_file()):
        split = split_alias(folder.name)
        if split is None:
            raise DatasetError.at(folder, "not a split folder name (train, valid, test)")
        path = folder / ROBOFLOW_FILE
        parts.notes.append(f"{split}: {path}")
        try:
            parts.sources[split] = SplitSource(read_coco(path), image_dir=folder, origin=str(path))
        except DatasetError as exc:
            parts.errors[split] = exc
    return parts


def is_roboflow(root: Path) -> bool:
    return any((p / ROBOFLOW_FILE).is_file() for p in root.iterdir() if p.is_dir())


def coco_json_files(root: Path) -> list[Path]:
    """JSON files in root/ and root/annotations/ that look like COCO (images + annotations)."""
    candidates = sorted(root.glob("*.json")) + sorted((root / "annotations").glob("*.json"))
    return [path for path in candidates if _looks_like_coco(path)]


def _looks_like_coco(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    # A sniff, not a parse (a COCO file can be hundreds of MB); read_coco checks it later.
    return '"images"' in head or '"annotations"' in head


def _found_files(root: Path) -> dict[str, Path]:
    files = coco_json_files(root)
    if not files:
        raise DatasetError.at(root, "no COCO annotation JSON in it or in annotations/")
    named = {path: _split_word(path.stem) for path in files}
    if len(files) == 1 and named[files[0]] is None:
        return {UNSPLIT: files[0]}
    unnamed = [str(p) for p, split in named.items() if split is None]
    if unnamed:
        raise DatasetError.at(
            root,
            f"cannot tell which split {unnamed} hold (no train/val/test in the name); "
            "set detection_data.splits",
        )
    out: dict[str, Path] = {}
    for path, split in named.items():
        if split in out:
            raise DatasetError.at(
                root,
                f"two annotation files for split {split!r}: {out[split].name}, {path.name}; "
                "set detection_data.splits",
            )
        out[split] = path
    return out


def _split_word(stem: str) -> str | None:
    """The split a file name names: instances_val2017 -> val, train -> train, coco -> None."""
    for word in re.split(r"[^a-zA-Z]+", stem):
        split = split_alias(word)
        if split:
            return split
    return None


def _image_dir(root: Path, path: Path, coco: dict, images: str | None, split: str) -> Path:
    """The folder a JSON's file_names are relative to: `detection_data.images` when set, else the
    first usual place where its first few images exist."""
    if images is not None:
        return root / images
    word = re.sub(r"^(instances|annotations?|labels?)_", "", path.stem)
    candidates = [
        root / "images",
        root,
        path.parent,
        path.parent / "images",
        root / word,
        root / "images" / word,
        root / split,
        root / "images" / split,
    ]
    names = [im.get("file_name") for im in coco["images"][:SAMPLED_IMAGES] if isinstance(im, dict)]
    names = [n for n in names if isinstance(n, str) and n]
    for candidate in candidates:
        if names and all((candidate / name).is_file() for name in names):
            return candidate
    return next((c for c in candidates if c.is_dir()), root)
