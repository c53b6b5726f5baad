"""Both OTDR families: training lowers the loss on a fixed batch, and the 1-D eval contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sightline.data.otdr import NUM_CLASSES
from sightline.data.synth.otdr import SynthOTDR, simulate_trace
from sightline.models import otdr_detector, otdr_window

TINY = {
    "otdr_window": (otdr_window.build, {"width": 8, "stages": 3, "hidden": 32}),
    "otdr_detector": (
        otdr_detector.build,
        {
            "width": 8,
            "stages": 2,
            "dilations": (1, 2, 4),
            "representation_size": 32,
            "roi_output_size": 8,
            "rpn_pre_nms_top_n_train": 200,
            "rpn_post_nms_top_n_train": 60,
            "rpn_pre_nms_top_n_test": 200,
            "rpn_post_nms_top_n_test": 60,
        },
    ),
}
LOSS_NAMES = {
    "otdr_window": {"loss_classifier"},
    "otdr_detector": {"loss_objectness", "loss_rpn_seg_reg", "loss_classifier", "loss_seg_reg"},
}


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    builder, hparams = TINY[name]
    return builder(NUM_CLASSES, **hparams)


@pytest.fixture(scope="module")
def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    cfg = SynthOTDR(num_samples=(2048, 2600), events_per_trace=(2, 4))
    traces = [simulate_trace(np.random.default_rng([11, i]), cfg) for i in range(2)]
    samples = [torch.from_numpy(t.samples) for t in traces]
    targets = [{k: torch.from_numpy(v) for k, v in t.targets().items()} for t in traces]
    return samples, targets


def train_steps(model: nn.Module, batch: tuple, steps: int) -> list[float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(*batch)
        total = sum(losses.values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        history.append(total.item())
    return history


@pytest.mark.parametrize("name", list(TINY))
def test_loss_falls_over_twenty_steps_on_a_fixed_batch(name: str, batch: tuple) -> None:
    model = tiny(name)
    losses = model(*batch)
    assert set(losses) == LOSS_NAMES[name]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    history = train_steps(model, batch, 20)
    assert np.mean(history[-3:]) < 0.7 * np.mean(history[:3])


@pytest.mark.parametrize("name", list(TINY))
def test_eval_returns_segments_labels_scores_per_trace(name: str, batch: tuple) -> None:
    model = tiny(name).eval()
    traces = [batch[0][0], batch[0][1][None, :1500]]  # (L,) and (1, L), different lengths
    with torch.no_grad():
        results = model(traces)
    assert len(results) == 2
    for result, length in zip(results, (len(batch[0][0]), 1500), strict=True):
        assert set(result) == {"segments", "labels", "scores"}
        count = len(result["labels"])
        assert result["segments"].shape == (count, 2)
        assert result["labels"].dtype == torch.int64 and result["scores"].shape == (count,)
        if count:
            assert result["labels"].min() >= 1 and result["labels"].max() < NUM_CLASSES
            assert result["segments"].min() >= 0 and result["segments"].max() <= length
            assert bool((result["scores"] >= 0).all() and (result["scores"] <= 1).all())


@pytest.mark.parametrize("name", list(TINY))
def test_a_trace_without_events_trains(name: str, batch: tuple) -> None:
    empty = {"segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}
    losses = tiny(name)(batch[0], [batch[1][0], empty])
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("name", list(TINY))
def test_bad_inputs_name_the_trace_or_target(name: str, batch: tuple) -> None:
    model = tiny(name)
    bad_labels = {"segments": torch.tensor([[10.0, 20.0]]), "labels": torch.tensor([7])}
    with pytest.raises(ValueError, match=r"targets\[1\]\['labels'\]"):
        model(batch[0], [batch[1][0], bad_labels])
    with pytest.raises(ValueError, match="needs targets"):
        model(batch[0])
    with pytest.raises(ValueError, match=r"traces\[0\]"):
        model.eval()([torch.zeros(3, 100)])


@pytest.mark.parametrize("name", list(TINY))
def test_local_weights_load_into_a_fresh_model(name: str, batch: tuple, tmp_path: Path) -> None:
    trained = tiny(name)
    train_steps(trained, batch, 2)
    path = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), path)
    builder, hparams = TINY[name]
    loaded = builder(NUM_CLASSES, weights=str(path), **hparams)
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        builder(NUM_CLASSES, weights=str(tmp_path / "absent.pt"), **hparams)


def test_window_labels_take_the_event_nearest_the_window_centre() -> None:
    model: otdr_window.OTDRWindow = tiny("otdr_window")
    starts = model.window_starts(1000)
    assert starts.tolist() == [0, 150, 300, 450, 600, 700]  # the last window covers the end
    segments = torch.tensor([[140.0, 160.0], [170.0, 190.0], [820.0, 840.0]])
    labels = model.window_labels(starts, segments, torch.tensor([1, 2, 4]))
    # Window [0, 300) holds two event centres: only the one nearer its centre (150) counts.
    assert labels.tolist() == [1, 2, 0, 0, 4, 4]


def test_window_reports_each_positive_window_at_its_centre(monkeypatch: pytest.MonkeyPatch) -> None:
    model: otdr_window.OTDRWindow = tiny("otdr_window").eval()

    def always_face_plate(windows: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(windows), NUM_CLASSES)
        logits[:, 1] = 5.0
        return logits

    monkeypatch.setattr(model.classifier, "forward", always_face_plate)
    (result,) = model([torch.zeros(1000)])
    centres = result["segments"].mean(dim=1)
    assert centres.tolist() == [150.0, 300.0, 450.0, 600.0, 750.0, 850.0]
    assert (result["segments"][:, 1] - result["segments"][:, 0]).tolist() == [32.0] * 6
    assert result["labels"].tolist() == [1] * 6  # overlapping windows: duplicates, no NMS
