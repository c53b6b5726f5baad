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


def test_scheduled_retraining_runs_sightline_retrain_never_two_at_once() -> None:
    (cron,) = _documents()["kuberay/retrain-cronjob.yaml"]
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    script = " ".join([*container["command"], *container["args"]])
    steps = [step.strip() for step in container["args"][0].split("&&")]
    assert "sightline retrain" in steps, steps
    # The job's own steps (pull, repro, push) are `sightline retrain`'s, never run beside it.
    assert not any(step.startswith("dvc ") for step in steps), steps
    assert steps.index("sightline retrain") < steps.index("git push origin HEAD")
    assert {e["name"] for e in container["env"]} >= {"RAY_ADDRESS", "SIGHTLINE_SERVE_URL"}
    assert "sightline-api" in {ref["secretRef"]["name"] for ref in container["envFrom"]
                               if "secretRef" in ref}  # fmt: skip
    assert script.startswith("/bin/sh -c")


def test_no_other_infra_file_retrains_with_raw_dvc_commands() -> None:
    for path in INFRA.rglob("*"):
        if path.is_file() and path.name != "retrain-cronjob.yaml":
            assert "dvc repro" not in path.read_text(), path


def test_image_installs_the_pinned_constraints() -> None:
    assert "-c constraints.txt" in (INFRA / "Dockerfile").read_text()
