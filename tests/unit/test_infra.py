"""infra/ stays loadable and in step with the pinned stack (it is applied on clusters, not here)."""

from __future__ import annotations

from importlib.metadata import version

import yaml

from tests.conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"


def _documents() -> dict[str, list[dict]]:
    return {
        str(path.relative_to(INFRA)): [d for d in yaml.safe_load_all(path.read_text()) if d]
        for path in sorted(INFRA.rglob("*.yaml"))
    }


def test_every_manifest_parses() -> None:
    docs = _documents()
    assert {"kuberay/raycluster.yaml", "kuberay/retrain-cronjob.yaml", "ray/cluster.yaml"} <= set(
        docs
    )
    assert all(docs.values())


def test_versions_match_the_installed_stack() -> None:
    docs = _documents()
    (cluster,) = [d for d in docs["kuberay/raycluster.yaml"] if d["kind"] == "RayCluster"]
    assert cluster["spec"]["rayVersion"] == version("ray")
    mlflow_image = docs["mlflow/compose.yaml"][0]["services"]["mlflow"]["image"]
    assert mlflow_image.endswith(f":v{version('mlflow')}")


def test_retraining_runs_the_dvc_pipeline_against_the_ray_cluster() -> None:
    (cron,) = _documents()["kuberay/retrain-cronjob.yaml"]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "dvc repro" in container["args"][0]
    assert {e["name"] for e in container["env"]} >= {"RAY_ADDRESS"}


def test_image_installs_the_pinned_constraints() -> None:
    assert "-c constraints.txt" in (INFRA / "Dockerfile").read_text()
