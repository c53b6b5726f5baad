"""Face embedders: the families classifier_embed, pixel_template, siamese_contrastive, triplet.

One contract for all of them (DESIGN.md "Contracts: Embedders"):
- train mode: `model(images, targets={"labels": (N,) int64})` -> dict of named losses
  (`loss_classifier`, `loss_template`, `loss_contrastive` or `loss_triplet`), computed inside
  from the batch with the model's own pair sampler / triplet miner;
- eval mode: `model(images)` -> (N, D) L2-normalised embeddings f_W(I).
`images` is an (N, C, H, W) float tensor in [0, 1] (or a list of C x H x W tensors of one size).

The metric-learning families train on L2-normalised embeddings, so their distances (and the
margins and γ tuned on them) live in [0, 2], the same space the gallery searches. The CNN
families share one trunk (ConvTrunk: conv-BN-ReLU stages, pooled to a 4x4 grid so the layout of
the face is kept, then a linear projection to D); `num_classes` only sizes classifier_embed's
`logits` head and is accepted by the other builders for the registry's uniform call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sightline.models.local_weights import load_local_weights
from sightline.models.metric_losses import (
    MINING_STRATEGIES,
    Mining,
    contrastive_loss,
    distance_matrix,
    mine_triplets,
    pair_distance,
    sample_pairs,
    triplet_loss,
)

POOLED_GRID = 4
Images = Tensor | Sequence[Tensor]
E = TypeVar("E", bound="Embedder")


class Embedder(nn.Module):
    """Base class: input checks and the train/eval switch of the embedder contract."""

    requires_training = True

    def __init__(self, embedding_dim: int, image_size: int, channels: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels}")
        if embedding_dim < 1 or image_size < 1:
            raise ValueError(
                f"embedding_dim and image_size must be >= 1, got {embedding_dim}, {image_size}"
            )
        self.embedding_dim = embedding_dim
        self.image_size = image_size  # what the data pipeline resizes faces to
        self.channels = channels

    def embed(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, D) embeddings before normalisation."""
        raise NotImplementedError

    def losses(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(
        self, images: Images, targets: Mapping[str, Tensor] | None = None
    ) -> Tensor | dict[str, Tensor]:
        batch = self._as_batch(images)
        if not self.training:
            return F.normalize(self.embed(batch), dim=1)
        if targets is None:
            raise ValueError('in train mode an embedder needs targets={"labels": (N,) tensor}')
        return self.losses(batch, self._labels(targets, len(batch)))

    def _as_batch(self, images: Images) -> Tensor:
        batch = images if isinstance(images, Tensor) else torch.stack(list(images))
        if batch.ndim != 4 or batch.shape[1] != self.channels:
            raise ValueError(
                f"images must be (N, {self.channels}, H, W), got shape {tuple(batch.shape)}"
            )
        return batch

    @staticmethod
    def _labels(targets: Mapping[str, Tensor], count: int) -> Tensor:
        labels = targets.get("labels") if isinstance(targets, Mapping) else None
        if labels is None:
            raise ValueError('targets must be a dict with "labels": an (N,) tensor of identities')
        labels = torch.as_tensor(labels).flatten()
        if labels.numel() != count:
            raise ValueError(f"targets['labels'] has {labels.numel()} entries for {count} images")
        return labels.long()


class ConvTrunk(nn.Module):
    """A VGG-like stack of 3x3 conv-BN-ReLU blocks (each stage halves the resolution), average
    pooled to a 4x4 grid and projected to D.

    BatchNorm rather than the detectors' GroupNorm (backbones.SmallConvNet): embedder batches
    hold P identities x K images, and BN trains these from scratch several times faster.
    """

    def __init__(self, channels: int, embedding_dim: int, width: int, stages: int) -> None:
        super().__init__()
        if width < 1 or stages < 1:
            raise ValueError(f"width and stages must be >= 1, got {width}, {stages}")
        layers: list[nn.Module] = []
        in_channels = channels
        for stage in range(stages):
            out_channels = width * min(2**stage, 4)
            layers += [
                _conv_bn_relu(in_channels, out_channels, stride=2),
                _conv_bn_relu(out_channels, out_channels, stride=1),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(POOLED_GRID)
        self.project = nn.Linear(in_channels * POOLED_GRID**2, embedding_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.project(self.pool(self.features(images)).flatten(1))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PixelTemplate(Embedder):
    """The naive baseline: f(I) = the image's pixels, resized to image_size and flattened.

    Eval embeddings are L2-normalised like every family's, so γ lives on the same scale.
    Nothing to learn: `requires_training` is False and training returns a zero loss.
    """

    requires_training = False

    def __init__(self, image_size: int, channels: int) -> None:
        super().__init__(channels * image_size**2, image_size, channels)

    def embed(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
        return images.flatten(1)

    def losses(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return {"loss_template": images.new_zeros((), requires_grad=True)}


class CNNEmbedder(Embedder):
    """Base of the learned families: f(I) = ConvTrunk(I)."""

    def __init__(
        self, embedding_dim: int, image_size: int, channels: int, width: int, stages: int
    ) -> None:
        super().__init__(embedding_dim, image_size, channels)
        self.trunk = ConvTrunk(channels, embedding_dim, width, stages)

    def embed(self, images: Tensor) -> Tensor:
        return self.trunk(images)


class ClassifierEmbedder(CNNEmbedder):
    """A classification CNN over the training identities; its penultimate layer is f(I)."""

    def __init__(self, num_classes: int, embedding_dim: int, **cnn: int) -> None:
        if num_classes < 2:
            raise ValueError(f"classifier_embed needs num_classes >= 2, got {num_classes}")
        super().__init__(embedding_dim, **cnn)
        self.num_classes = num_classes
        self.logits = nn.Sequential(nn.ReLU(), nn.Linear(embedding_dim, num_classes))

    def losses(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"labels must be in 0..{self.num_classes - 1} (the training identities), got "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        return {"loss_classifier": F.cross_entropy(self.logits(self.embed(images)), labels)}


class SiameseEmbedder(CNNEmbedder):
    """Shared-weight CNN trained with the contrastive loss on pairs sampled from each batch.

    L = mean over sampled pairs of (1 - y)/2 * d + y/2 * max(0, m - d), y = 0 same person.
    """

    def __init__(
        self,
        embedding_dim: int,
        margin: float,
        squared: bool,
        negatives_per_positive: float,
        **cnn: int,
    ) -> None:
        _check_margin(margin)
        super().__init__(embedding_dim, **cnn)
        self.margin, self.squared = margin, squared
        self.negatives_per_positive = negatives_per_positive

    def losses(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        embeddings = F.normalize(self.embed(images), dim=1)
        pairs = sample_pairs(labels, negatives_per_positive=self.negatives_per_positive)
        if len(pairs.y) == 0:
            return {"loss_contrastive": _no_loss(embeddings)}
        distance = pair_distance(embeddings[pairs.first], embeddings[pairs.second], self.squared)
        return {"loss_contrastive": contrastive_loss(distance, pairs.y, self.margin).mean()}


class TripletEmbedder(CNNEmbedder):
    """The same CNN trained with L = mean of max(0, m + d(I, P) - d(I, N)) over triplets mined
    online from each batch (batch-hard or semi-hard, models/metric_losses.py)."""

    def __init__(
        self, embedding_dim: int, margin: float, mining: Mining, squared: bool, **cnn: int
    ) -> None:
        _check_margin(margin)
        if mining not in MINING_STRATEGIES:
            raise ValueError(f"unknown mining {mining!r}; known: {', '.join(MINING_STRATEGIES)}")
        super().__init__(embedding_dim, **cnn)
        self.margin, self.mining, self.squared = margin, mining, squared

    def losses(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        embeddings = F.normalize(self.embed(images), dim=1)
        with torch.no_grad():
            distances = distance_matrix(embeddings, self.squared)
        triplets = mine_triplets(distances, labels, self.mining)
        if len(triplets) == 0:
            return {"loss_triplet": _no_loss(embeddings)}
        anchor = embeddings[triplets.anchor]
        positive = pair_distance(anchor, embeddings[triplets.positive], self.squared)
        negative = pair_distance(anchor, embeddings[triplets.negative], self.squared)
        return {"loss_triplet": triplet_loss(positive, negative, self.margin).mean()}


def _check_margin(margin: float) -> None:
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")


def _no_loss(embeddings: Tensor) -> Tensor:
    """A zero loss still connected to every parameter (DDP expects all of them to get grads)."""
    return embeddings.sum() * 0.0


def _with_weights(model: E, weights: str | None) -> E:
    load_local_weights(model, weights)
    return model


def build_pixel_template(
    num_classes: int, image_size: int = 64, channels: int = 3
) -> PixelTemplate:
    """pixel_template: L2 distance between raw (resized, flattened, normalised) images."""
    del num_classes  # nothing is learned
    return PixelTemplate(image_size=image_size, channels=channels)


def build_classifier_embed(
    num_classes: int,
    embedding_dim: int = 64,
    image_size: int = 64,
    channels: int = 3,
    width: int = 32,
    stages: int = 3,
    weights: str | None = None,
) -> ClassifierEmbedder:
    """classifier_embed: a CNN classifying the training identities; f(I) = penultimate layer."""
    model = ClassifierEmbedder(
        num_classes,
        embedding_dim,
        image_size=image_size,
        channels=channels,
        width=width,
        stages=stages,
    )
    return _with_weights(model, weights)


def build_siamese(
    num_classes: int,
    embedding_dim: int = 64,
    margin: float = 1.0,
    squared: bool = False,
    negatives_per_positive: float = 1.0,
    image_size: int = 64,
    channels: int = 3,
    width: int = 32,
    stages: int = 3,
    weights: str | None = None,
) -> SiameseEmbedder:
    """siamese_contrastive: shared-weight CNN, contrastive loss with margin m."""
    del num_classes  # no classifier head
    model = SiameseEmbedder(
        embedding_dim,
        margin,
        squared,
        negatives_per_positive,
        image_size=image_size,
        channels=channels,
        width=width,
        stages=stages,
    )
    return _with_weights(model, weights)


def build_triplet(
    num_classes: int,
    embedding_dim: int = 64,
    margin: float = 0.2,
    mining: Mining = "batch_hard",
    squared: bool = False,
    image_size: int = 64,
    channels: int = 3,
    width: int = 32,
    stages: int = 3,
    weights: str | None = None,
) -> TripletEmbedder:
    """triplet: the same CNN, triplet loss with margin m and online batch-hard/semi-hard mining."""
    del num_classes  # no classifier head
    model = TripletEmbedder(
        embedding_dim,
        margin,
        mining,
        squared,
        image_size=image_size,
        channels=channels,
        width=width,
        stages=stages,
    )
    return _with_weights(model, weights)
