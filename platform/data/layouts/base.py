"""What every layout reader returns, and the steps after reading that are the same for all:
drawing splits where the data has none, one category list for every split.

A reader turns a folder into `Parts`: COCO dicts, each with the folder its `file_name`s are under,
keyed by the split the data itself names ("train", "val", "test") or by `UNSPLIT` when the data
names none. `finish` turns Parts into the dataset the pipeline reads:

- Splits. Splits the data names are kept. A dataset with none is drawn into
  `detection_data.split_fractions` with `split_seed`; a dataset that lacks val or test has the
  missing ones drawn out of its train split with the same fractions.
- Categories. Every split gets the same category list (the union over splits; one id has one
  name), so label <-> category id is the same in every split. A category with no annotation in
  any split is dropped (a Roboflow export's id-0 "supercategory" entry, a class nobody labelled):
  the model would have an output it can never learn. `FoundDataset.dropped_categories` names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sightline.data.errors import DatasetError
from sightline.data.splits import draw_by_fraction
from sightline.data.splits import split_alias as split_alias  # re-exported for the readers

UNSPLIT = "all"
PIPELINE_SPLITS = ("train", "val", "test")  # what the stages train, register and benchmark on
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class SplitSource:
    """A split's annotations as a COCO dict and the folder its `file_name`s are relative to.

    `origin` names where the annotations came from, for error messages.
    """

    coco: dict[str, Any]
    image_dir: Path
    origin: str = "<in-memory COCO dict>"


@dataclass
class Parts:
    """What a reader found: per split (or UNSPLIT), a SplitSource."""

    format: str
    root: Path
    sources: dict[str, SplitSource]
    notes: list[str] = field(default_factory=list)  # how the reader read it, for `inspect`
    errors: dict[str, DatasetError] = field(default_factory=dict)  # splits that did not read


@dataclass
class FoundDataset:
    format: str
    root: Path
    splits: dict[str, SplitSource]
    drawn_splits: list[str]  # splits drawn by fraction (not named by the data)
    dropped_categories: list[dict[str, Any]]
    notes: list[str]
    errors: dict[str, DatasetError]  # a split that did not read: the others still do

    def source(self, split: str) -> SplitSource:
        if split in self.errors:
            raise self.errors[split]
        if split not in self.splits:
            raise DatasetError.at(
                "detection_data.splits",
                f"unknown split {split!r}; known splits: {sorted(self.split_names)}",
                field=split,
            )
        return self.splits[split]

    @property
    def split_names(self) -> list[str]:
        return [*self.splits, *self.errors]


def image_files(folder: Path) -> list[Path]:
    """Image files under a folder, recursively, sorted (the order ids are given in)."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def finish(
    parts: Parts, fractions: dict[str, float], seed: int, *, configured: bool = False
) -> FoundDataset:
    """`configured`: the splits were named in params (`detection_data.splits`): exactly those,
    none drawn."""
    sources, errors = dict(parts.sources), dict(parts.errors)
    drawn: list[str] = []
    if UNSPLIT in errors:  # the one file did not read: neither does any split drawn from it
        failure = errors.pop(UNSPLIT)
        errors.update({name: failure for name, share in fractions.items() if share > 0})
    if UNSPLIT in sources:
        pool = sources.pop(UNSPLIT)
        if sources:
            raise DatasetError.at(parts.root, "both split and unsplit annotations found")
        sources = draw_splits(pool, fractions, seed)
        drawn = list(sources)
    elif "train" in sources and not errors and not configured:
        missing = [s for s in PIPELINE_SPLITS if s not in sources and fractions.get(s, 0) > 0]
        if missing:
            wanted = {"train": fractions.get("train", 0.0), **{s: fractions[s] for s in missing}}
            sources.update(draw_splits(sources["train"], wanted, seed))
            drawn = missing
    sources, dropped = one_category_list(sources, parts.root)
    return FoundDataset(parts.format, parts.root, sources, drawn, dropped, parts.notes, errors)


def draw_splits(
    pool: SplitSource, fractions: dict[str, float], seed: int
) -> dict[str, SplitSource]:
    """Split a pool's images by fraction. Images are ordered by a hash of (seed, file name), so
    the draw does not depend on the order files were listed in; every split with a positive
    fraction gets at least one image when there are enough."""
    drawn = draw_by_fraction(pool.coco["images"], lambda im: im["file_name"], fractions, seed)
    return {
        name: subset(pool, chosen, f"{pool.origin} (split {name!r} drawn, seed {seed})")
        for name, chosen in drawn.items()
    }


def subset(pool: SplitSource, images: list[dict[str, Any]], origin: str) -> SplitSource:
    ids = {im["id"] for im in images}
    coco = {
        **pool.coco,
        "images": images,
        "annotations": [a for a in pool.coco["annotations"] if a.get("image_id") in ids],
    }
    return SplitSource(coco=coco, image_dir=pool.image_dir, origin=origin)


def one_category_list(
    sources: dict[str, SplitSource], root: Path
) -> tuple[dict[str, SplitSource], list[dict[str, Any]]]:
    """Every split with the union of the splits' categories, empty ones dropped. Category lists
    with malformed or repeated entries are left as they are, for the split's own checks
    (check_coco_index, validation) to name the record."""
    if not all(_well_formed_categories(s.coco["categories"]) for s in sources.values()):
        return sources, []
    merged: dict[Any, dict[str, Any]] = {}
    for source in sources.values():
        for category in source.coco["categories"]:
            known = merged.setdefault(category["id"], category)
            if known.get("name") != category.get("name"):
                raise DatasetError.at(
                    source.origin,
                    f"names {known.get('name')!r} elsewhere but {category.get('name')!r} here; "
                    "one category id must mean one class in every split",
                    record=f"category id {category['id']}",
                    field="name",
                )
    used = {
        a.get("category_id")
        for s in sources.values()
        for a in s.coco["annotations"]
        if isinstance(a, dict)
    }
    kept = [c for c in merged.values() if c["id"] in used]
    dropped = [c for c in merged.values() if c["id"] not in used]
    return {
        name: SplitSource({**s.coco, "categories": kept}, s.image_dir, s.origin)
        for name, s in sources.items()
    }, dropped


def _well_formed_categories(categories: Any) -> bool:
    if not isinstance(categories, list):
        return False
    ids = [c.get("id") if isinstance(c, dict) else None for c in categories]
    return None not in ids and len(set(map(repr, ids))) == len(ids)


def read_list_file(path: Path) -> list[str]:
    """Image names from a split list: the first token of each line (.txt, as VOC image sets),
    or the first column (.csv); blank lines and '#' comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError.at(path, "no such split list file") from None
    names = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        first = text.split(",")[0] if path.suffix.lower() == ".csv" else text.split()[0]
        names.append(first.strip().strip('"'))
    return names


def assign_listed(pool: SplitSource, lists: dict[str, Path]) -> dict[str, SplitSource]:
    """Split a pool by list files of image names (a file name, a relative path or a stem)."""
    by_key: dict[str, dict[str, Any]] = {}
    for image in pool.coco["images"]:
        name = Path(image["file_name"])
        for key in (str(name), name.name, str(name.with_suffix("")), name.stem):
            by_key.setdefault(key, image)
    out = {}
    for split, path in lists.items():
        listed = read_list_file(path)
        if listed and path.suffix.lower() == ".csv" and listed[0] not in by_key:
            listed = listed[1:]  # the header row
        unknown = [entry for entry in listed if entry not in by_key]
        if unknown:
            raise DatasetError.at(
                path, f"lists {len(unknown)} images that are not in the dataset: {unknown[:5]}"
            )
        out[split] = subset(pool, [by_key[entry] for entry in listed], str(path))
    return out
