"""Lineage tags: which code (git commit) and which data (DVC hash) produced a run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.types import ColSpec, Schema

UNKNOWN = "unknown"


def git_commit(project_root: Path) -> str:
    """HEAD's commit, suffixed with '-dirty' when tracked files have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN
    return f"{commit}-dirty" if dirty else commit


def dvc_data_hash(project_root: Path, dataset_root: Path) -> str:
    """The DVC md5 of the tracked folder that holds `dataset_root` (from its .dvc file).

    Reads the `.dvc` files next to the dataset's ancestors (e.g. data.dvc for data/detection),
    so it names exactly the version `dvc checkout` would restore.
    """
    dataset_root = dataset_root.resolve()
    project_root = project_root.resolve()
    for folder in [dataset_root, *dataset_root.parents]:
        if not folder.name:  # the filesystem root: the data lies outside any tracked folder
            break
        dvc_file = folder.with_name(folder.name + ".dvc")
        if dvc_file.is_file():
            outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])
            for out in outs:
                if out.get("path") == folder.name and out.get("md5"):
                    return str(out["md5"])
        if folder == project_root:
            break
    return UNKNOWN


class DvcDataset(MetaDataset):
    """A DVC-versioned dataset as an MLflow dataset input: metadata only (the data stays in
    DVC), the DVC md5 as its digest, the split sizes as its profile."""

    def __init__(
        self,
        *,
        name: str,
        data_root: Path,
        dvc_hash: str,
        columns: Mapping[str, str],
        split_sizes: Mapping[str, int],
    ) -> None:
        schema = (
            Schema([ColSpec(type=kind, name=column) for column, kind in columns.items()])
            if columns
            else None
        )
        self._split_sizes = dict(split_sizes)
        source = LocalArtifactDatasetSource(data_root.resolve().as_uri())
        super().__init__(source=source, name=name, digest=dvc_hash, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return {"split_sizes": self._split_sizes}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}
