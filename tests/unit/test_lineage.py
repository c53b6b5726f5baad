from __future__ import annotations

import subprocess
from pathlib import Path

from sightline.track.lineage import UNKNOWN, dvc_data_hash, git_commit


def test_dvc_hash_comes_from_the_dvc_file_of_the_tracked_ancestor(tmp_path: Path) -> None:
    (tmp_path / "data" / "detection").mkdir(parents=True)
    (tmp_path / "data.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n"
    )
    assert (
        dvc_data_hash(tmp_path, tmp_path / "data" / "detection")
        == "0123456789abcdef0123456789abcdef.dir"
    )


def test_untracked_data_is_reported_as_unknown(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    assert dvc_data_hash(tmp_path, tmp_path / "elsewhere") == UNKNOWN


def test_data_outside_the_project_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "faces" / "ada").mkdir(parents=True)  # e.g. identity_data.root: /data/faces
    assert dvc_data_hash(tmp_path / "project", tmp_path / "faces") == UNKNOWN


def test_git_commit_marks_uncommitted_changes(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == UNKNOWN
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run(["git", "add", "f.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=tmp_path, check=True)
    clean = git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "f.txt").write_text("b")
    assert git_commit(tmp_path) == f"{clean}-dirty"
