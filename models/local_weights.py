"""Starting weights from a local file (`models.<family>.weights`): a model pretrained elsewhere,
e.g. the same family trained by Sightline on a larger dataset (`artifacts/models/<family>/
weights.safetensors`). Nothing is ever downloaded.

A file is read as plain tensors only (safetensors, or a `torch.save`d state dict read with
`weights_only=True`: no pickled code runs). Tensors are matched by name; a first convolution
pretrained on colour that now sees grey images (or the reverse) is adapted, and tensors whose
shape no longer fits (a classifier head over another number of people or classes) are left at
their initial values and named in the log. A file of which nothing fits is an error, not a
silent training from scratch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)
COLOUR, GREY = 3, 1


def read_weights_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist (weights are never downloaded)"
        )
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} is not a state dict of tensors")
    return state


def adapted_input_channels(pretrained: Tensor, wanted: torch.Size) -> Tensor | None:
    """A convolution kernel pretrained on colour for grey input (a grey pixel is R = G = B, so
    the channels' kernels add up) or on grey for colour (split in three); None if the kernels
    differ in anything else."""
    if (
        pretrained.dim() < 3
        or pretrained.shape[0] != wanted[0]
        or pretrained.shape[2:] != wanted[2:]
    ):
        return None
    if (pretrained.shape[1], wanted[1]) == (COLOUR, GREY):
        return pretrained.sum(dim=1, keepdim=True)
    if (pretrained.shape[1], wanted[1]) == (GREY, COLOUR):
        return pretrained.repeat(1, COLOUR, *([1] * (pretrained.dim() - 2))) / COLOUR
    return None


def load_local_weights(module: nn.Module, weights: str | None) -> bool:
    """Load the user's weights file into `module` if one is given; False if none is."""
    if not weights:
        return False
    path = Path(weights)
    own = module.state_dict()
    fitting: dict[str, Tensor] = {}
    adapted, misfit = [], []
    for name, tensor in read_weights_file(path).items():
        if name not in own:
            continue
        if tensor.shape == own[name].shape:
            fitting[name] = tensor
        elif (channels := adapted_input_channels(tensor, own[name].shape)) is not None:
            fitting[name], adapted = channels, [*adapted, name]
        else:
            misfit.append(f"{name} {tuple(tensor.shape)} -> {tuple(own[name].shape)}")
    learned = [n for n, t in own.items() if t.is_floating_point()]
    if not any(name in fitting for name in learned):
        raise ValueError(
            f"weights file {path}: none of its tensors fit {type(module).__name__} "
            f"(is it this family's, with the same width and stages?); mismatched: {misfit[:5]}"
        )
    module.load_state_dict(fitting, strict=False)
    logger.info(
        "%s: %d of %d tensors from %s%s%s", type(module).__name__, len(fitting), len(own), path,
        f"; input channels adapted: {adapted}" if adapted else "",
        f"; left at their initial values (shape changed): {misfit}" if misfit else "",
    )  # fmt: skip
    return True
