"""The identification workload and the `embed` training adapter, on a tiny synthetic face set:
P x K batches, training data derived from the identity splits, γ, metric names and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sightline.artifacts import ModelRecord
from sightline.config import Identification, IdentityData, Settings, SettingsError
from sightline.data.identity import load_identity_splits
from sightline.data.synth.identity import SynthIdentity, generate
from sightline.evaluate.identification import METRIC_NAMES
from sightline.models import build_model
from sightline.train.job import job_for
from sightline.workloads import workload_for
from sightline.workloads.identification import IdentityBatching

P, K = 4, 3
TINY_EMBEDDER = {"width": 4, "stages": 2, "embedding_dim": 8}


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    generate(root / "data" / "identity", SynthIdentity(identities=24, images_per_identity=7,
                                                       image_size=32, seed=2))  # fmt: skip
    return root


def settings_for(root: Path, **models: dict) -> Settings:
    return Settings(
        project_root=root,
        identity_data=IdentityData(root=Path("data/identity"), image_size=32, channels=3),
        identification=Identification(identities_per_batch=P, images_per_identity=K),
        models={family: dict(TINY_EMBEDDER) for family in ("triplet", "classifier_embed")} | models,
    )


def record_for(settings: Settings, family: str, extras: dict | None = None) -> ModelRecord:
    data = workload_for("identification").training_data(settings, family)
    return ModelRecord(
        family=family,
        task="embed",
        num_classes=data.num_classes,
        model_params=data.model_params,
        class_names=[],
        category_ids=[],
        run_id="run",
        model_uri="",
        tags={},
        extras=extras or {},
    )


def test_training_data_comes_from_the_identity_splits(faces_root: Path) -> None:
    settings = settings_for(faces_root)
    data = workload_for("identification").training_data(settings, "classifier_embed")
    _, splits = load_identity_splits(settings.identity_data, faces_root, 6)
    assert data.num_classes == len(splits.train) > 10  # classifier_embed's head
    assert data.class_names == [] and data.data_root == faces_root / "data" / "identity"
    assert data.model_params == {**TINY_EMBEDDER, "image_size": 32, "channels": 3}
    assert data.task_options == IdentityBatching(
        identities_per_batch=P,
        images_per_identity=K,
        min_unseen_images=6,  # max(enroll_k) templates + one query
    )


def test_model_input_size_must_agree_with_identity_data(faces_root: Path) -> None:
    settings = settings_for(faces_root, triplet={**TINY_EMBEDDER, "image_size": 64})
    with pytest.raises(SettingsError, match=r"models.triplet.image_size is 64.*identity_data"):
        workload_for("identification").training_data(settings, "triplet")


def test_the_embed_adapter_gives_p_by_k_batches_per_rank(faces_root: Path) -> None:
    settings = settings_for(faces_root)
    data = workload_for("identification").training_data(settings, "triplet")
    job = job_for(settings, data, family="triplet", run_id="run")
    adapter = workload_for("identification").train_adapter("embed")
    dataset = adapter.dataset(job)
    assert set(dataset.labels) == set(range(data.num_classes))
    model = build_model("triplet", data.num_classes, **data.model_params).train()

    seen: list[set[int]] = []
    for rank in (0, 1):
        loader = adapter.loader(job, dataset, adapter.collate, rank, 2)
        loader.batch_sampler.set_epoch(1)
        batches = list(loader)
        assert len(batches) == len(loader) == data.num_classes // P // 2
        identities: set[int] = set()
        for images, labels in batches:
            assert images.shape == (P * K, 3, 32, 32) and labels.dtype == torch.int64
            counts = np.unique(labels.numpy(), return_counts=True)[1]
            assert len(counts) == P and set(counts) == {K}
            identities |= set(labels.tolist())
        seen.append(identities)
        losses = adapter.losses(model, batches[0], torch.device("cpu"))
        assert set(losses) == {"loss_triplet"} and torch.isfinite(losses["loss_triplet"])
    assert not seen[0] & seen[1], "the two ranks train on different identities each epoch"


def test_gamma_is_calibrated_on_validation_pairs(faces_root: Path) -> None:
    settings = settings_for(faces_root)
    settings.identification.target_far = 0.05
    workload = workload_for("identification")
    model = build_model("pixel_template", 1, image_size=32, channels=3).eval()
    extras = workload.after_training(settings, model, record_for(settings, "pixel_template"))
    extras = extras.metadata()
    assert set(extras) == {"gamma", "target_far", "rule", "val_tar_at_gamma"}
    assert extras["target_far"] == 0.05 and extras["rule"] == "mean"
    assert 0 < extras["gamma"] < 2  # embeddings are L2-normalised: distances lie in [0, 2]
    assert 0 <= extras["val_tar_at_gamma"] <= 1


def test_evaluate_reports_the_design_metrics_per_k_and_the_figures(faces_root: Path) -> None:
    settings = settings_for(faces_root)
    workload = workload_for("identification")
    torch.manual_seed(0)
    record = record_for(settings, "triplet", {"gamma": 0.5})
    model = build_model("triplet", record.num_classes, **record.model_params).eval()

    result = workload.evaluate(settings, model, record, with_figures=True)
    metrics = result.metrics
    per_k = {f"{name}_k{k}" for name in ("top1", "dir_at_far_1e-2") for k in (1, 3, 5)}
    validation = {"val_top1", "val_dir_at_far_1e-2"}  # the validation people's: champion's
    assert set(METRIC_NAMES) | per_k | validation | {"far_at_gamma", "tar_at_gamma"} == set(metrics)
    assert (
        metrics["val_dir_at_far_1e-2"]
        == workload.validation_scores(settings, model, record)["dir_at_far_1e-2"]
    )
    assert metrics["top1"] == metrics["top1_k3"]  # identification.headline_k
    assert metrics["dir_at_far_1e-2"] == metrics["dir_at_far_1e-2_k3"]
    assert all(0.0 <= value <= 1.0 for value in metrics.values()), metrics
    assert set(result.figures) == {"roc.png", "det.png", "distances.png", "embeddings_2d.png"}
    assert set(workload.registry_metrics(metrics)) == set(METRIC_NAMES) | per_k | validation

    again = workload.evaluate(settings, model, record, with_figures=False)
    assert again.metrics == metrics and again.figures == {}


def test_eval_scope_names_the_validation_images_and_rule(faces_root: Path) -> None:
    settings = settings_for(faces_root)
    workload = workload_for("identification")
    record = record_for(settings, "triplet")
    scope = workload.eval_scope(settings, record)
    assert scope.startswith("val-identities:") and scope.endswith(":k=3:rule=mean")
    settings.identification.rule = "min"
    assert workload.eval_scope(settings, record) != scope
    settings.identification.rule = "mean"
    settings.identity_data.split_seed = 1  # other validation people
    assert workload.eval_scope(settings, record).split(":")[1] != scope.split(":")[1]


def test_pair_metrics_sample_whole_people_beyond_the_image_limit(monkeypatch) -> None:
    from sightline.workloads import identification

    monkeypatch.setattr(identification, "MAX_PAIR_IMAGES", 50)
    labels = np.repeat(np.arange(30), 4)  # 120 images of 30 people
    embeddings = np.random.default_rng(0).normal(size=(120, 3)).astype(np.float32)
    genuine, impostor = identification.pair_distances_of_people(embeddings, labels, seed=0)
    people = 50 // 4  # 12 whole people fit
    assert len(genuine) == people * 6  # all 4-choose-2 genuine pairs of each kept person
    assert len(genuine) + len(impostor) == (people * 4) * (people * 4 - 1) // 2
