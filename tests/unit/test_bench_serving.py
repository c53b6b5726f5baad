"""bench/serving.py's model-only measurement (the load itself is run by hand: minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sightline.config import load_settings
from tests.bench_scripts import bench_fixture

serving = bench_fixture("serving")


def test_the_batched_forward_gain_is_measured_on_the_registered_champions(
    serving, mlflow_store: str, tmp_path: Path
) -> None:
    serving.register_stand_ins(load_settings(Path("params.yaml")), tmp_path / "artifacts")
    serving.write_payloads(tmp_path / "payloads")
    gains = serving.batched_forward_gain(mlflow_store, tmp_path / "payloads", 4, seconds=0.05)
    for route in ("detect", "identify"):
        assert gains[f"{route}_single_per_s"] > 0 and gains[f"{route}_batched_per_s"] > 0
        assert gains[f"{route}_model_ms"] == pytest.approx(1000 / gains[f"{route}_single_per_s"])
    (family,) = gains["detect_families"]
    assert family == serving.STAND_INS["detection"]
    assert all(rate > 0 for rate in gains["detect_families"][family])


def test_images_per_second_counts_every_image_of_each_call(serving) -> None:
    calls: list[int] = []
    rate = serving.images_per_second(lambda images: calls.append(len(images)), None, 3, 0.01)
    assert set(calls) == {3} and rate > 0


def test_a_cell_times_only_answered_requests_that_carried_their_app_time(serving) -> None:
    samples = [(200, 30.0, 22.0), (200, 31.0, None), (503, 2.0, 1.0), (200, 40.0, 30.0)]
    cell = serving.Cell("identify", "on", 1, 1.0, samples)
    assert list(cell.app_ms()) == [22.0, 30.0]
    assert list(cell.overhead_ms()) == [8.0, 10.0]
    assert cell.ok_ms().size == 3


def test_an_rcnn_champion_is_timed_on_its_proposals_and_its_search_apart(
    serving, mlflow_store: str, tmp_path: Path
) -> None:
    import mlflow

    from sightline.models.registry import build_model
    from sightline.track.registry import log_model, register
    from sightline.track.runs import experiment_id
    from sightline.workloads import workload_for

    serving.register_stand_ins(load_settings(Path("params.yaml")), tmp_path / "artifacts")
    serving.write_payloads(tmp_path / "payloads")
    params = {"width": 8, "feature_dim": 32, "crop_size": 16}
    experiment = experiment_id("sightline-detection", tmp_path / "artifacts")
    with mlflow.start_run(experiment_id=experiment):
        model = build_model("rcnn", num_classes=6, **params)
        uri = log_model(model, family="rcnn", num_classes=6, model_params=params,
                        metadata={"task": "detect"})  # fmt: skip
    assert register(uri, workload=workload_for("detection"), family="rcnn",
                    metrics={"map": 0.9}, tags={}).promoted  # fmt: skip
    gains = serving.batched_forward_gain(mlflow_store, tmp_path / "payloads", 2, seconds=0.05)
    assert gains["detect_search_ms"] > 0  # the champion is rcnn now
    assert set(gains["detect_families"]) == {"rcnn", serving.STAND_INS["detection"]}


def test_the_report_compares_detect_with_the_issues_setup(serving) -> None:
    from sightline.config import ServeBatch, ServeScaling

    def cell(route: str, batching: str, users: int, ok: int) -> object:
        return serving.Cell(
            route, batching, users, 10.0, [(200, 20.0, 12.0)] * ok + [(503, 1.0, None)]
        )

    cells = [cell(route, arm, users, 10 * users) for arm in ("on", "off")
             for route in serving.ROUTES for users in serving.CONCURRENCY]  # fmt: skip
    cells += [cell("detect", serving.BASELINE, users, 5 * users) for users in (1, 16)]
    context = {
        "locust": "2", "seconds": 10, "when": "today", "load_before": "0", "load_after": "1",
        "minutes": 1.0, "champions": "rcnn v1", "batch": ServeBatch(), "proposal_workers": 2,
        "scaling": ServeScaling(), "people": 100, "filled": 90,
        "floor": {"detect": serving.Cell("detect", "plain", 1, 10.0, [(200, 3.0, 0.5)])},
        "cpu": {"proposal workers": 8.0, "gateway": 1.6, "locust": 0.4},
        "repeats": [cell("detect", arm, 16, ok) for arm, ok in
                    [("on", 150), (serving.BASELINE, 100), ("on", 170), (serving.BASELINE, 100)]],
        "gains": {"detect_single_per_s": 10.0, "detect_batched_per_s": 11.0,
                  "detect_model_ms": 100.0, "detect_search_ms": 60.0,
                  "identify_single_per_s": 100.0, "identify_batched_per_s": 200.0,
                  "identify_model_ms": 10.0, "detect_families": {"rcnn": (10.0, 11.0)}},
    }  # fmt: skip
    text = serving.report(
        cells, [cell("identify", "on", 1, 10)], cell("enroll", "on", 4, 5), context
    )
    assert f'("{serving.BASELINE}"):\n  16.0 against 8.0 req/s,\n  **2.00x**' in text
    assert "selective search costs 60.0 ms" in text
    assert f"| detect | {serving.BASELINE} | 16 | 8.0 |" in text
    assert "| detect | 1 | 8.0 | 8.0 | 2.5 |" in text  # overhead 20 - 12 ms; plain HTTP 3 - 0.5
    assert "| otdr | 1 | 8.0 | 8.0 |  |" in text
    # 160 answered: 50 + 10 + 2.5 ms of CPU each
    assert "proposal workers 50, gateway 10, locust 2; 62 ms in all" in text
    assert "16 clients 15.0, 17.0 req/s with batching on" in text and "**1.60x** (means)" in text


def test_the_http_floor_answers_every_route_with_its_app_time(serving, tmp_path: Path) -> None:
    """Plain uvicorn under the bench's own locust client, loopback, 1 s per route."""
    serving.write_payloads(tmp_path / "payloads")
    floor = serving.http_floor(tmp_path, 1)
    assert set(floor) == set(serving.ROUTES)
    for cell in floor.values():
        assert cell.ok_ms().size > 0 and cell.ok_ms().size == len(cell.samples)
        p50, _ = serving.overhead_percentiles(cell)
        assert 0 <= p50 < cell.ok_ms().max()  # the app's own time is inside each round trip


def test_cpu_accounting_counts_the_finished_load_generator(serving) -> None:
    import subprocess
    import sys

    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    before = serving.cpu_snapshot()
    subprocess.run([sys.executable, "-c", busy], check=True)  # as the locust runs are
    spent = serving.cpu_by_role(before, serving.cpu_snapshot())
    assert spent["locust"] >= 0.25 and spent.get("other", 0.0) >= 0


def test_metric_names_are_ones_mlflow_takes(serving) -> None:
    from mlflow.utils.validation import _validate_metric_name

    name = serving.metric_name("detect", serving.BASELINE, 16)
    assert name == "detect_off_0_workers_16_ok_per_s"
    _validate_metric_name(name)
