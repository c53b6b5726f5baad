"""A throwaway copy of the project as a git + DVC repo, for tests that run real `dvc repro`:
the code folders and dvc.yaml copied in, data written by the test, then `git init`, `dvc init`
and `dvc add data`; commands run with this venv's tools, the test's Ray and its own MLflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

# What dvc.yaml's stages depend on, copied so the temp project is a self-contained repo.
PROJECT_FILES = ["dvc.yaml", ".dvcignore"]
PROJECT_DIRS = ["platform", "models", "pipelines", "bench"]
BIN_DIR = str(Path(sys.executable).parent)


def run_command(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def copy_project_code(root: Path) -> None:
    for name in PROJECT_FILES:
        shutil.copy(REPO_ROOT / name, root / name)
    for name in PROJECT_DIRS:
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))


def project_env(root: Path, ray_address: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN_DIR}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RAY_ADDRESS": ray_address,
        "DVC_NO_ANALYTICS": "1",
    }


def init_repo(root: Path, env: dict[str, str]) -> None:
    """git + DVC over the copied code and the data the test wrote under root/data."""
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for cmd in (
        ["git", "init", "-q"],
        [*git, "commit", "-q", "--allow-empty", "-m", "init"],
        [f"{BIN_DIR}/dvc", "init", "-q"],
        [f"{BIN_DIR}/dvc", "add", "-q", "data"],
    ):
        done = run_command(cmd, root, env)
        assert done.returncode == 0, done.stderr
