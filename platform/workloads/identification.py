"""The identification group (embed): a folder-per-identity dataset split by identity,
γ calibrated on the validation identities after training, verification and identification
metrics on identities the network never saw.

Splits (sightline.data.identity): `train` identities fit the network (`num_classes` = their
number, for classifier_embed's head); `val` identities calibrate γ for
`identification.target_far` on every pair of their images; `unseen` identities are enrolled
with k templates each and queried with the rest (top1, dir_at_far_1e-2), `impostor` identities
are never enrolled (the open set). Verification metrics use every pair of unseen and impostor
images. `class_names` stays empty: embedders have no output classes, and a training set of
thousands of people would bloat model.json, the MLflow metadata and /v1/models.
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sightline.artifacts import ModelExtras, ModelRecord
from sightline.config import Settings, SettingsError
from sightline.data.identity import (
    SPLIT_NAMES,
    IdentityDataset,
    IdentitySplits,
    load_identity_splits,
)
from sightline.data.sources import IdentityData
from sightline.evaluate.identification import (
    METRIC_NAMES,
    calibrate_gamma,
    dir_at_far,
    eer,
    embed_batches,
    pair_distances,
    roc_auc,
    split_enroll_query,
    tar_at_far,
    top1_accuracy,
)
from sightline.train.job import TaskOptions, TrainingData, TrainJob, expect
from sightline.train.selection import VALIDATION_PREFIX
from sightline.train.tasks import Collate, TaskAdapter
from sightline.validate.report import ValidationReport
from sightline.workloads import Evaluation, Workload

EMBED_BATCH = 128
# Pair metrics look at every pair of up to this many images (whole people, drawn with the
# seed): 4000 images are 8M pairs, where a 20k-image split would need a 20k x 20k matrix.
MAX_PAIR_IMAGES = 4000
PROJECTED_IDENTITIES = 12
# Metrics reported per number of enrolled templates k: `<name>_k<k>`.
PER_K = ("top1", "dir_at_far_1e-2")


def min_unseen_images(settings: Settings) -> int:
    """An unseen identity is enrolled with up to max(enroll_k) templates and queried once more."""
    return max(settings.identification.enroll_k) + 1


def identity_splits(settings: Settings) -> tuple[list[Any], IdentitySplits]:
    return load_identity_splits(
        settings.identity_data, settings.project_root, min_unseen_images(settings)
    )


def embedder_params(settings: Settings, family: str) -> dict[str, Any]:
    """`models.<family>` with the input size and channels of `identity_data`: the network, the
    data pipeline, γ and the server all see faces prepared the same way."""
    params = settings.model_params(family)
    data = settings.identity_data
    for key, value in (("image_size", data.image_size), ("channels", data.channels)):
        if key in params and params[key] != value:
            raise SettingsError(
                f"models.{family}.{key} is {params[key]} but identity_data.{key} is {value}; "
                f"set it in identity_data only"
            )
        params[key] = value
    return params


def _embed(settings: Settings, model: nn.Module, records: list[Any]) -> tuple[np.ndarray, Any]:
    data = settings.identity_data
    dataset = IdentityDataset(records, image_size=data.image_size, channels=data.channels)
    names = np.array(sorted(dataset.identity_index, key=dataset.identity_index.__getitem__))
    embeddings, labels = embed_batches(model, DataLoader(dataset, batch_size=EMBED_BATCH))
    return embeddings, names[labels]


def pair_distances_of_people(
    embeddings: np.ndarray, labels: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor distances over every pair of images of up to MAX_PAIR_IMAGES
    images, taking whole people so that each keeps all its genuine pairs."""
    if len(labels) > MAX_PAIR_IMAGES:
        people, counts = np.unique(labels, return_counts=True)
        order = np.random.default_rng(seed).permutation(len(people))
        kept = people[order[np.cumsum(counts[order]) <= MAX_PAIR_IMAGES]]
        chosen = np.isin(labels, kept)
        embeddings, labels = embeddings[chosen], labels[chosen]
    return pair_distances(embeddings, labels, seed=seed)


class IdentityBatching(TaskOptions):
    """What the embed adapter needs beyond `train`: P identities x K images per batch, and how
    many images an unseen person needs (so the workers split the people as the driver does)."""

    identities_per_batch: int = Field(ge=2)
    images_per_identity: int = Field(ge=2)
    min_unseen_images: int = Field(ge=2)


# A batch of face crops (N, C, H, W) and their identity labels (N,).
FacesBatch = tuple[torch.Tensor, torch.Tensor]


def identity_dataset(job: TrainJob) -> Dataset:
    """The training identities' images (labels 0..P-1, the identities in sorted order)."""
    data = expect(job.data, IdentityData, "the job's data section")
    batching = expect(job.task_options, IdentityBatching, "the job's task options")
    records, splits = load_identity_splits(data, job.project_root, batching.min_unseen_images)
    augment = job.train.augment
    transform = None
    if augment is not None:
        from sightline.data.augment import face_augmentation, for_training

        faces = face_augmentation(augment, data.channels)
        transform = for_training(faces, augment, job.train.epochs)
    return IdentityDataset(
        splits.records(records, "train"),
        image_size=data.image_size,
        channels=data.channels,
        transform=transform,
    )


def identity_loader(
    job: TrainJob,
    dataset: Dataset,
    collate: Collate[FacesBatch],
    rank: int,
    world: int,
) -> DataLoader:
    """P identities x K images per batch (positives and negatives in every batch), each rank
    its own batches of one shared shuffle."""
    from sightline.data.identity import IdentityBatchSampler

    batching = expect(job.task_options, IdentityBatching, "the job's task options")
    sampler = IdentityBatchSampler(
        dataset.labels,  # type: ignore[attr-defined]
        identities_per_batch=batching.identities_per_batch,
        images_per_identity=batching.images_per_identity,
        seed=job.seed,
        num_replicas=world,
        rank=rank,
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)


def identity_collate(batch: list[tuple[torch.Tensor, int]]) -> FacesBatch:
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def identity_losses(
    model: nn.Module, batch: FacesBatch, device: torch.device
) -> dict[str, torch.Tensor]:
    images, labels = batch
    return model(images.to(device), {"labels": labels.to(device)})


TRAIN_ADAPTER = TaskAdapter(
    identity_dataset, identity_collate, identity_losses, loader=identity_loader
)


def _validation_people_scores(
    settings: Settings, model: nn.Module, records: list[Any], splits: IdentitySplits
) -> dict[str, float]:
    """IdentificationWorkload.validation_scores on records and splits already read."""
    options = settings.identification
    embeddings, labels = _embed(settings, model, splits.records(records, "val"))
    people, counts = np.unique(labels, return_counts=True)
    shuffled = np.random.default_rng(settings.seed).permutation(len(people))
    strangers = people[shuffled[: len(people) // 2]]
    is_stranger = np.isin(labels, strangers)
    enrollable = people[counts > options.headline_k]
    known = ~is_stranger & np.isin(labels, enrollable)
    if not known.any() or not is_stranger.any():
        raise SettingsError(
            f"the validation people cannot be split into enrolled people with more than "
            f"{options.headline_k} images (identification.headline_k) and strangers: "
            f"{len(people)} people, {int(counts.max(initial=0))} images at most"
        )
    enroll, query = split_enroll_query(labels[known], options.headline_k, settings.seed)
    gallery = (embeddings[known][enroll], labels[known][enroll])
    queries = (embeddings[known][query], labels[known][query])
    return {
        "top1": top1_accuracy(*gallery, *queries, options.rule),
        "dir_at_far_1e-2": dir_at_far(
            *gallery, *queries, embeddings[is_stranger], 1e-2, options.rule
        ),
    }


class IdentificationWorkload(Workload):
    name = "identification"
    tasks = ("embed",)
    data_section = "identity_data"
    synth_kind = "identity"
    experiment = "sightline-identification"
    registered_model = "sightline-embedder"
    primary_metric = "dir_at_far_1e-2"
    headline_metrics = ("dir_at_far_1e-2", "top1")
    summary_metrics = ("top1", "dir_at_far_1e-2", "roc_auc", "eer", "untrained_dir_at_far_1e-2")
    train_adapters = MappingProxyType({"embed": TRAIN_ADAPTER})
    # params.yaml keys each stage kind reads ("{family}": the stage's family); dvc.yaml lists
    # exactly these (tests/unit/test_dvc_params.py). enroll_k decides who is split off as
    # unseen (min_unseen_images), so every stage that splits the people reads it.
    stage_params = MappingProxyType(
        {
            "validate": ("identity_data", "identification.enroll_k"),
            "train": (
                "seed",
                "identity_data",
                "train",
                "identification.train",
                "identification.family_train",
                "identification.enroll_k",
                "identification.identities_per_batch",
                "identification.images_per_identity",
                "identification.target_far",
                "identification.rule",
                "models.{family}",
            ),
            "evaluate": (
                "seed",
                "identity_data",
                "identification.enroll_k",
                "identification.headline_k",
                "identification.rule",
            ),
            "register": (
                "identity_data",
                "identification.enroll_k",
                "identification.headline_k",
                "identification.rule",
            ),
        }
    )

    def training_data(self, settings: Settings, family: str) -> TrainingData:
        records, splits = identity_splits(settings)
        options = settings.identification
        return TrainingData(
            num_classes=len(splits.train),
            class_names=[],
            category_ids=[],
            data_root=self.data_root(settings),
            model_params=embedder_params(settings, family),
            data=settings.identity_data,
            train=self.train_block(settings, family),
            task_options=IdentityBatching(
                identities_per_batch=options.identities_per_batch,
                images_per_identity=options.images_per_identity,
                min_unseen_images=min_unseen_images(settings),
            ),
            record_schema={"image": "string", "identity": "string"},
            split_sizes={
                f"{split}_{unit}": count
                for split in SPLIT_NAMES
                for unit, count in (
                    ("people", len(getattr(splits, split))),
                    ("images", len(splits.records(records, split))),
                )
            },
        )

    def after_training(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> ModelExtras:
        """γ for `identification.target_far` on every pair of validation images."""
        records, splits = identity_splits(settings)
        embeddings, labels = _embed(settings, model, splits.records(records, "val"))
        genuine, impostor = pair_distances_of_people(embeddings, labels, settings.seed)
        target = settings.identification.target_far
        threshold = calibrate_gamma(genuine, impostor, target)
        return ModelExtras(
            gamma=threshold.gamma,
            target_far=target,
            rule=settings.identification.rule,
            val_tar_at_gamma=threshold.tar,
        )

    def evaluate(
        self,
        settings: Settings,
        model: nn.Module,
        record: ModelRecord,
        *,
        with_figures: bool,
        first: int | None = None,  # people, not images, are the unit: every one is scored
    ) -> Evaluation:
        options = settings.identification
        records, splits = identity_splits(settings)
        known, known_labels = _embed(settings, model, splits.records(records, "unseen"))
        strangers, stranger_labels = _embed(settings, model, splits.records(records, "impostor"))

        # Verification: every pair of images of the unseen and impostor people (or a sample).
        everyone = np.concatenate([known, strangers])
        genuine, impostor = pair_distances_of_people(
            everyone, np.concatenate([known_labels, stranger_labels]), settings.seed
        )
        metrics = {
            "roc_auc": roc_auc(genuine, impostor),
            "eer": eer(genuine, impostor),
            "tar_at_far_1e-2": tar_at_far(genuine, impostor, 1e-2),
            "tar_at_far_1e-3": tar_at_far(genuine, impostor, 1e-3),
        }
        gamma = record.extras.gamma
        if gamma is not None:  # how the γ stored with the model does on people it never saw
            metrics["far_at_gamma"] = float(np.mean(impostor < gamma))
            metrics["tar_at_gamma"] = float(np.mean(genuine < gamma))

        # Identification: k templates enrolled per unseen person, the rest are queries.
        for k in options.enroll_k:
            enroll, query = split_enroll_query(known_labels, k, settings.seed)
            gallery = (known[enroll], known_labels[enroll])
            queries = (known[query], known_labels[query])
            metrics[f"top1_k{k}"] = top1_accuracy(*gallery, *queries, options.rule)
            metrics[f"dir_at_far_1e-2_k{k}"] = dir_at_far(
                *gallery, *queries, strangers, 1e-2, options.rule
            )
        for name in PER_K:
            metrics[name] = metrics[f"{name}_k{options.headline_k}"]
        # The same two scores on the validation people: what `champion` is chosen on.
        scores = _validation_people_scores(settings, model, records, splits)
        metrics.update({VALIDATION_PREFIX + name: value for name, value in scores.items()})

        figures = {}
        if with_figures:
            from sightline.evaluate import identification_plots as plots

            figures = {
                "roc.png": plots.roc_figure(genuine, impostor, gamma),
                "det.png": plots.det_figure(genuine, impostor),
                "distances.png": plots.distance_histogram_figure(genuine, impostor, gamma),
                "embeddings_2d.png": plots.projection_figure(
                    known, known_labels, PROJECTED_IDENTITIES
                ),
            }
        return Evaluation(metrics=metrics, figures=figures)

    def validation_scores(
        self, settings: Settings, model: nn.Module, record: ModelRecord
    ) -> dict[str, float]:
        """top1 and dir_at_far_1e-2 on the validation people only (the unseen and impostor
        people are the test): half of them enrolled with `headline_k` templates each (those
        with more images than that), the other half strangers."""
        records, splits = identity_splits(settings)
        return _validation_people_scores(settings, model, records, splits)

    @property
    def champion_metric(self) -> str:
        """The evaluate stage's primary metric is measured on the unseen and impostor people
        (the test); `champion` is chosen on the validation people, as the best epoch is."""
        return VALIDATION_PREFIX + self.primary_metric

    def registry_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        per_k = tuple(f"{name}_k" for name in PER_K)
        validation = tuple(VALIDATION_PREFIX + name for name in PER_K)
        names = [*METRIC_NAMES, *validation, *(n for n in metrics if n.startswith(per_k))]
        return {name: metrics[name] for name in names if name in metrics}

    def validate(self, settings: Settings) -> ValidationReport:
        from sightline.validate.identity import validate_identity_dataset

        return validate_identity_dataset(
            settings.identity_data, settings.project_root, min_unseen_images(settings)
        )

    def eval_scope(self, settings: Settings, record: ModelRecord) -> str:
        """The validation images (what `champion` is chosen on) and the enrollment rule."""
        records, splits = identity_splits(settings)
        scored = splits.records(records, "val")
        root = settings.path(settings.identity_data.root)
        digest = hashlib.sha1(
            "\n".join(f"{r.identity}/{r.path.relative_to(root)}" for r in scored).encode()
        ).hexdigest()[:12]
        options = settings.identification
        return f"val-identities:{digest}:k={options.headline_k}:rule={options.rule}"


WORKLOAD = IdentificationWorkload()
