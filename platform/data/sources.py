"""params.yaml `detection_data`, `otdr_data`, `identity_data`: where each dataset lives and how
it is laid out, as pydantic models.

They belong to the data layer (the readers take them) and are read into `sightline.config`'s
Settings from here: the dependency points one way, config -> data, never back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DataSection(BaseModel):
    """What every dataset section has: its folder (relative paths from the project root)."""

    model_config = ConfigDict(extra="forbid")

    root: Path


class DetectionData(DataSection):
    """Where a detection dataset lives. Relative paths are resolved from `root`.

    coco: `splits[split]` is an annotation JSON; `images` the folder its file_names are under.
    voc:  `root` is a VOC year folder (Annotations/, JPEGImages/, ImageSets/Main/) and
          `splits[split]` an image-set name from ImageSets/Main.
    """

    format: Literal["coco", "voc"] = "coco"
    root: Path = Path("data/detection")
    images: str = "images"
    splits: dict[str, str] = Field(
        default_factory=lambda: {
            "train": "annotations/train.json",
            "val": "annotations/val.json",
            "test": "annotations/test.json",
        }
    )


class OTDRData(DataSection):
    """A trace dataset: `<root>/<split>.json` (labels, metadata) + `<root>/<split>.npz` (samples),
    as `sightline data synth` writes and `sightline.data.otdr.save_split` documents."""

    root: Path = Path("data/otdr")
    splits: list[str] = Field(default_factory=lambda: ["train", "val", "test"])


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
