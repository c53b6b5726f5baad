"""bench/small_faces.py's parts: the scratch projects and the report's pick (the benchmark
trains every embedder several times: it is run by hand)."""

from __future__ import annotations

from pathlib import Path

from sightline.config import load_settings
from tests.bench_scripts import bench_fixture

small_faces = bench_fixture("small_faces")


def test_a_scratch_project_is_the_projects_params_with_the_overrides(
    small_faces, tmp_path: Path
) -> None:
    project = load_settings(Path("params.yaml"))
    overrides = small_faces.deep_merge(small_faces.GREY, {"synth": {"identity": {"seed": 7}}})
    scratch = load_settings(small_faces.project(project, tmp_path / "p", overrides))
    assert scratch.identity_data.channels == 1
    assert scratch.synth.identity.seed == 7
    assert scratch.models["triplet"]["mining"] == "semi_hard"
    assert scratch.identification.families == project.identification.families


def test_the_family_is_picked_on_the_validation_people_not_the_test_people(small_faces) -> None:
    def run(val: float, test: float) -> dict[str, float]:
        return {"val_dir_at_far_1e-2": val, "val_top1": val, "top1": test,
                "dir_at_far_1e-2": test, "roc_auc": 0.5}  # fmt: skip

    scores = {
        ("pixel_template", small_faces.SCRATCH): [run(0.1, 0.05)],
        ("triplet", small_faces.SCRATCH): [run(0.2, 0.9), run(0.2, 0.7)],
        ("triplet", small_faces.PRETRAINED): [run(0.6, 0.3), run(0.4, 0.1)],
        ("triplet", small_faces.NOT_FINE_TUNED): [{"top1": 0.95, "dir_at_far_1e-2": 0.95}],
    }
    context = {"when": "2026-12-02", "minutes": 9, "project_seed": 0, "pretrain_people": 600,
               "split": "val 0.1"}  # fmt: skip
    text = small_faces.markdown(scores, [1, 2], context)
    assert "**triplet (pretrained, fine-tuned)**, val dir_at_far_1e-2 0.500" in text
    assert "| triplet | from scratch | 0.200 (0.200-0.200) |" in text
    assert "| triplet | pretrained only | n/a | n/a | 0.950 | 0.950 | n/a |" in text
