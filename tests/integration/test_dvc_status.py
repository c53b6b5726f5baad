"""A parameter that changes what a stage produces makes real DVC call that stage changed.

A scratch project holds the real dvc.yaml and params.yaml; every dependency and output of the
stages under test is a placeholder (DVC hashes a placeholder as it would the real thing) and
`dvc commit` records their lock entries, as a finished `dvc repro` would. Then one family's
epochs change in params.yaml, and `dvc status` must name that family's train stage only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.stage import PipelineStage

from tests.conftest import REPO_ROOT

EDITED = "train@mask_rcnn"
# The same family's next stage and another group's train stage read other keys.
UNRELATED = ("evaluate@mask_rcnn", "train_otdr@otdr_detector")
STAGES = (EDITED, *UNRELATED)


def dvc(root: Path, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=root,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def status(root: Path) -> dict:
    return json.loads(dvc(root, "status", "--json", *STAGES) or "{}")


def commit_placeholders(root: Path, stage_names: tuple[str, ...]) -> None:
    """A placeholder for every dependency and output of the stages that does not exist yet,
    then `dvc commit` of their lock entries: DVC then calls them up to date."""
    with Repo(str(root)) as repo:
        chosen = [
            stage
            for stage in repo.index.stages
            if isinstance(stage, PipelineStage) and stage.name in stage_names
        ]
        paths = {
            item.def_path
            for stage in chosen
            for item in [*stage.deps, *stage.outs]
            if not isinstance(item, ParamsDependency)
        }
    assert len(chosen) == len(stage_names), [stage.name for stage in chosen]
    for path in sorted(paths):
        target = root / path
        if target.exists():
            continue
        if any(other.startswith(f"{path}/") for other in paths):
            target.mkdir(parents=True, exist_ok=True)  # it holds another placeholder
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"placeholder for {path}\n")
    dvc(root, "commit", "--force", "--quiet", *stage_names)


@pytest.fixture
def committed_project(tmp_path: Path) -> Path:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    dvc(tmp_path, "init", "--no-scm", "-q")
    commit_placeholders(tmp_path, STAGES)
    return tmp_path


def test_a_family_epochs_change_marks_its_train_stage_changed(committed_project: Path) -> None:
    root = committed_project
    assert status(root) == {}, "just committed: every stage should be up to date"

    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    overrides = params["detection"]["family_train"]["mask_rcnn"]
    overrides["epochs"] = overrides.get("epochs", params["train"]["epochs"]) + 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    changed = status(root)
    assert set(changed) == {EDITED}, changed
    assert {"changed deps": {"params.yaml": {"detection.family_train": "modified"}}} in changed[
        EDITED
    ]


def test_only_the_selected_profile_is_a_dependency(committed_project: Path) -> None:
    """The selected profile's block may override any section: editing it changes every stage.
    Another profile's block is not read: editing it changes none (and dvc.lock holds only the
    selected block, not every profile copied into every stage)."""
    root = committed_project
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    selected, other = params["profile"], next(p for p in params["profiles"] if p != "demo")
    assert selected == "demo"

    params["profiles"][other]["train"]["epochs"] += 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert status(root) == {}, f"profiles.{other} is not selected: no stage reads it"

    params["profiles"][selected] = {"train": {"epochs": params["train"]["epochs"] + 1}}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(status(root)) == set(STAGES)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    tracked = {key for entry in lock["stages"].values() for key in entry["params"]["params.yaml"]}
    assert f"profiles.{selected}" in tracked and "profiles" not in tracked, sorted(tracked)
