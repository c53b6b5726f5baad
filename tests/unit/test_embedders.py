"""The embedder families and their one contract (DESIGN.md "Contracts: Embedders")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sightline.models.embedders import (
    Embedder,
    build_classifier_embed,
    build_pixel_template,
    build_siamese,
    build_triplet,
)

TINY = {"embedding_dim": 8, "image_size": 16, "width": 4, "stages": 2}
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

Builder = Callable[..., Embedder]
FAMILIES: dict[str, tuple[Builder, dict[str, object], str]] = {
    "classifier_embed": (build_classifier_embed, {}, "loss_classifier"),
    "siamese_contrastive": (build_siamese, {"margin": 1.0}, "loss_contrastive"),
    "triplet_batch_hard": (build_triplet, {"mining": "batch_hard"}, "loss_triplet"),
    "triplet_semi_hard": (build_triplet, {"mining": "semi_hard"}, "loss_triplet"),
}


def _model(family: str, **overrides: object) -> Embedder:
    torch.manual_seed(0)
    builder, hparams, _ = FAMILIES[family]
    return builder(num_classes=4, **{**TINY, **hparams, **overrides})


def _images(count: int = 8, channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_eval_returns_l2_normalised_embeddings(family: str) -> None:
    model = _model(family).eval()
    embeddings = model(_images())
    assert embeddings.shape == (8, 8)
    assert torch.linalg.norm(embeddings, dim=1).tolist() == pytest.approx([1.0] * 8, abs=1e-5)
    # A list of CxHxW tensors works like a batch.
    listed = model(list(_images()))
    assert torch.allclose(listed, embeddings, atol=1e-6)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_train_returns_its_named_loss_and_reaches_every_parameter(family: str) -> None:
    model = _model(family).train()
    losses = model(_images(), {"labels": LABELS})
    assert list(losses) == [FAMILIES[family][2]]
    loss = next(iter(losses.values()))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(family: str) -> None:
    model = _model(family).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = _images()
    history = []
    for _ in range(8):
        loss = sum(model(images, {"labels": LABELS}).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert history[-1] < history[0]


@pytest.mark.parametrize("family", ["siamese_contrastive", "triplet_batch_hard"])
def test_a_batch_without_pairs_gives_a_zero_loss_that_still_backpropagates(family: str) -> None:
    model = _model(family).train()
    same_person = torch.zeros(4, dtype=torch.int64)  # no negatives: no triplet
    losses = model(_images(4), {"labels": same_person})
    loss = next(iter(losses.values()))
    if family == "triplet_batch_hard":
        assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_classifier_has_a_logits_head_over_the_training_identities() -> None:
    model = _model("classifier_embed")
    assert model.logits[-1].out_features == 4
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.3"):
        model.train()(_images(2), {"labels": torch.tensor([0, 4])})


def test_pixel_template_is_the_normalised_raw_image() -> None:
    model = build_pixel_template(num_classes=0, image_size=8, channels=1).eval()
    assert not model.requires_training and model.embedding_dim == 64
    images = _images(2, channels=1, size=8)
    expected = images.flatten(1) / torch.linalg.norm(images.flatten(1), dim=1, keepdim=True)
    assert torch.allclose(model(images), expected, atol=1e-6)
    assert model(_images(2, channels=1, size=20)).shape == (2, 64)  # resized to image_size
    losses = model.train()(images, {"labels": torch.tensor([0, 1])})
    assert losses["loss_template"].item() == 0.0
    losses["loss_template"].backward()  # a no-op the shared loop can still call


def test_grey_models_take_one_channel() -> None:
    model = _model("triplet_batch_hard", channels=1).eval()
    assert model(_images(3, channels=1)).shape == (3, 8)
    with pytest.raises(
        ValueError, match=r"images must be \(N, 1, H, W\), got shape \(3, 3, 16, 16\)"
    ):
        model(_images(3))


def test_contract_errors_name_the_problem() -> None:
    model = _model("siamese_contrastive").train()
    with pytest.raises(ValueError, match="needs targets"):
        model(_images())
    with pytest.raises(ValueError, match='"labels"'):
        model(_images(), {"boxes": LABELS})
    with pytest.raises(ValueError, match="has 2 entries for 8 images"):
        model(_images(), {"labels": torch.tensor([0, 1])})


@pytest.mark.parametrize(
    ("builder", "hparams", "message"),
    [
        (build_triplet, {"mining": "hardest"}, "unknown mining 'hardest'"),
        (build_triplet, {"margin": 0.0}, "margin must be > 0"),
        (build_siamese, {"margin": -1.0}, "margin must be > 0"),
        (build_siamese, {"channels": 2}, "channels must be 1"),
        (build_classifier_embed, {"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_builders_check_their_hyper_parameters(
    builder: Builder, hparams: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        builder(num_classes=4, **{**TINY, **hparams})


def test_local_weights_are_loaded_and_never_downloaded(tmp_path: Path) -> None:
    trained = _model("triplet_batch_hard").eval()
    path = tmp_path / "embedder.pt"
    torch.save(trained.state_dict(), path)
    restored = build_triplet(num_classes=4, **TINY, weights=str(path)).eval()
    assert torch.allclose(restored(_images()), trained(_images()))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_triplet(num_classes=4, **TINY, weights=str(tmp_path / "missing.pt"))
