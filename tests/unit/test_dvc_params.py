"""dvc.yaml's params of every stage are exactly the params.yaml keys the stage's code reads.

The code declares them, next to what reads them: each workload's `stage_params` (validate,
train, evaluate, register of its group), `STAGE_PARAMS` in pipelines/proposals.py and
pipelines/tune.py, and in each bench/*.py script. Which declaration a stage answers to follows
from its `cmd` (the module or script it runs, its --family / --group), so a new stage needs no
entry here. Stages are read through DVC's own index (foreach and ${} expanded as `dvc repro`
sees them).
"""

from __future__ import annotations

import ast
import importlib
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.stage import PipelineStage

from sightline.workloads import all_workloads, workload_for, workload_of_family
from tests.conftest import REPO_ROOT

# Every stage reads params.yaml through load_settings, where the selected profile's block may
# override any section: so every stage depends on `profile` and on that block (the demo's too).
SELECTED_PROFILE = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["profile"]
SETTINGS_PARAMS = frozenset({"profile", f"profiles.{SELECTED_PROFILE}"})
# Stage modules whose keys come from the workload of the stage's family (or --group).
WORKLOAD_STAGES = ("validate", "train", "evaluate", "register")


def literal_constant(path: Path, name: str) -> Any:
    """A module-level literal of a script, read without running its imports."""
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path}: no literal {name} (the params.yaml keys it reads)")


def declaration(cmd: str) -> tuple[str, set[str]]:
    """Where the code of a stage's `cmd` declares the params.yaml keys it reads, and the keys."""
    argv = shlex.split(cmd)
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    family = options.get("--family")
    if argv[:2] == ["python", "-m"] and argv[2].startswith("sightline.pipelines."):
        module = argv[2].removeprefix("sightline.pipelines.")
        if module == "validate":
            assert "--group" in options, f"{cmd!r}: name the group it validates (--group)"
            workload = workload_for(options["--group"])
        elif module in WORKLOAD_STAGES:
            workload = workload_of_family(family)
        else:
            return argv[2], expand(importlib.import_module(argv[2]).STAGE_PARAMS, family)
        return f"{workload.name}:{module}", expand(workload.stage_params[module], family)
    if argv[0] == "python" and argv[1].startswith("bench/"):
        return argv[1], expand(literal_constant(REPO_ROOT / argv[1], "STAGE_PARAMS"), family)
    raise AssertionError(f"{cmd!r}: not a sightline stage module or bench script")


def expand(keys: tuple[str, ...], family: str | None) -> set[str]:
    return {key.format(family=family) for key in keys} | SETTINGS_PARAMS


def params_in_code(cmd: str) -> set[str]:
    return declaration(cmd)[1]


def params_in_dvc_yaml(stage: Any) -> set[str]:
    deps = [dep for dep in stage.deps if isinstance(dep, ParamsDependency)]
    assert all(dep.def_path == "params.yaml" for dep in deps), f"{stage.name}: {deps}"
    return {key for dep in deps for key in dep.params}


@pytest.fixture(scope="module")
def stages() -> list[Any]:
    with Repo(str(REPO_ROOT)) as repo:
        return [stage for stage in repo.index.stages if isinstance(stage, PipelineStage)]


def test_every_stage_declares_exactly_the_params_its_code_reads(stages: list[Any]) -> None:
    wrong = {}
    for stage in stages:
        try:
            read = params_in_code(stage.cmd)
        except AssertionError as exc:  # no declaration found for what it runs
            wrong[stage.name] = str(exc)
            continue
        declared = params_in_dvc_yaml(stage)
        if declared != read:
            wrong[stage.name] = {
                "missing": sorted(read - declared),
                "extra": sorted(declared - read),
            }
    assert not wrong, "dvc.yaml params differ from what the stages' code reads:\n" + yaml.dump(
        wrong, sort_keys=True
    )


def test_every_declared_param_is_in_params_yaml(stages: list[Any]) -> None:
    """A key the code names but params.yaml lacks stops `dvc repro` ("missing params")."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    absent = set()
    for stage in stages:
        for key in params_in_code(stage.cmd):
            node: Any = params
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    absent.add(f"{stage.name}: {key}")
                    break
                node = node[part]
    assert not absent, sorted(absent)


def test_every_workload_declaration_is_a_stage(stages: list[Any]) -> None:
    """No stage kind a workload declares is missing from dvc.yaml (a stale or mistyped kind)."""
    used = {declaration(stage.cmd)[0] for stage in stages}
    declared = {f"{w.name}:{kind}" for w in all_workloads() for kind in w.stage_params}
    assert declared <= used, sorted(declared - used)
