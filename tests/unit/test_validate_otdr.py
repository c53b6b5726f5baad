"""Great Expectations checks of OTDR trace datasets: one broken split per check."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sightline.config import OTDRData
from sightline.data.otdr import Event, Trace, save_split
from sightline.pipelines.validate import main
from sightline.validate.otdr import validate_otdr_dataset
from sightline.validate.report import ExpectationOutcome, ValidationReport

RESOLUTION_M = 2.0


def make_traces() -> list[Trace]:
    """Three traces of 600 samples: a splice and a connector, then the fibre's end."""
    traces = []
    for index in range(3):
        samples = np.linspace(-10.0, -14.0, 600, dtype=np.float32)
        events = [
            Event("pass_through", 100.0 + index, 110.0 + index, RESOLUTION_M, loss_db=0.2),
            Event("face_plate", 250.0, 270.0, RESOLUTION_M, 0.3, -45.0),
            Event("fiber_end", 450.0, 520.0, RESOLUTION_M, None, -20.0),
        ]
        traces.append(Trace(samples, RESOLUTION_M, 1550.0, 100.0, events, trace_id=f"t{index}"))
    return traces


Raw = dict[str, Any]  # {"meta": split JSON, "samples": array, "offsets": array}


def write_raw(root: Path, split: str, raw: Raw) -> None:
    (root / f"{split}.json").write_text(json.dumps(raw["meta"]))
    np.savez(root / f"{split}.npz", samples=raw["samples"], offsets=raw["offsets"])


def read_raw(root: Path, split: str) -> Raw:
    with np.load(root / f"{split}.npz") as arrays:
        samples, offsets = arrays["samples"].copy(), arrays["offsets"].copy()
    return {
        "meta": json.loads((root / f"{split}.json").read_text()),
        "samples": samples,
        "offsets": offsets,
    }


def validate(root: Path, splits: tuple[str, ...]) -> ValidationReport:
    return validate_otdr_dataset(OTDRData(root=root, splits=list(splits)), root, list(splits))


def failed(report: ValidationReport, description: str) -> ExpectationOutcome:
    matching = [r for r in report.failures if r.description.startswith(description)]
    assert matching, f"expected {description!r} to fail; failing: {report.summary()}"
    return matching[0]


def trace(raw: Raw, index: int = 1) -> dict[str, Any]:
    return raw["meta"]["traces"][index]


def nan_sample(raw: Raw) -> None:
    raw["samples"][raw["offsets"][1] + 7] = np.nan


def axis_backwards(raw: Raw) -> None:
    raw["offsets"][1], raw["offsets"][2] = raw["offsets"][2], raw["offsets"][1]


def zero_resolution(raw: Raw) -> None:
    trace(raw)["resolution_m"] = 0.0


def resolution_not_a_number(raw: Raw) -> None:
    trace(raw)["resolution_m"] = "2 m"


def num_samples_wrong(raw: Raw) -> None:
    trace(raw)["num_samples"] = 700


def label_past_the_end(raw: Raw) -> None:
    trace(raw)["events"][2]["end"] = 650.0


def label_before_the_start(raw: Raw) -> None:
    trace(raw)["events"][0]["start"] = -3.0


def empty_label(raw: Raw) -> None:
    trace(raw)["events"][1]["end"] = 250.0


def unknown_type(raw: Raw) -> None:
    trace(raw)["events"][1]["type"] = "bend"


def duplicated_label(raw: Raw) -> None:
    trace(raw)["events"].append(dict(trace(raw)["events"][1]))


def duplicated_trace_id(raw: Raw) -> None:
    trace(raw, 2)["trace_id"] = "t1"


def no_traces(raw: Raw) -> None:
    raw["meta"]["traces"] = []
    raw["samples"], raw["offsets"] = raw["samples"][:0], np.zeros(1, np.int64)


Breakage = Callable[[Raw], None]

# (breakage, the check that must fail, fields of a failing example row).
BROKEN_CASES: list[tuple[Breakage, str, dict[str, Any]]] = [
    (nan_sample, "trace samples are finite", {"trace_id": "t1"}),
    (axis_backwards, "the distance axis is monotone", {"trace_id": "t1"}),
    (zero_resolution, "resolution_m is > 0", {"trace_id": "t1", "resolution_m": 0}),
    (resolution_not_a_number, "traces have a finite resolution_m", {"trace_id": "t1"}),
    (num_samples_wrong, "num_samples matches", {"trace_id": "t1", "num_samples": 700}),
    (label_past_the_end, "labels end inside the trace", {"trace_id": "t1", "end": 650}),
    (label_before_the_start, "labels start inside the trace", {"trace_id": "t1", "start": -3}),
    (empty_label, "labels are non-empty intervals", {"trace_id": "t1", "event_index": 1}),
    (unknown_type, "event types are known", {"trace_id": "t1", "type": "bend"}),
    (duplicated_label, "no label is listed twice", {"trace_id": "t1", "type": "face_plate"}),
    (duplicated_trace_id, "trace ids are unique", {"trace_id": "t1", "trace_index": 2}),
    (no_traces, "every split has traces", {"trace_count": 0}),
]
UNREADABLE_SPLIT = "unreadable"


@pytest.fixture(scope="module")
def broken_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    root = tmp_path_factory.mktemp("broken_otdr")
    splits = [case[0].__name__ for case in BROKEN_CASES]
    for (break_dataset, _, _), split in zip(BROKEN_CASES, splits, strict=True):
        save_split(make_traces(), root, split)
        raw = read_raw(root, split)
        break_dataset(raw)
        write_raw(root, split, raw)
    save_split(make_traces(), root, UNREADABLE_SPLIT)
    (root / f"{UNREADABLE_SPLIT}.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return validate(root, (*splits, UNREADABLE_SPLIT))


def test_valid_dataset_passes_every_check(tmp_path: Path) -> None:
    for split in ("train", "val"):  # the same trace ids in two splits are fine
        save_split(make_traces(), tmp_path, split)

    report = validate(tmp_path, ("train", "val"))

    assert report.success, report.summary()
    assert report.row_counts == {"traces": 6, "events": 18}
    assert "otdr validation passed" in report.summary()


@pytest.mark.parametrize(
    ("break_dataset", "description", "expected_example"),
    BROKEN_CASES,
    ids=[case[0].__name__ for case in BROKEN_CASES],
)
def test_broken_dataset_fails_naming_the_check_and_record(
    broken_report: ValidationReport,
    break_dataset: Breakage,
    description: str,
    expected_example: dict[str, Any],
) -> None:
    split = break_dataset.__name__
    expected = {"split": split, **expected_example}

    outcome = failed(broken_report, description)

    assert any(expected.items() <= row.items() for row in outcome.examples), outcome.examples
    assert description in broken_report.summary()


def test_each_broken_split_fails_only_its_own_check(broken_report: ValidationReport) -> None:
    # Running trace 1's range backwards also changes the sample counts of its neighbours.
    also = {"axis_backwards": {"num_samples matches the samples stored for the trace"}}
    failing = {o.description: {row["split"] for row in o.examples} for o in broken_report.failures}
    for break_dataset, description, _ in BROKEN_CASES:
        split = break_dataset.__name__
        checks = {d for d, splits in failing.items() if split in splits}
        assert {d for d in checks if not d.startswith(description)} == also.get(split, set())


def test_unreadable_split_is_a_failure_not_a_crash(broken_report: ValidationReport) -> None:
    (example,) = failed(broken_report, "split files are readable").examples

    assert example["split"] == UNREADABLE_SPLIT
    assert f"{UNREADABLE_SPLIT}.npz" in example["error"]
    assert broken_report.row_counts["traces"] > 0  # the readable splits were still checked


def test_missing_split_fails_readable(tmp_path: Path) -> None:
    save_split(make_traces(), tmp_path, "train")

    report = validate(tmp_path, ("train", "holdout"))

    example = failed(report, "split files are readable").examples[0]
    assert example["split"] == "holdout" and "holdout.json" in example["error"]


def test_validate_stage_checks_the_otdr_group(tmp_path: Path) -> None:
    save_split(make_traces(), tmp_path / "data" / "otdr", "train")
    params = tmp_path / "params.yaml"
    params.write_text("otdr_data:\n  root: data/otdr\n  splits: [train]\n")

    assert main(["--group", "otdr", "--params", str(params)]) == 0
    report = json.loads((tmp_path / "reports" / "validation" / "otdr.json").read_text())
    assert report["dataset"] == "otdr" and report["success"]

    raw = read_raw(tmp_path / "data" / "otdr", "train")
    unknown_type(raw)
    write_raw(tmp_path / "data" / "otdr", "train", raw)
    assert main(["--group", "otdr", "--params", str(params)]) == 1
