"""The identification gallery: durable, concurrent-safe, γ-rejecting (DESIGN.md Identification)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sightline.gallery.store import (
    Gallery,
    GalleryError,
    ModelVersionMismatch,
    UnknownIdentityError,
)

DIM = 4


def _image(value: int, shape: tuple[int, ...] = (6, 5, 3)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def _vectors(*rows: list[float]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture
def gallery(tmp_path: Path) -> Gallery:
    """alice near e0 (two templates), bob near e1, carol near e2."""
    store = Gallery(tmp_path / "gallery.db")
    store.enroll("alice", [_image(1), _image(2)], _vectors([1, 0, 0, 0], [0.8, 0.2, 0, 0]), "v1")
    store.enroll("bob", [_image(3)], _vectors([0, 1, 0, 0]), "v1")
    store.enroll("carol", [_image(4, (7, 7))], _vectors([0, 0, 1, 0]), "v1")
    yield store
    store.close()


def test_identify_returns_the_identity_with_the_smallest_mean_distance(gallery: Gallery) -> None:
    match = gallery.identify(np.array([0.9, 0.1, 0, 0]), gamma=0.5)
    assert match.identity == "alice"
    # Mean of the distances to alice's two templates: sqrt(0.02) and sqrt(0.02).
    assert match.distance == pytest.approx(np.sqrt(0.02), abs=1e-6)
    assert [name for name, _ in match.candidates] == ["alice", "bob", "carol"]
    assert match.model_version == "v1" and match.rule == "mean"


def test_a_distance_not_below_gamma_is_unknown(gallery: Gallery) -> None:
    far_away = np.array([0, 0, 0, 1.0])
    match = gallery.identify(far_away, gamma=1.0)
    assert match.identity is None
    # alice is nearest (mean of sqrt(2) and sqrt(1.68)) and reported, just not accepted.
    assert match.candidates[0][0] == "alice"
    assert match.distance == pytest.approx((np.sqrt(2.0) + np.sqrt(1.68)) / 2, abs=1e-6)
    # Exactly at γ is rejected too ("not below γ").
    at_gamma = gallery.identify(np.array([0, 1.0, 0.5, 0]), gamma=0.5)
    assert at_gamma.candidates[0] == ("bob", 0.5) and at_gamma.identity is None


def test_mean_and_min_rules_can_disagree(tmp_path: Path) -> None:
    # dora has one template right next to the query and one far away; erin has two at 0.3.
    with Gallery(tmp_path / "g.db") as store:
        store.enroll("dora", [_image(1), _image(2)], _vectors([0.05, 0], [2.0, 0]), "v1")
        store.enroll("erin", [_image(3), _image(4)], _vectors([0, 0.3], [0, -0.3]), "v1")
        query = np.zeros(2)
        by_mean = store.identify(query, gamma=5.0, rule="mean")
        by_min = store.identify(query, gamma=5.0, rule="min")
    assert (by_mean.identity, by_mean.distance) == ("erin", pytest.approx(0.3))
    assert (by_min.identity, by_min.distance) == ("dora", pytest.approx(0.05))


def test_mean_rule_is_exact_beyond_the_first_search_window(tmp_path: Path) -> None:
    # 100 decoys each own one template at distance 1.0 and one at 3.0 (mean 2.0); the answer
    # owns two templates at 1.5 (mean 1.5), so it is not among the 64 nearest templates.
    rng = np.random.default_rng(0)
    with Gallery(tmp_path / "g.db") as store:
        entries = []
        for i in range(100):
            direction = rng.normal(size=8)
            direction /= np.linalg.norm(direction)
            entries.append(
                (f"decoy{i}", [_image(i), _image(i)], np.stack([direction, 3 * direction]))
            )
        store.enroll_many(entries, "v1")
        axis = np.eye(8, dtype=np.float32)[0]
        store.enroll("answer", [_image(0), _image(1)], np.stack([1.5 * axis, -1.5 * axis]), "v1")
        match = store.identify(np.zeros(8), gamma=10.0, k=3)
    assert match.identity == "answer"
    assert match.distance == pytest.approx(1.5)
    assert [d for _, d in match.candidates[1:]] == pytest.approx([2.0, 2.0])


def test_verify_accepts_the_right_person_only(gallery: Gallery) -> None:
    query = np.array([0.9, 0.1, 0, 0])
    accepted = gallery.verify("alice", query, gamma=0.5)
    rejected = gallery.verify("bob", query, gamma=0.5)
    assert accepted.accepted and accepted.distance == pytest.approx(np.sqrt(0.02), abs=1e-6)
    assert not rejected.accepted and rejected.distance > 0.5
    with pytest.raises(UnknownIdentityError, match="'zoe' is not enrolled"):
        gallery.verify("zoe", query, gamma=0.5)


def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    images = [_image(10, (3, 4)), np.arange(12, dtype=np.uint8).reshape(3, 4)]
    query = np.array([0.1, 0.9])
    with Gallery(path) as store:
        store.enroll("alice", images, _vectors([0, 1], [0.2, 0.8]), "v7")
        store.enroll("bob", [_image(5)], _vectors([1, 0]), "v7")
        before = store.identify(query, gamma=1.0)
    with Gallery(path) as reopened:
        assert reopened.identities() == ["alice", "bob"]
        assert (reopened.identity_count, reopened.template_count) == (2, 3)
        assert (reopened.model_version, reopened.embedding_dim) == ("v7", 2)
        assert reopened.identify(query, gamma=1.0) == before
        stored = reopened.template_images("alice")
    assert len(stored) == 2
    for original, restored in zip(images, stored, strict=True):
        np.testing.assert_array_equal(original, restored)
    # The store is plain SQLite in WAL mode.
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_enrolling_more_templates_adds_to_the_identity(gallery: Gallery) -> None:
    total = gallery.enroll("bob", [_image(9)], _vectors([0, 0.9, 0.1, 0]), "v1")
    assert total == 2
    assert (gallery.identity_count, gallery.template_count) == (3, 5)


def test_delete_removes_the_identity_from_search_and_disk(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    with Gallery(path) as store:
        store.enroll("alice", [_image(1), _image(2)], _vectors([1, 0], [1, 0.1]), "v1")
        store.enroll("bob", [_image(3)], _vectors([0, 1]), "v1")
        assert store.delete("alice") == 2
        assert "alice" not in store and store.template_count == 1
        assert store.identify(np.array([1.0, 0]), gamma=10.0).identity == "bob"
        with pytest.raises(UnknownIdentityError):
            store.delete("alice")
    with Gallery(path) as reopened:
        assert reopened.identities() == ["bob"]


def test_empty_gallery_answers_unknown(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as store:
        match = store.identify(np.zeros(3), gamma=1.0)
    assert match.identity is None and match.distance == float("inf") and match.candidates == []


@pytest.mark.parametrize(
    ("identity", "images", "embeddings", "message"),
    [
        ("", [_image(1)], _vectors([1, 0, 0, 0]), "non-empty string"),
        ("x" * 300, [_image(1)], _vectors([1, 0, 0, 0]), "at most 200"),
        (" bob", [_image(1)], _vectors([1, 0, 0, 0]), "leading or trailing white space"),
        ("a\nb", [_image(1)], _vectors([1, 0, 0, 0]), "printable"),
        ("dave", [], np.zeros((0, DIM)), "at least one template image"),
        ("dave", [_image(1)], _vectors([1, 0, 0, 0], [0, 1, 0, 0]), "1 images but 2 embeddings"),
        ("dave", [_image(1)], _vectors([np.nan, 0, 0, 0]), "NaN"),
        ("dave", [np.zeros((4, 4), dtype=np.float32)], _vectors([1, 0, 0, 0]), "uint8"),
        ("dave", [np.zeros((4, 4, 2), dtype=np.uint8)], _vectors([1, 0, 0, 0]), r"images\[0\]"),
        ("dave", [_image(1)], _vectors([1, 0, 0]), "3 values"),
    ],
)
def test_bad_enrollments_are_refused_and_nothing_stored_is_lost(
    gallery: Gallery, identity: str, images: list, embeddings: np.ndarray, message: str
) -> None:
    with pytest.raises(GalleryError, match=message):
        gallery.enroll(identity, images, embeddings, "v1")
    assert (gallery.identity_count, gallery.template_count) == (3, 4)
    assert gallery.identify(np.array([1.0, 0, 0, 0]), gamma=0.5).identity == "alice"


def test_enroll_many_is_all_or_nothing(gallery: Gallery) -> None:
    good = ("dave", [_image(1)], _vectors([0, 0, 0, 1]))
    bad = ("erin", [_image(2)], _vectors([0, 0, 1]))  # wrong size
    with pytest.raises(GalleryError):
        gallery.enroll_many([good, bad], "v1")
    assert "dave" not in gallery and gallery.template_count == 4


def test_bad_queries_name_the_problem(gallery: Gallery) -> None:
    with pytest.raises(GalleryError, match=r"shape \(4,\)"):
        gallery.identify(np.zeros(3), gamma=1.0)
    with pytest.raises(GalleryError, match="NaN"):
        gallery.identify(np.full(4, np.nan), gamma=1.0)
    with pytest.raises(GalleryError, match="gamma must be > 0"):
        gallery.identify(np.zeros(4), gamma=0.0)
    with pytest.raises(GalleryError, match="unknown rule 'median'"):
        gallery.identify(np.zeros(4), gamma=1.0, rule="median")  # type: ignore[arg-type]


def test_other_model_versions_need_a_reembed_first(gallery: Gallery) -> None:
    with pytest.raises(ModelVersionMismatch, match="'v1', not 'v2'"):
        gallery.enroll("dave", [_image(1)], _vectors([0, 0, 0, 1]), "v2")
    assert gallery.template_count == 4


def test_reembed_recomputes_every_template_from_its_stored_image(gallery: Gallery) -> None:
    def embed_by_brightness(images: list[np.ndarray]) -> np.ndarray:
        # A "new model" with 2-D embeddings: (mean brightness / 10, 1).
        return np.array([[image.mean() / 10.0, 1.0] for image in images], dtype=np.float32)

    assert gallery.reembed(embed_by_brightness, "v2", batch_size=2) == 4
    assert (gallery.model_version, gallery.embedding_dim) == ("v2", 2)
    assert [v for v, _, _ in gallery.model_versions()] == ["v1", "v2"]
    # carol's template image has brightness 4 -> (0.4, 1).
    match = gallery.identify(np.array([0.41, 1.0]), gamma=0.05)
    assert match.identity == "carol"
    gallery.enroll("dave", [_image(8)], _vectors([0.8, 1.0]), "v2")
    assert gallery.template_count == 5


def test_templates_enrolled_during_a_reembed_are_reembedded_too(gallery: Gallery) -> None:
    calls: list[int] = []

    def embed_and_meanwhile_enroll(images: list[np.ndarray]) -> np.ndarray:
        if not calls:  # another client enrolls, with the old model, while we work
            gallery.enroll("dave", [_image(50)], _vectors([0, 0, 0, 1]), "v1")
        calls.append(len(images))
        return np.array([[image.mean(), 0.0] for image in images], dtype=np.float32)

    assert gallery.reembed(embed_and_meanwhile_enroll, "v2") == 5
    assert calls == [4, 1]
    assert gallery.identify(np.array([50.0, 0.0]), gamma=0.5).identity == "dave"


def test_a_failing_reembed_changes_nothing(gallery: Gallery) -> None:
    def broken(images: list[np.ndarray]) -> np.ndarray:
        return np.zeros((len(images) + 1, 2), dtype=np.float32)

    with pytest.raises(GalleryError, match="embed_fn returned shape"):
        gallery.reembed(broken, "v2")
    assert (gallery.model_version, gallery.embedding_dim) == ("v1", DIM)
    assert gallery.identify(np.array([1.0, 0, 0, 0]), gamma=0.5).identity == "alice"


def test_concurrent_enroll_delete_and_identify_from_threads(tmp_path: Path) -> None:
    store = Gallery(tmp_path / "gallery.db")
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(41, 16)).astype(np.float32)
    resident = anchors[40]  # a vector of its own: no p{i} ties with it
    store.enroll("resident", [_image(0)], resident[None], "v1")
    errors: list[BaseException] = []

    def enroller(worker: int) -> None:
        try:
            for i in range(worker, 40, 4):
                store.enroll(f"p{i}", [_image(i), _image(i + 1)], np.stack([anchors[i]] * 2), "v1")
                if i % 8 == worker:
                    store.delete(f"p{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def identifier() -> None:
        try:
            for _ in range(60):
                match = store.identify(resident, gamma=1e-3)
                assert match.identity == "resident"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enroller, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=identifier) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    deleted = {f"p{i}" for i in range(40) if i % 8 == i % 4}
    expected = {f"p{i}" for i in range(40)} - deleted | {"resident"}
    assert set(store.identities()) == expected
    assert store.template_count == 1 + 2 * (len(expected) - 1)
    store.close()
    with Gallery(tmp_path / "gallery.db") as reopened:
        assert set(reopened.identities()) == expected


def test_a_second_process_view_sees_writes_of_the_first(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    with Gallery(path) as writer, Gallery(path) as reader:
        writer.enroll("alice", [_image(1)], _vectors([1, 0]), "v1")
        assert reader.identify(np.array([1.0, 0]), gamma=0.1).identity == "alice"
        reader.enroll("bob", [_image(2)], _vectors([0, 1]), "v1")
        writer.delete("alice")
        assert reader.identities() == ["bob"]
        assert writer.identify(np.array([0, 1.0]), gamma=0.1).identity == "bob"


def test_ten_thousand_identities_stay_fast(tmp_path: Path) -> None:
    """10k identities x 2 templates: bulk enroll, reopen (index rebuild) and search timings."""
    rng = np.random.default_rng(0)
    count, dim = 10_000, 64
    centres = rng.normal(size=(count, dim)).astype(np.float32)
    tiny = np.zeros((2, 2), dtype=np.uint8)
    entries = [
        (f"id{i:05d}", [tiny, tiny], centres[i] + 0.01 * rng.normal(size=(2, dim)))
        for i in range(count)
    ]
    path = tmp_path / "big.db"
    started = time.perf_counter()
    with Gallery(path) as store:
        store.enroll_many(entries, "v1")
    enrolled = time.perf_counter()
    with Gallery(path) as store:
        opened = time.perf_counter()
        queries = rng.integers(count, size=50)
        for rule in ("mean", "min"):
            t0 = time.perf_counter()
            for i in queries:
                assert store.identify(centres[i], gamma=1.0, rule=rule).identity == f"id{i:05d}"
            per_query = (time.perf_counter() - t0) / len(queries)
            print(f"10k identities: {rule} identify {per_query * 1e3:.2f} ms/query")
            assert per_query < 0.1  # brute-force faiss over 20k vectors is ~1 ms
        t0 = time.perf_counter()
        assert store.identify(rng.normal(size=dim) * 10, gamma=0.5).identity is None
        print(f"10k identities: impostor (mean rule) {(time.perf_counter() - t0) * 1e3:.2f} ms")
    print(
        f"10k identities: enroll_many {enrolled - started:.2f} s, "
        f"reopen + index rebuild {opened - enrolled:.2f} s"
    )
