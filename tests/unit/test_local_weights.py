"""Starting weights from a local file (`models.<family>.weights`): safetensors or a plain state
dict, colour kernels adapted to grey input, misfit tensors named and left alone, a file of
which nothing fits refused, and a trained model rebuilt without its starting file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import safetensors.torch
import torch

from sightline.artifacts import ModelRecord, load_trained, save_trained
from sightline.models import build_model
from sightline.models.local_weights import adapted_input_channels

TINY = {"embedding_dim": 8, "image_size": 16, "width": 4, "stages": 2}


def saved(model: torch.nn.Module, path: Path) -> Path:
    safetensors.torch.save_model(model, str(path))
    return path


def test_a_colour_model_starts_a_grey_one_that_sees_a_grey_image_as_it_did(tmp_path: Path) -> None:
    torch.manual_seed(0)
    colour = build_model("triplet", 4, **TINY, channels=3).eval()
    grey_image = torch.rand(2, 1, 16, 16)
    expected = colour(grey_image.expand(-1, 3, -1, -1))  # R = G = B
    path = saved(colour, tmp_path / "colour.safetensors")
    grey = build_model("triplet", 4, **TINY, channels=1, weights=str(path)).eval()
    assert torch.allclose(grey(grey_image), expected, atol=1e-5)


def test_a_grey_kernel_is_shared_by_the_three_colours() -> None:
    grey = torch.randn(8, 1, 3, 3)
    colour = adapted_input_channels(grey, torch.Size([8, 3, 3, 3]))
    assert colour is not None and torch.allclose(colour.sum(dim=1, keepdim=True), grey)
    assert adapted_input_channels(grey, torch.Size([8, 2, 3, 3])) is None
    assert adapted_input_channels(grey, torch.Size([8, 1, 5, 5])) is None


def test_a_head_over_other_classes_is_left_at_its_start_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pretrained = build_model("classifier_embed", 10, **TINY)
    path = tmp_path / "classifier.pt"
    torch.save(pretrained.state_dict(), path)  # a plain torch.save of tensors is read too
    with caplog.at_level(logging.INFO, logger="sightline.models.local_weights"):
        started = build_model("classifier_embed", 4, **TINY, weights=str(path))
    trunk = [n for n in pretrained.state_dict() if n.startswith("trunk.")]
    assert trunk and all(
        torch.equal(started.state_dict()[n], pretrained.state_dict()[n]) for n in trunk
    )
    assert "left at their initial values" in caplog.text and "(10," in caplog.text


def test_a_file_of_another_family_is_refused_by_name(tmp_path: Path) -> None:
    path = saved(build_model("otdr_window", 5), tmp_path / "otdr.safetensors")
    with pytest.raises(ValueError, match=r"otdr\.safetensors: none of its tensors fit"):
        build_model("triplet", 4, **TINY, weights=str(path))


def test_a_trained_model_loads_where_its_starting_file_is_gone(tmp_path: Path) -> None:
    start = saved(build_model("triplet", 4, **TINY), tmp_path / "start.safetensors")
    params = {**TINY, "weights": str(start)}
    trained = build_model("triplet", 4, **params).eval()
    record = ModelRecord(
        family="triplet", task="identify", num_classes=4, model_params=params, class_names=[],
        category_ids=[], run_id="r", model_uri="", tags={},
    )  # fmt: skip
    save_trained(tmp_path / "model", trained, record)
    start.unlink()  # e.g. served on another machine
    model, _ = load_trained(tmp_path / "model")
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model(images), trained(images))
