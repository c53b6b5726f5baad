"""A team's own OTDR archive through real DVC: a folder of .sor files (`otdr_data.format: sor`,
labels from their KeyEvents tables, splits drawn by seed) validated, trained, evaluated and
registered by `sightline repro register_otdr@otdr_detector` (`dvc repro` with the stages forked
from the preloaded stage server), in a temp git + DVC project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from sightline.data.sor import write_sor
from sightline.data.synth.otdr import simulate_trace
from sightline.data.synth.params import SynthOTDR
from tests.integration.dvc_project import (
    BIN_DIR,
    copy_project_code,
    init_repo,
    project_env,
    run_command,
)
from tests.integration.tiny import tiny_params, write_params
from tests.unit.test_otdr_models import TINY

FAMILY = "otdr_detector"
ARCHIVE = "data/archive"
TRACES = SynthOTDR(num_samples=(1024, 1536), events_per_trace=(1, 3))


def write_archive(root: Path, count: int) -> None:
    """An instrument archive: .sor files in per-site folders, as a team keeps them."""
    for index in range(count):
        trace = simulate_trace(np.random.default_rng([31, index]), TRACES, trace_id=f"f{index}")
        write_sor(trace, root / f"site{index % 2}" / f"fibre{index:02d}.sor")


def test_a_folder_of_sor_files_trains_and_evaluates_through_dvc_repro(
    tmp_path: Path, ray_cluster: str
) -> None:
    copy_project_code(tmp_path)
    params = tiny_params()
    params["otdr_data"] = {"format": "sor", "root": ARCHIVE, "splits": ["train", "val", "test"]}
    params["otdr"]["families"] = [FAMILY]
    params["otdr"]["train"] = {"epochs": 1, "num_workers": 0, "batch_size": 4, "warmup_iters": 1}
    params["models"][FAMILY] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in TINY[FAMILY][1].items()
    }
    write_params(tmp_path, params)
    write_archive(tmp_path / ARCHIVE, 10)
    env = project_env(tmp_path, ray_cluster)
    init_repo(tmp_path, env)

    env["SIGHTLINE_VERBOSE"] = "1"  # the stage server says which stages it forked
    target = f"register_otdr@{FAMILY}"
    repro = run_command([f"{BIN_DIR}/sightline", "repro", target], tmp_path, env)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    for stage in ("validate", "train", "evaluate", "register"):
        assert f"stage server forked sightline.pipelines.{stage} as pid" in repro.stderr

    validation = json.loads((tmp_path / "reports/validation/otdr.json").read_text())
    assert validation["success"] and validation["row_counts"]["traces"] == 10
    metrics = json.loads((tmp_path / "metrics" / f"{FAMILY}.json").read_text())
    assert 0 <= metrics["map_50"] <= 1 and "loc_err_m_median" in metrics
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sightline-otdr")
    (run,) = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{FAMILY}'")
    (dataset_input,) = run.inputs.dataset_inputs  # 8 of the 10 files drawn into train
    assert json.loads(dataset_input.dataset.profile)["split_sizes"] == {"train_traces": 8}
    champion = client.get_model_version_by_alias("sightline-otdr", "champion")
    assert champion.run_id == run.info.run_id
