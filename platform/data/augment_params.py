"""The augmentation settings (params.yaml `train.augment`), apart from the transforms in
sightline.data.augment so that reading params.yaml imports no torchvision."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Augment(BaseModel):
    """Training-time augmentation, drawn anew for every sample of every epoch and never applied
    when scoring (evaluate, validation, serving). Images (detection, faces) use all of it;
    OTDR traces are not augmented."""

    model_config = ConfigDict(extra="forbid")

    # The defaults are a mirror and colour jitter, as torchvision's detection references
    # ("hflip"): on the synthetic scenes zoom and shift cost yolo and ssd map (bench
    # augmentation); a small real dataset may want them, e.g. scale (0.8, 1.25), translate 0.1.
    hflip: float = Field(0.5, ge=0, le=1)  # probability of a left-right mirror
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range; the image keeps its size
    translate: float = Field(0.0, ge=0, le=0.5)  # shift, up to this fraction of each side
    colour: float = Field(0.2, ge=0, le=1)  # brightness / contrast / saturation jitter
    # The last fraction of `train.epochs` trained on the plain samples (as YOLOv8 closes its
    # mosaic for the last epochs): the model ends on the distribution it is scored on.
    off_for_final: float = Field(0.2, ge=0, lt=1)

    def first_plain_epoch(self, epochs: int) -> int | None:
        """The first epoch trained without augmentation (None: every epoch augmented); at
        least one plain epoch whenever `off_for_final` > 0, never the first epoch."""
        plain = round(self.off_for_final * epochs)
        if self.off_for_final > 0:
            plain = max(1, plain)
        return max(1, epochs - plain) if plain else None

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {value}")
        return value
