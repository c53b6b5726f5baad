"""params.yaml `detection_data`, `otdr_data`, `identity_data`: where each dataset lives and how
it is laid out, as pydantic models.

They belong to the data layer (the readers take them) and are read into `sightline.config`'s
Settings from here: the dependency points one way, config -> data, never back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _fractions_are_shares(value: dict[str, float]) -> dict[str, float]:
    if "train" not in value or value["train"] <= 0:
        raise ValueError("needs a positive `train` share")
    if any(share < 0 for share in value.values()):
        raise ValueError(f"shares must not be negative, got {value}")
    if abs(sum(value.values()) - 1.0) > 1e-6:
        raise ValueError(f"shares must add up to 1, got {sum(value.values()):.4g}")
    return value


# How a dataset without splits of its own is drawn into splits (sightline.data.splits).
SplitFractions = Annotated[dict[str, float], AfterValidator(_fractions_are_shares)]


def default_split_fractions() -> dict[str, float]:
    return {"train": 0.8, "val": 0.1, "test": 0.1}


class DataSection(BaseModel):
    """What every dataset section has: its folder (relative paths from the project root)."""

    model_config = ConfigDict(extra="forbid")

    root: Path

    def resolved_root(self, project_root: Path) -> Path:
        """`root`, a relative one taken from the project root (where params.yaml is)."""
        return self.root if self.root.is_absolute() else Path(project_root) / self.root


class DetectionData(DataSection):
    """Where a detection dataset lives and in which layout (sightline.data.layouts).

    format: auto (found from the folder), coco, roboflow, voc, labelimg or yolo.
    splits: optional, per format: coco -> split: annotation JSON; voc -> split: image-set name
            (ImageSets/Main); labelimg -> split: list file of image names (.txt or .csv).
            Empty: the splits the data has (file or folder names, image sets, data.yaml).
    images: coco only, the folder the JSON's file_names are under (default: found).
    split_fractions, split_seed: how splits the data does not have are drawn (all of them for
            an unsplit dataset; val/test out of train when only those are missing).
    Relative paths are resolved from `root`.
    """

    format: Literal["auto", "coco", "roboflow", "voc", "labelimg", "yolo"] = "auto"
    root: Path = Path("data/detection")
    images: str | None = None
    splits: dict[str, str] = Field(default_factory=dict)
    split_fractions: SplitFractions = Field(default_factory=default_split_fractions)
    split_seed: int = 0


class OTDRData(DataSection):
    """A trace dataset, in one of two layouts (sightline.data.otdr_sor_folder.load_trace_split):

    format npz: `<root>/<split>.json` (labels, metadata) + `<root>/<split>.npz` (samples), as
            `sightline data synth` writes and `sightline.data.otdr.save_split` documents.
    format sor: `root` is a folder of Telcordia .sor files (searched recursively). Splits are its
            train/ val/ test/ sub-folders if it has them, else drawn per file by
            `split_fractions` and `split_seed`. Labels: each file's KeyEvents table, or
            `labels`, a CSV (relative to root) with columns file, type, position_m[, extent_m].
    """

    format: Literal["npz", "sor"] = "npz"
    root: Path = Path("data/otdr")
    splits: list[str] = Field(default_factory=lambda: ["train", "val", "test"])
    labels: str | None = None
    split_fractions: SplitFractions = Field(default_factory=default_split_fractions)
    split_seed: int = 0


class IdentityData(DataSection):
    """An identity dataset laid out one folder per person (`<root>/<identity>/<image>`), split
    by identity into train / val / unseen / impostor (deterministic from `split_seed`)."""

    root: Path = Path("data/identity")
    image_size: int = Field(64, ge=16)
    channels: Literal[1, 3] = 3
    val_fraction: float = 0.1
    unseen_fraction: float = 0.2
    impostor_fraction: float = 0.1
    split_seed: int = 0
