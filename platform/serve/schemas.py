"""Response bodies of the Serve app (they also document the API at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from sightline.serve.errors import NotFound, ServiceUnavailable

CHAMPION = "champion"
NO_CHAMPION_HINT = "run `make demo`, or train a model and `sightline register` it, then retry"


class ModelRef(BaseModel):
    name: str = Field(description="registered model name, e.g. sightline-detector")
    version: str
    family: str


class ModelCard(ModelRef):
    task: str
    class_names: list[str] = Field(description="label_id k is class_names[k - 1]; 0 is background")
    champion: bool = Field(description="whether this version holds the registry alias 'champion'")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="the metrics the version was registered with"
    )
    run_id: str | None = Field(default=None, description="the MLflow run that trained it")

    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, family=self.family)


class Catalog(BaseModel):
    """What a task deployment serves; `families[f]` is the version `?model=f` selects."""

    models: list[ModelCard]
    families: dict[str, str]
    champion_version: str | None = None

    def resolve(self, requested: str | None) -> ModelCard:
        """`None` or 'champion' -> the champion; a family name -> the version serving it."""
        by_version = {card.version: card for card in self.models}
        if requested in (None, CHAMPION):
            if self.champion_version is None:
                raise ServiceUnavailable(
                    "no_champion", f"no champion model is registered; {NO_CHAMPION_HINT}"
                )
            return by_version[self.champion_version]
        if requested not in self.families:
            available = ", ".join(sorted(self.families)) or "none"
            raise NotFound(
                "unknown_model",
                f"model family {requested!r} is not loaded; available: {available} (or 'champion')",
            )
        return by_version[self.families[requested]]


class Models(BaseModel):
    """GET /v1/models: every loaded model, and each task group's catalog."""

    models: list[ModelCard]
    groups: dict[str, Catalog] = Field(
        description="detection, otdr, identification -> what that task's routes serve"
    )


class Health(BaseModel):
    status: str = "ok"
    models_loaded: int


class ImageSize(BaseModel):
    width: int
    height: int


class Detection(BaseModel):
    box: list[float] = Field(description="[x1, y1, x2, y2] in the uploaded image's pixels")
    label: str
    label_id: int
    score: float
    keypoints: list[list[float]] | None = Field(
        default=None, description="pose models: [x, y, visibility] per keypoint, image pixels"
    )
    mask: dict[str, Any] | None = Field(
        default=None,
        description="segmentation models: the mask as COCO RLE {size: [height, width], counts}",
    )


class DetectResponse(BaseModel):
    model: ModelRef
    image: ImageSize
    detections: list[Detection]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
