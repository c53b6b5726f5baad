"""Identity folders, identity splits, P x K batches and the synthetic face generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from sightline.data.errors import DatasetError
from sightline.data.identity import (
    IdentityBatchSampler,
    IdentityDataset,
    IdentityRecord,
    face_from_array,
    identities_of,
    read_identity_folders,
    split_by_identity,
)
from sightline.data.synth.identity import (
    SynthIdentity,
    generate,
    identity_traits,
    render_identity_image,
)

from .conftest import ImageWriter

TINY_FACES = SynthIdentity(identities=6, images_per_identity=3, image_size=32, seed=5)


@pytest.fixture
def mixed_folders(tmp_path: Path, write_image: ImageWriter) -> Path:
    """Two people, images in several formats, modes and sizes, plus files to ignore."""
    root = tmp_path / "faces"
    write_image(root / "alice" / "a.png", 40, 30)
    write_image(root / "alice" / "b.JPG", 20, 50, mode="L")
    write_image(root / "alice" / "c.png", 16, 16, mode="I;16")
    write_image(root / "bob" / "1.bmp", 12, 12)
    write_image(root / "bob" / "2.webp", 64, 64, mode="RGBA")
    (root / "bob" / "notes.txt").write_text("not an image")
    (root / "bob" / ".DS_Store").write_bytes(b"\0")
    (root / "README.md").write_text("people")
    return root


def test_reader_lists_every_image_per_identity_in_order(mixed_folders: Path) -> None:
    records = read_identity_folders(mixed_folders)
    assert [(r.identity, r.path.name) for r in records] == [
        ("alice", "a.png"),
        ("alice", "b.JPG"),
        ("alice", "c.png"),
        ("bob", "1.bmp"),
        ("bob", "2.webp"),
    ]
    assert identities_of(records) == ["alice", "bob"]


@pytest.mark.parametrize("channels", [1, 3])
def test_dataset_gives_fixed_size_images_and_identity_indices(
    mixed_folders: Path, channels: int
) -> None:
    dataset = IdentityDataset(
        read_identity_folders(mixed_folders), image_size=24, channels=channels
    )
    assert len(dataset) == 5 and dataset.identity_index == {"alice": 0, "bob": 1}
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (channels, 24, 24) and image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert label == (0 if index < 3 else 1)


def test_dataset_uses_a_given_identity_index(mixed_folders: Path) -> None:
    records = read_identity_folders(mixed_folders)
    dataset = IdentityDataset(records, image_size=8, identity_index={"bob": 0, "alice": 7})
    assert dataset.labels == [7, 7, 7, 0, 0]
    with pytest.raises(DatasetError, match="identities without an index"):
        IdentityDataset(records, image_size=8, identity_index={"bob": 0})


def test_arrays_and_files_become_the_same_model_input(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    path = write_image(tmp_path / "p" / "x.png", 30, 20)
    from_file, _ = IdentityDataset(read_identity_folders(tmp_path), image_size=16)[0]
    pixels = np.asarray(Image.open(path))
    assert torch.allclose(face_from_array(pixels, 16, 3), from_file, atol=1e-6)
    grey = face_from_array(np.full((5, 7), 255, dtype=np.uint8), 8, 1)
    assert grey.shape == (1, 8, 8) and torch.allclose(grey, torch.ones(1, 8, 8), atol=1e-6)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    assert face_from_array(rgba, 4, 3).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="uint8"):
        face_from_array(np.zeros((4, 4), dtype=np.float32), 4, 3)


def test_unreadable_image_names_the_file_and_identity(tmp_path: Path) -> None:
    broken = tmp_path / "faces" / "carol" / "x.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a png")
    dataset = IdentityDataset(read_identity_folders(tmp_path / "faces"), image_size=8)
    with pytest.raises(DatasetError, match=r"x\.png: identity 'carol': unreadable image"):
        dataset[0]


def test_layout_errors_name_the_file_or_identity(tmp_path: Path, write_image: ImageWriter) -> None:
    with pytest.raises(DatasetError, match="identity dataset folder not found"):
        read_identity_folders(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no identity folders"):
        read_identity_folders(tmp_path / "empty")
    loose = tmp_path / "loose"
    write_image(loose / "dave" / "1.png", 8, 8)
    write_image(loose / "stray.png", 8, 8)
    with pytest.raises(DatasetError, match=r"stray\.png: image lies directly in the dataset"):
        read_identity_folders(loose)
    no_images = tmp_path / "no_images"
    write_image(no_images / "erin" / "1.png", 8, 8)
    (no_images / "frank").mkdir()
    (no_images / "frank" / "notes.txt").write_text("x")
    with pytest.raises(
        DatasetError, match=r"frank: identity folder holds no images \(expected \.bmp, "
    ):
        read_identity_folders(no_images)


def _records(images_per_identity: dict[str, int]) -> list[IdentityRecord]:
    return [
        IdentityRecord(Path(f"{name}/{i}.png"), name)
        for name, count in images_per_identity.items()
        for i in range(count)
    ]


def test_identity_splits_are_disjoint_complete_and_deterministic() -> None:
    records = _records({f"p{i:02d}": 4 for i in range(20)})
    splits = split_by_identity(
        records, val_fraction=0.1, unseen_fraction=0.2, impostor_fraction=0.1, seed=3
    )
    groups = [splits.train, splits.val, splits.unseen, splits.impostor]
    assert [len(g) for g in groups] == [12, 2, 4, 2]
    assert sorted(name for group in groups for name in group) == identities_of(records)
    assert split_by_identity(records, seed=3) == splits
    assert split_by_identity(records, seed=4) != splits
    unseen_records = splits.records(records, "unseen")
    assert {r.identity for r in unseen_records} == set(splits.unseen)
    with pytest.raises(ValueError, match="unknown identity split 'test'"):
        splits.records(records, "test")


def test_unseen_identities_have_enough_images_to_enroll_and_query() -> None:
    counts = {f"few{i}": 1 for i in range(6)} | {f"many{i}": 5 for i in range(4)}
    splits = split_by_identity(_records(counts), unseen_fraction=0.2, min_unseen_images=4, seed=0)
    assert all(name.startswith("many") for name in splits.unseen)
    with pytest.raises(DatasetError, match="only 4 identities have the 5 images"):
        split_by_identity(_records(counts), unseen_fraction=0.5, min_unseen_images=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 1.2}, "val_fraction must be in"),
        ({"val_fraction": 0.5, "unseen_fraction": 0.5}, "must leave identities to train on"),
    ],
)
def test_bad_split_fractions_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_by_identity(_records({"a": 2, "b": 2}), **kwargs)


def test_too_few_identities_for_the_splits() -> None:
    with pytest.raises(DatasetError, match="3 identities are too few"):
        split_by_identity(_records({"a": 2, "b": 2, "c": 2}))


def test_batch_sampler_gives_p_identities_with_k_images_each() -> None:
    labels = [i // 5 for i in range(50)] + [99]  # 10 identities x 5 images + a singleton
    sampler = IdentityBatchSampler(labels, identities_per_batch=4, images_per_identity=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    for batch in batches:
        batch_labels = [labels[i] for i in batch]
        assert len(batch) == 12 and len(set(batch)) == 12
        assert sorted(np.bincount(batch_labels).tolist(), reverse=True)[:4] == [3, 3, 3, 3]
        assert 99 not in batch_labels  # no positive for it
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_batch_sampler_shards_batches_across_ranks() -> None:
    labels = [i // 4 for i in range(64)]  # 16 identities
    shards = [
        list(
            IdentityBatchSampler(
                labels, identities_per_batch=2, images_per_identity=2, num_replicas=2, rank=r
            )
        )
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 4
    first, second = ({labels[i] for b in s for i in b} for s in shards)
    assert not first & second


def test_batch_sampler_refuses_impossible_batches() -> None:
    with pytest.raises(DatasetError, match="2 identities have two or more images"):
        IdentityBatchSampler([0, 0, 1, 1, 2], identities_per_batch=3, images_per_identity=2)
    with pytest.raises(ValueError, match="at least 2 identities and 2 images"):
        IdentityBatchSampler([0, 0, 1, 1], identities_per_batch=2, images_per_identity=1)


def test_synth_writes_one_folder_per_identity_and_is_byte_identical(tmp_path: Path) -> None:
    assert generate(tmp_path / "a", TINY_FACES) == {"identities": 6, "images": 18}
    generate(tmp_path / "b", TINY_FACES)
    records = read_identity_folders(tmp_path / "a")
    assert len(records) == 18 and identities_of(records)[0] == "person_00000"
    assert records[0].path.name == "000.png"
    for record in records:
        twin = tmp_path / "b" / record.identity / record.path.name
        assert twin.read_bytes() == record.path.read_bytes()
    image, label = IdentityDataset(records, image_size=32)[4]
    assert image.shape == (3, 32, 32) and label == 1


def test_synth_regeneration_removes_stale_identities(tmp_path: Path) -> None:
    generate(tmp_path, TINY_FACES)
    (tmp_path / "mine").mkdir()  # not the generator's: left alone
    generate(tmp_path, TINY_FACES.model_copy(update={"identities": 2, "images_per_identity": 2}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "person_00000", "person_00001"]
    assert len(list((tmp_path / "person_00000").glob("*.png"))) == 2


def test_synth_identity_is_fixed_and_nuisances_vary() -> None:
    first = identity_traits(np.random.default_rng([5, 0]))
    assert identity_traits(np.random.default_rng([5, 0])) == first
    assert identity_traits(np.random.default_rng([5, 1])) != first
    views = [render_identity_image(TINY_FACES, 0, i) for i in range(3)]
    assert all(v.shape == (32, 32, 3) and v.dtype == np.uint8 for v in views)
    assert not np.array_equal(views[0], views[1])
    # Adding images or identities never changes existing ones.
    bigger = TINY_FACES.model_copy(update={"identities": 50, "images_per_identity": 9})
    np.testing.assert_array_equal(render_identity_image(bigger, 0, 1), views[1])


@pytest.mark.parametrize("bad", [{"identities": 1}, {"image_size": 16}, {"seed": -1}, {"faces": 3}])
def test_synth_config_is_checked(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        SynthIdentity(**bad)
