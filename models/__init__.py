"""The model zoo: pure PyTorch families behind one registry (no Ray, MLflow or DVC here)."""

from sightline.models.registry import FAMILIES, Family, build_model, family

__all__ = ["FAMILIES", "Family", "build_model", "family"]
