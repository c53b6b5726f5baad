"""Identity datasets laid out one folder per person, split by identity, as a torch Dataset.

Layout: `<root>/<identity>/<any name>.<png|jpg|jpeg|bmp|gif|tif|tiff|webp|pgm|ppm|pnm>`, grey
or colour, any size. Hidden files and other extensions in identity folders are ignored (e.g.
`.DS_Store`, `Thumbs.db`, notes); an image directly under `<root>`, an identity folder without
images, or an unreadable image is an error that names the file or identity.

Splits are by identity, so no person is in two of them: `train` identities fit the network,
`val` identities calibrate γ and select models, `unseen` identities are enrolled (k templates
each) and queried, `impostor` identities are never enrolled (open-set queries that must come
back "unknown").
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from sightline.data.detection import load_rgb_image
from sightline.data.errors import DatasetError
from sightline.data.sources import IdentityData

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
)
SPLIT_NAMES = ("train", "val", "unseen", "impostor")
# ITU-R BT.601 luma, as PIL's "L" conversion uses.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class IdentityRecord:
    path: Path
    identity: str


def read_identity_folders(root: str | Path) -> list[IdentityRecord]:
    """Every image under `root/<identity>/`, sorted by identity then file name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError.at(root, "identity dataset folder not found")
    records: list[IdentityRecord] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.suffix.lower() in IMAGE_EXTENSIONS:
                raise DatasetError.at(
                    entry,
                    "image lies directly in the dataset folder; put each person's images in a "
                    "folder named after the person",
                )
            continue
        images = [
            IdentityRecord(path=path, identity=entry.name)
            for path in sorted(entry.iterdir())
            if path.is_file()
            and not path.name.startswith(".")
            and path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not images:
            raise DatasetError.at(
                entry,
                f"identity folder holds no images (expected {', '.join(sorted(IMAGE_EXTENSIONS))})",
            )
        records.extend(images)
    if not records:
        raise DatasetError.at(root, "no identity folders (expected <root>/<identity>/<image>)")
    return records


def identities_of(records: Sequence[IdentityRecord]) -> list[str]:
    """The distinct identities, sorted."""
    return sorted({record.identity for record in records})


@dataclass(frozen=True)
class IdentitySplits:
    """Disjoint identity lists (sorted)."""

    train: list[str]
    val: list[str]
    unseen: list[str]
    impostor: list[str]

    def records(self, records: Sequence[IdentityRecord], split: str) -> list[IdentityRecord]:
        """The records of one split's identities."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown identity split {split!r}; known: {', '.join(SPLIT_NAMES)}")
        wanted = set(getattr(self, split))
        return [record for record in records if record.identity in wanted]


def split_by_identity(
    records: Sequence[IdentityRecord],
    *,
    val_fraction: float = 0.1,
    unseen_fraction: float = 0.2,
    impostor_fraction: float = 0.1,
    min_unseen_images: int = 2,
    seed: int = 0,
) -> IdentitySplits:
    """Assign whole identities to train / val / unseen / impostor, deterministically from `seed`.

    Each non-zero fraction gets at least one identity. Unseen identities need
    `min_unseen_images` images (k enrolled templates + at least one query), so they are drawn
    only from identities with that many; the rest of the identities are shuffled into the
    other splits, train taking what is left.
    """
    fractions = {"val": val_fraction, "unseen": unseen_fraction, "impostor": impostor_fraction}
    for name, fraction in fractions.items():
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name}_fraction must be in [0, 1), got {fraction}")
    if sum(fractions.values()) >= 1.0:
        raise ValueError(f"val + unseen + impostor fractions must leave identities to train on, "
                         f"got {sum(fractions.values()):.3f}")  # fmt: skip
    counts = Counter(record.identity for record in records)
    identities = sorted(counts)
    wanted = {name: _share(fraction, len(identities)) for name, fraction in fractions.items()}
    if sum(wanted.values()) >= len(identities):
        raise DatasetError.at(
            "identity splits",
            f"{len(identities)} identities are too few for the requested split fractions "
            f"(val {wanted['val']}, unseen {wanted['unseen']}, impostor {wanted['impostor']} "
            "and at least one to train on)",
        )
    order = np.random.default_rng(seed).permutation(len(identities))
    shuffled = [identities[i] for i in order]
    eligible = [name for name in shuffled if counts[name] >= min_unseen_images]
    if len(eligible) < wanted["unseen"]:
        raise DatasetError.at(
            "identity splits",
            f"only {len(eligible)} identities have the {min_unseen_images} images an unseen "
            f"(enrolled + queried) identity needs; {wanted['unseen']} are requested",
        )
    unseen = eligible[: wanted["unseen"]]
    taken = set(unseen)
    rest = [name for name in shuffled if name not in taken]
    val = rest[: wanted["val"]]
    impostor = rest[wanted["val"] : wanted["val"] + wanted["impostor"]]
    train = rest[wanted["val"] + wanted["impostor"] :]
    return IdentitySplits(
        train=sorted(train), val=sorted(val), unseen=sorted(unseen), impostor=sorted(impostor)
    )


def load_identity_splits(
    cfg: IdentityData, project_root: Path, min_unseen_images: int
) -> tuple[list[IdentityRecord], IdentitySplits]:
    """The configured dataset's records and its identity splits, as every stage computes them
    (train, γ calibration, evaluation, validation): `min_unseen_images` is the largest number
    of enrolled templates plus one query."""
    root = cfg.resolved_root(project_root)
    records = read_identity_folders(root)
    splits = split_by_identity(
        records,
        val_fraction=cfg.val_fraction,
        unseen_fraction=cfg.unseen_fraction,
        impostor_fraction=cfg.impostor_fraction,
        min_unseen_images=min_unseen_images,
        seed=cfg.split_seed,
    )
    return records, splits


def _share(fraction: float, total: int) -> int:
    return 0 if fraction == 0.0 else max(1, math.floor(fraction * total + 0.5))


def prepare_face(image: Tensor, image_size: int, channels: int) -> Tensor:
    """A float 3xHxW image in [0, 1] -> `channels`x`image_size`x`image_size` (grey: BT.601 luma).

    The whole image is resized (no crop), as face crops are expected; training, enrollment and
    queries all go through this one function.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a 3xHxW image, got shape {tuple(image.shape)}")
    if image.shape[-2:] != (image_size, image_size):
        image = F.interpolate(
            image[None], size=(image_size, image_size), mode="bilinear", antialias=True
        )[0].clamp(0.0, 1.0)
    if channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=image.dtype).view(3, 1, 1)
        image = (image * weights).sum(dim=0, keepdim=True)
    return image.contiguous()


def face_from_array(array: np.ndarray, image_size: int, channels: int) -> Tensor:
    """A uint8 H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA, alpha dropped) array, e.g. a
    gallery template image, -> the model input prepare_face gives for an image file."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an H x W, H x W x 3 or H x W x 4 image, got {array.shape}")
    rgb = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]
    image = torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1) / 255.0
    return prepare_face(image, image_size, channels)


ImageTransform = Callable[[Tensor], Tensor]


class IdentityDataset(Dataset[tuple[Tensor, int]]):
    """Items are (image float32 CxHxW in [0, 1] at `image_size`, identity index).

    `identity_index` maps identity -> label; by default the records' identities in sorted order
    (0..P-1). `transform` runs on the prepared image (augmentation).
    """

    def __init__(
        self,
        records: Sequence[IdentityRecord],
        *,
        image_size: int,
        channels: int = 3,
        identity_index: dict[str, int] | None = None,
        transform: ImageTransform | None = None,
    ) -> None:
        if not records:
            raise DatasetError.at("identity dataset", "no records")
        self.records = list(records)
        self.image_size = image_size
        self.channels = channels
        self.identity_index = identity_index or {
            name: i for i, name in enumerate(identities_of(self.records))
        }
        missing = {r.identity for r in self.records} - set(self.identity_index)
        if missing:
            raise DatasetError.at(
                "identity dataset", f"identities without an index: {sorted(missing)[:5]}"
            )
        self.labels = [self.identity_index[record.identity] for record in self.records]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Tells the transform the epoch (augmentation is off for the final ones)."""
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        record = self.records[index]
        image = load_rgb_image(record.path, f"identity {record.identity!r}")
        image = prepare_face(image, self.image_size, self.channels)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class IdentityBatchSampler(Sampler[list[int]]):
    """P identities x K images per batch, so every batch holds positives and negatives.

    Online pair sampling and triplet mining need several images of a person in one batch; a
    plain shuffled loader rarely gives that. Each epoch the identities with at least two images
    are shuffled and cut into groups of P; each identity contributes K images (drawn without
    replacement, repeated only when it has fewer than K). With `num_replicas` > 1 (DDP), rank r
    gets every num_replicas-th batch; all ranks get the same number of batches. Call
    `set_epoch` each epoch, as with DistributedSampler.
    """

    def __init__(
        self,
        labels: Sequence[int],
        *,
        identities_per_batch: int,
        images_per_identity: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if identities_per_batch < 2 or images_per_identity < 2:
            raise ValueError(
                "a batch needs at least 2 identities and 2 images per identity, got "
                f"P={identities_per_batch}, K={images_per_identity}"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        by_label: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            by_label.setdefault(int(label), []).append(index)
        self.by_label = {label: idx for label, idx in by_label.items() if len(idx) >= 2}
        if len(self.by_label) < identities_per_batch:
            raise DatasetError.at(
                "identity batches",
                f"{len(self.by_label)} identities have two or more images; a batch of "
                f"P={identities_per_batch} identities needs at least that many",
            )
        self.p, self.k = identities_per_batch, images_per_identity
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.by_label) // self.p) // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        labels = sorted(self.by_label)
        order = [labels[i] for i in rng.permutation(len(labels))]
        batches = [order[start : start + self.p] for start in range(0, len(order), self.p)]
        batches = batches[: len(self) * self.num_replicas]
        for group in batches[self.rank :: self.num_replicas]:
            batch: list[int] = []
            for label in group:
                pool = self.by_label[label]
                picks = rng.choice(len(pool), size=self.k, replace=len(pool) < self.k)
                batch.extend(pool[i] for i in picks)
            yield batch
