"""Great Expectations suites for a folder-per-identity dataset (sightline.data.identity).

Three tables, each with its own suite:
  dataset     one row: the folder reads as `<root>/<identity>/<image>` and splits by identity
              into train / val / unseen / impostor (enough people, enough images to enroll)
  identities  one row per person: at least 2 images; no person in two folders (names that
              differ only in case, spaces, '_' or '-' are one person, so such twins would put
              one identity in two splits)
  images      one row per file: it decodes; no two files hold the same bytes (a duplicate
              inflates a person's count, or labels one face as two people)
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import great_expectations.expectations as gxe
import pandas as pd

from sightline.data.errors import DatasetError
from sightline.data.identity import (
    SPLIT_NAMES,
    IdentityRecord,
    IdentitySplits,
    read_identity_folders,
    split_by_identity,
)
from sightline.data.sources import IdentityData
from sightline.validate.report import ValidationReport
from sightline.validate.suites import SuiteSet, TableSuite, is_true
from sightline.validate.tables import probe_image

UNASSIGNED = "-"  # the split of every identity when the dataset could not be split
DATASET_COLUMNS = ["root", "readable", "error", "identity_count", "image_count"]
IDENTITY_COLUMNS = ["split", "identity", "identity_key", "image_count"]
IMAGE_COLUMNS = ["split", "identity", "file", "decodes", "decode_error", "sha256"]
_NAME_SEPARATORS = re.compile(r"[\s_\-]+")


def _dataset_checks() -> list[gxe.Expectation]:
    return [is_true("readable", "the dataset reads as <root>/<identity>/<image> and splits")]


def _identity_checks() -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="image_count", min_value=2, description="at least 2 images per identity"
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="identity_key",
            description="no identity in two splits (one folder per person, names compared "
            "ignoring case, spaces, '_' and '-')",
        ),
    ]


def _image_checks() -> list[gxe.Expectation]:
    return [
        is_true("decodes", "image files decode"),
        gxe.ExpectColumnValuesToBeUnique(
            column="sha256", description="no duplicate images (files with identical bytes)"
        ),
    ]


SUITES = SuiteSet(
    "identity",
    {
        "dataset": TableSuite(_dataset_checks, ["root", "error"]),
        "identities": TableSuite(_identity_checks, ["split", "identity", "image_count"]),
        "images": TableSuite(_image_checks, ["split", "identity", "file", "decode_error"]),
    },
)


def identity_key(name: str) -> str:
    """What makes two folder names the same person: case, spaces, '_' and '-' aside."""
    return _NAME_SEPARATORS.sub(" ", name).strip().casefold()


def validate_identity_dataset(
    cfg: IdentityData, project_root: Path, min_unseen_images: int
) -> ValidationReport:
    """Check the dataset the identification stages would train on; never raises for bad data."""
    frames = load_tables(cfg, project_root, min_unseen_images)
    results = SUITES.run_all(frames)
    return ValidationReport(
        dataset="identity",
        splits=list(SPLIT_NAMES),
        success=all(r.success for r in results),
        row_counts={t: len(df) for t, df in frames.items() if t != "dataset"},
        results=results,
    )


def load_tables(
    cfg: IdentityData, project_root: Path, min_unseen_images: int
) -> dict[str, pd.DataFrame]:
    root = cfg.resolved_root(project_root)
    status = {"root": str(root), "readable": True, "error": None}
    records: list[IdentityRecord] = []
    split_of: dict[str, str] = {}
    try:
        records = read_identity_folders(root)
        splits = split_by_identity(
            records,
            val_fraction=cfg.val_fraction,
            unseen_fraction=cfg.unseen_fraction,
            impostor_fraction=cfg.impostor_fraction,
            min_unseen_images=min_unseen_images,
            seed=cfg.split_seed,
        )
        split_of = _split_of(splits)
    except DatasetError as exc:
        status.update(readable=False, error=str(exc))
    counts = pd.Series([r.identity for r in records], dtype=object).value_counts()
    status.update(identity_count=len(counts), image_count=len(records))
    identities = pd.DataFrame(
        [
            {
                "split": split_of.get(name, UNASSIGNED),
                "identity": name,
                "identity_key": identity_key(name),
                "image_count": int(count),
            }
            for name, count in sorted(counts.items())
        ],
        columns=IDENTITY_COLUMNS,
    )
    return {
        "dataset": pd.DataFrame([status], columns=DATASET_COLUMNS),
        "identities": identities,
        "images": _image_table(records, root, split_of),
    }


def _split_of(splits: IdentitySplits) -> dict[str, str]:
    return {name: split for split in SPLIT_NAMES for name in getattr(splits, split)}


def _image_table(
    records: list[IdentityRecord], root: Path, split_of: dict[str, str]
) -> pd.DataFrame:
    def probe(record: IdentityRecord) -> dict[str, object]:
        found = probe_image(record.path)
        digest = hashlib.sha256(record.path.read_bytes()).hexdigest() if found.exists else None
        return {
            "split": split_of.get(record.identity, UNASSIGNED),
            "identity": record.identity,
            "file": str(record.path.relative_to(root)),
            "decodes": found.decodes,
            "decode_error": found.error,
            "sha256": digest,
        }

    with ThreadPoolExecutor() as pool:  # PIL and hashlib release the GIL
        rows = list(pool.map(probe, records))
    return pd.DataFrame(rows, columns=IMAGE_COLUMNS)
