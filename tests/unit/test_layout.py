"""The package layout of DESIGN.md: three code folders mounted as one `sightline` import root."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.conftest import REPO_ROOT


def test_stdlib_platform_is_not_shadowed_from_repo_root() -> None:
    # A `platform/__init__.py` would make `import platform` pick our folder and break torch/ray.
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import platform, torch; print(platform.system())"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}


def test_every_code_package_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    data_only = set(setuptools["package-data"])  # folders of files, no __init__.py
    mounts = {
        "platform": "sightline",
        "models": "sightline.models",
        "pipelines": "sightline.pipelines",
    }
    found = {"sightline"}
    for folder, root in mounts.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder).parts
            found.add(".".join((root, *rel)))
    assert found | data_only == listed


def test_models_import_nothing_of_the_platform() -> None:
    offenders = []
    for path in (REPO_ROOT / "models").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(
                ("import sightline", "from sightline")
            ) and not stripped.startswith(("from sightline.models", "import sightline.models")):
                offenders.append(f"{path.name}: {stripped}")
    assert not offenders


def test_nothing_imports_pipelines() -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("platform", "models")
        for path in (REPO_ROOT / folder).rglob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith(("import sightline.pipelines", "from sightline.pipelines"))
    ]
    assert not offenders
