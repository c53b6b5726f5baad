"""`otdr_data.format: sor`: a folder of .sor files read as a trace dataset (splits drawn or from
sub-folders, labels from KeyEvents or a sidecar CSV), validated, and fed to the 1-D models at
real-instrument lengths. Every .sor file here is written by write_sor from simulated traces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sightline.config import Evaluate, Settings
from sightline.data.errors import DatasetError
from sightline.data.otdr import EVENT_TYPES, NUM_CLASSES, Trace
from sightline.data.otdr_dataset import TraceDataset, collate
from sightline.data.otdr_sor_folder import describe_sor_folder, load_trace_split
from sightline.data.sor import SorError, events_from_key_events, read_sor, write_sor
from sightline.data.sources import OTDRData
from sightline.data.splits import draw_by_fraction
from sightline.data.synth.otdr import simulate_trace
from sightline.data.synth.params import SynthOTDR
from sightline.validate.otdr import validate_otdr_dataset
from sightline.workloads.otdr import load_traces
from tests.conftest import REPO_ROOT
from tests.unit.test_otdr_models import TINY

# A KeyEvents table tells ends apart by reflectance only (a reflective end reads as fiber_end):
# the simulated cuts are non-reflective so that the types round-trip.
SIM = SynthOTDR(
    num_samples=(1024, 1400), events_per_trace=(1, 3), fiber_cut_reflective_probability=0.0
)
REAL_FILES = REPO_ROOT.parent / "shared" / "data" / "otdr-real"
SPLITS = ["train", "val", "test"]


def simulated(index: int, cfg: SynthOTDR = SIM) -> Trace:
    return simulate_trace(np.random.default_rng([21, index]), cfg, trace_id=f"t{index}")


def write_folder(root: Path, names: list[str]) -> dict[str, Trace]:
    """One simulated trace per name, written as `root/<name>`; returns them by name."""
    traces = {name: simulated(i) for i, name in enumerate(names)}
    for name, trace in traces.items():
        write_sor(trace, root / name)
    return traces


def load(root: Path, split: str, **cfg: object) -> list[Trace]:
    return load_trace_split(OTDRData(format="sor", root=root, **cfg), split, root)


def all_splits(root: Path, **cfg: object) -> dict[str, list[str]]:
    return {split: [t.trace_id for t in load(root, split, **cfg)] for split in SPLITS}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten .sor files, nested folders and mixed-case suffixes, plus a file that is no trace."""
    root = tmp_path_factory.mktemp("archive")
    names = [f"site{i % 3}/fibre{i}.sor" for i in range(8)] + ["loose.SOR", "deep/a/b/c.Sor"]
    write_folder(root, names)
    (root / "notes.txt").write_text("not a trace")
    return root


def test_splits_are_drawn_per_file_by_seed_not_by_listing_order(
    archive: Path, tmp_path: Path
) -> None:
    splits = all_splits(archive)
    names = sorted(name for names in splits.values() for name in names)
    assert len(names) == 10 and "loose.SOR" in names and "deep/a/b/c.Sor" in names
    assert [len(splits[s]) for s in SPLITS] == [8, 1, 1]
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    expected = draw_by_fraction(names, str, fractions, seed=0)
    assert {s: sorted(v) for s, v in splits.items()} == {s: sorted(v) for s, v in expected.items()}
    # The same files created in the reverse order land in the same splits.
    copy = tmp_path / "copy"
    for name in reversed(names):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(archive / name, copy / name)
    assert all_splits(copy) == splits
    assert all_splits(archive, split_seed=7) != splits
    half = all_splits(archive, split_fractions={"train": 0.5, "val": 0.5, "test": 0.0})
    assert len(half["train"]) == 5 and len(half["val"]) == 5 and half["test"] == []


def test_split_sub_folders_are_the_splits(tmp_path: Path) -> None:
    names = ["train/a.sor", "train/more/b.sor", "valid/c.sor", "test/d.SOR", "elsewhere/e.sor"]
    write_folder(tmp_path, names)
    assert all_splits(tmp_path) == {
        "train": ["train/a.sor", "train/more/b.sor"],
        "val": ["valid/c.sor"],
        "test": ["test/d.SOR"],
    }
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetError, match="two sub-folders name split 'val'"):
        load(tmp_path, "train")


def test_labels_come_from_each_files_key_events(archive: Path) -> None:
    written = {f"site{i % 3}/fibre{i}.sor": simulated(i) for i in range(8)}
    loaded = {t.trace_id: t for s in SPLITS for t in load(archive, s)}
    for name, original in written.items():
        trace = loaded[name]
        assert trace.events == events_from_key_events(read_sor(archive / name))
        assert [e.type for e in trace.events] == [e.type for e in original.events]
        for event, truth in zip(trace.events, original.events, strict=True):
            assert event.position_m == pytest.approx(truth.position_m, abs=0.05)


def write_labels(root: Path, text: str) -> None:
    (root / "labels.csv").write_text(text)


def test_sidecar_csv_labels(tmp_path: Path) -> None:
    traces = write_folder(tmp_path, ["train/a.sor", "train/b.sor", "val/c.sor", "test/d.sor"])
    write_sor(  # no events and no KeyEvents rows: labelled only because the CSV lists it
        Trace(samples=traces["test/d.sor"].samples, resolution_m=1.0, wavelength_nm=1550,
              pulse_width_ns=30),
        tmp_path / "test" / "d.sor",
    )  # fmt: skip
    a = traces["train/a.sor"]
    write_labels(
        tmp_path,
        "file,type,position_m,extent_m\n"
        f"train/a.sor,face_plate,{10 * a.resolution_m},\n"
        f"train/a.sor,fiber_end,{200 * a.resolution_m},{8 * a.resolution_m}\n"
        "val/c.sor,,,\n"
        "test/d.sor,,,\n",
    )
    train = {t.trace_id: t for t in load(tmp_path, "train", labels="labels.csv")}
    plate, end = train["train/a.sor"].events
    assert (plate.type, plate.start) == ("face_plate", pytest.approx(10, abs=0.01))
    assert plate.end - plate.start == pytest.approx(train["train/a.sor"].pulse_event_samples)
    assert end.type == "fiber_end" and (end.start, end.end) == pytest.approx((200, 208), abs=0.01)
    # b is not in the CSV: its KeyEvents table labels it.
    assert train["train/b.sor"].events == events_from_key_events(read_sor(tmp_path / "train/b.sor"))
    assert load(tmp_path, "val", labels="labels.csv")[0].events == []
    assert load(tmp_path, "test", labels="labels.csv")[0].events == []


@pytest.mark.parametrize(
    ("rows", "line", "field", "problem"),
    [
        ("train/x.sor,face_plate,5,\n", 2, "file", "is not a .sor file"),
        (",face_plate,5,\n", 2, "file", "empty file name"),
        ("train/a.sor,face_plate,5,\ntrain/a.sor,connector,5,\n", 3, "type", "unknown event type"),
        ("train/a.sor,pass_through,,\n", 2, "position_m", "needs a distance"),
        ("train/a.sor,pass_through,-3,\n", 2, "position_m", "needs a distance"),
        ("train/a.sor,pass_through,near,\n", 2, "position_m", "not a finite number"),
        ("train/a.sor,pass_through,nan,\n", 2, "position_m", "not a finite number"),
        ("train/a.sor,pass_through,5,0\n", 2, "extent_m", "must be > 0"),
        ("train/a.sor,pass_through,5,wide\n", 2, "extent_m", "not a finite number"),
        ("train/a.sor,fiber_cut,999999,\n", 2, "position_m", "past the end of train/a.sor"),
        ("train/a.sor,fiber_cut,5,1,extra\n", 2, None, "more values than the header's 4"),
    ],
)
def test_every_bad_csv_row_is_named(
    tmp_path: Path, rows: str, line: int, field: str | None, problem: str
) -> None:
    write_folder(tmp_path, ["train/a.sor"])
    write_labels(tmp_path, "file,type,position_m,extent_m\n" + rows)
    with pytest.raises(DatasetError, match=problem) as caught:
        load(tmp_path, "train", labels="labels.csv")
    assert caught.value.record == f"line {line}" and caught.value.field == field
    assert "labels.csv" in str(caught.value) and f"line {line}" in str(caught.value)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("file,position_m\n", r"missing column\(s\) \['type'\]"),
        ("file,type,position_m,colour\n", r"unknown column\(s\) \['colour'\]"),
    ],
)
def test_a_bad_csv_header_is_named(tmp_path: Path, header: str, problem: str) -> None:
    write_folder(tmp_path, ["train/a.sor"])
    write_labels(tmp_path, header)
    with pytest.raises(DatasetError, match=problem):
        load(tmp_path, "train", labels="labels.csv")


def test_a_missing_csv_is_named(tmp_path: Path) -> None:
    write_folder(tmp_path, ["train/a.sor"])
    with pytest.raises(DatasetError, match="no such labels CSV"):
        load(tmp_path, "train", labels="missing.csv")


def test_a_file_without_key_events_or_csv_rows_is_named(tmp_path: Path) -> None:
    unlabelled = Trace(samples=simulated(0).samples, resolution_m=1.0, wavelength_nm=1310,
                       pulse_width_ns=30)  # fmt: skip
    write_sor(unlabelled, tmp_path / "train" / "bare.sor")
    with pytest.raises(DatasetError, match="no KeyEvents table") as caught:
        load(tmp_path, "train")
    assert "bare.sor" in str(caught.value) and "no labels CSV" in str(caught.value)
    write_labels(tmp_path, "file,type,position_m\n")
    with pytest.raises(DatasetError, match="does not list it"):
        load(tmp_path, "train", labels="labels.csv")


def test_a_file_that_is_not_a_sor_file_is_named(tmp_path: Path) -> None:
    write_folder(tmp_path, ["train/good.sor"])
    (tmp_path / "train" / "broken.sor").write_bytes(b"PK\x03\x04 a zip, not an OTDR trace")
    with pytest.raises(SorError) as caught:
        load(tmp_path, "train")
    assert str(tmp_path / "train" / "broken.sor") in str(caught.value)


def test_missing_folder_empty_folder_and_unknown_split_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no such folder of \.sor files"):
        load(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match=r"no \.sor files under this folder"):
        load(tmp_path, "train")
    write_folder(tmp_path, ["train/a.sor", "val/b.sor"])
    with pytest.raises(DatasetError, match=r"no split 'test'; the split sub-folders give"):
        load(tmp_path, "test")


def test_validation_passes_a_good_archive_and_names_a_bad_file(tmp_path: Path) -> None:
    write_folder(tmp_path, ["train/a.sor", "train/b.sor", "val/c.sor", "test/d.sor"])
    cfg = OTDRData(format="sor", root=tmp_path)
    good = validate_otdr_dataset(cfg, tmp_path, SPLITS)
    assert good.success, good.summary()
    assert good.row_counts["traces"] == 4 and good.row_counts["events"] > 0
    (tmp_path / "val" / "broken.sor").write_bytes(b"\0" * 16)
    bad = validate_otdr_dataset(cfg, tmp_path, SPLITS)
    assert not bad.success
    assert str(tmp_path / "val" / "broken.sor") in bad.summary()


def test_workload_reads_the_sor_layout_and_models_take_real_lengths(tmp_path: Path) -> None:
    """Real instruments write 12k-39k samples at 0.08-5 m: batches of such traces train."""
    long = SynthOTDR(num_samples=(12_000, 39_000), resolution_m=(0.08, 5.0))
    for index, name in enumerate(["train/short.sor", "train/long.sor"]):
        write_sor(simulated(index, long), tmp_path / name)
    settings = Settings(
        project_root=tmp_path,
        otdr_data=OTDRData(format="sor", root=Path(".")),
        evaluate=Evaluate(),
    )
    traces = load_traces(settings, "train")
    assert len(traces) == 2 and all(12_000 <= len(t.samples) <= 39_000 for t in traces)
    samples, targets = collate([TraceDataset(traces)[i] for i in range(2)])
    builder, hparams = TINY["otdr_detector"]
    model = builder(NUM_CLASSES, **hparams).train()
    losses = model(samples, targets)
    assert all(torch.isfinite(loss) for loss in losses.values())
    model.eval()
    with torch.no_grad():
        outputs = model(samples)
    for output, trace in zip(outputs, samples, strict=True):
        assert bool((output["segments"][:, 1] <= len(trace)).all())


def test_describe_sor_folder_counts_what_it_found(archive: Path, tmp_path: Path) -> None:
    summary = describe_sor_folder(OTDRData(format="sor", root=archive), archive)
    assert summary["files_per_split"] == {"train": 8, "val": 1, "test": 1}
    assert summary["splits_from"] == "drawn by split_fractions"
    assert set(summary["events_per_type"]) == set(EVENT_TYPES)
    assert sum(summary["events_per_type"].values()) > 0 and summary["problems"] == []
    low, high = summary["sample_spacing_m"]
    assert 0 < low <= high and summary["samples"][0] >= 1024
    shutil.copytree(archive, tmp_path / "copy")
    (tmp_path / "copy" / "bad.sor").write_bytes(b"junk")
    bad = describe_sor_folder(OTDRData(format="sor", root=tmp_path / "copy"), tmp_path)
    assert len(bad["problems"]) == 1 and "bad.sor" in bad["problems"][0]
    assert sum(bad["files_per_split"].values()) == 11


def test_data_inspect_finds_a_sor_folder_by_itself(archive: Path) -> None:
    from typer.testing import CliRunner

    from sightline.cli import app

    result = CliRunner().invoke(app, ["data", "inspect", str(archive)])
    assert result.exit_code == 0, result.output
    assert "format: sor" in result.output and "files_per_split" in result.output
    as_json = CliRunner().invoke(app, ["data", "inspect", str(archive), "--json"])
    assert json.loads(as_json.output)["files_per_split"]["train"] == 8


@pytest.mark.skipif(not REAL_FILES.is_dir(), reason=f"real .sor files not at {REAL_FILES}")
def test_the_ten_real_instrument_files_load_as_a_sor_dataset() -> None:
    cfg = OTDRData(format="sor", root=REAL_FILES)
    traces = [t for split in SPLITS for t in load_trace_split(cfg, split, REAL_FILES)]
    assert len(traces) == 10
    for trace in traces:
        assert trace.events, f"{trace.trace_id}: no events from its KeyEvents table"
        assert trace.events == events_from_key_events(read_sor(REAL_FILES / trace.trace_id))
    spacing = [t.resolution_m for t in traces]
    assert min(spacing) < 0.1 and max(spacing) > 5
    assert min(len(t.samples) for t in traces) > 11_000
