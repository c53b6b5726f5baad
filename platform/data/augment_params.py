"""The augmentation settings (params.yaml `train.augment`), apart from the transforms in
sightline.data.augment so that reading params.yaml imports no torchvision."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Augment(BaseModel):
    """Training-time augmentation, drawn anew for every sample of every epoch and never applied
    when scoring (evaluate, validation, serving). Images (detection, faces) use all of it;
    OTDR traces are not augmented."""

    model_config = ConfigDict(extra="forbid")

    hflip: float = Field(0.5, ge=0, le=1)  # probability of a left-right mirror
    scale: tuple[float, float] = (0.8, 1.25)  # zoom range; the image keeps its size
    translate: float = Field(0.1, ge=0, le=0.5)  # shift, up to this fraction of each side
    colour: float = Field(0.2, ge=0, le=1)  # brightness / contrast / saturation jitter

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {value}")
        return value
