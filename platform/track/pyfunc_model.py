"""A registered Sightline model as an MLflow pyfunc, logged as "models from code".

MLflow stores this file (source text, not a pickle) beside the model's two artifacts,
weights.safetensors and model.json (sightline.artifacts); `mlflow.pyfunc.load_model` and
`mlflow models serve` run it, and it rebuilds the network from the family's builder. Sightline's
own loader (track/registry.load_version) never runs this file: it reads the artifacts directly.

predict, by the record's task:
  detect / segment / keypoints: uint8 images (N, H, W, 3) -> one row per detection
                                (image, x1, y1, x2, y2, label, score), boxes in input pixels
  events1d:                     float32 traces (N, L) -> one row per event
                                (trace, start, end, label, score), positions in samples
  embed:                        uint8 faces (N, H, W, C) -> float32 embeddings (N, D)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.types import Schema, TensorSpec

# The name of the directory artifact that holds weights.safetensors and model.json.
MODEL_ARTIFACT = "sightline_model"
DETECTION_TASKS = {"detect", "segment", "keypoints"}


def example_input(task: str, model: torch.nn.Module) -> np.ndarray:
    """A small valid input for `task` (the logged input example)."""
    if task == "events1d":
        return np.linspace(0.0, -6.0, 600, dtype=np.float32)[None, :]
    if task == "embed":
        size = int(getattr(model, "image_size", 32))
        return np.full((1, size, size, int(getattr(model, "channels", 3))), 128, np.uint8)
    return np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)


def signature(example: np.ndarray, output: pd.DataFrame | np.ndarray) -> ModelSignature:
    """Inputs of any batch size and length / image size (channels fixed), outputs as inferred."""
    shape = (-1, -1) if example.ndim == 2 else (-1, -1, -1, example.shape[-1])
    return ModelSignature(
        inputs=Schema([TensorSpec(example.dtype, shape)]),
        outputs=infer_signature(example, output).outputs,
    )


def predict_rows(model: torch.nn.Module, task: str, batch: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Run `batch` (see the module docstring) through an eval-mode model."""
    batch = np.asarray(batch)
    with torch.inference_mode():
        if task == "embed":
            from sightline.data.identity import face_from_array

            faces = [face_from_array(i, model.image_size, model.channels) for i in batch]
            return model(torch.stack(faces)).float().numpy()
        if task == "events1d":
            inputs = [torch.tensor(trace, dtype=torch.float32) for trace in batch]
            return _rows(model(inputs), "segments", "trace", ["start", "end"])
        images = [torch.tensor(i, dtype=torch.float32).permute(2, 0, 1) / 255.0 for i in batch]
        return _rows(model(images), "boxes", "image", ["x1", "y1", "x2", "y2"])


def _rows(outputs: list[dict[str, Any]], key: str, index: str, columns: list[str]) -> pd.DataFrame:
    rows = [
        {index: n, **dict(zip(columns, place, strict=True)), "label": label, "score": score}
        for n, output in enumerate(outputs)
        for place, label, score in zip(
            output[key].tolist(), output["labels"].tolist(), output["scores"].tolist(), strict=True
        )
    ]
    frame = pd.DataFrame(rows, columns=[index, *columns, "label", "score"])
    return frame.astype({index: "int64", "label": "int64", **dict.fromkeys(columns, "float64")})


class SightlineModel(PythonModel):
    def load_context(self, context):
        from sightline.artifacts import load_trained

        self.model, self.record = load_trained(Path(context.artifacts[MODEL_ARTIFACT]))

    # No type hints: MLflow would read them as an input schema; the logged signature is it.
    def predict(self, context, model_input, params=None):
        return predict_rows(self.model, self.record.task, model_input)


mlflow.models.set_model(SightlineModel())
