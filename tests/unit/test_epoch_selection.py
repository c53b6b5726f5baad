"""The recipe's epoch choice (sightline.train.selection): the best validation score's weights
are kept, patience counts epochs since it, and the choice survives a checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sightline.train.selection import BestEpoch, kept_weights


def _model(value: float) -> nn.Module:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_the_best_epoch_is_kept_not_the_last_and_patience_counts_from_it(tmp_path) -> None:
    selection = BestEpoch("val_map", patience=2)
    for epoch, (score, weight) in enumerate([(0.5, 1.0), (0.7, 2.0), (0.6, 3.0), (0.7, 4.0)]):
        selection.update(epoch, {"val_map": score}, _model(weight))
        stop = selection.should_stop(epoch)
        assert stop == (epoch == 3)  # a tie is no improvement: two epochs after the best
    assert selection.epoch == 1 and selection.score == 0.7
    assert selection.report() == {"selected_epoch": 1.0, "selected_val_map": 0.7}

    path = tmp_path / "state.pt"
    torch.save({"model": _model(4.0).state_dict(), "best": selection.state()}, path)
    state = torch.load(path, weights_only=True)
    assert torch.all(kept_weights(state)["weight"] == 2.0)
    resumed = BestEpoch("val_map", patience=2)
    resumed.restore(state["best"])
    assert (resumed.epoch, resumed.score) == (1, 0.7)


def test_without_a_choice_the_last_weights_are_kept() -> None:
    state = {"model": _model(5.0).state_dict()}
    assert torch.all(kept_weights(state)["weight"] == 5.0)


def test_a_missing_or_nan_score_is_named_or_ignored() -> None:
    selection = BestEpoch("val_map")
    with pytest.raises(KeyError, match="no 'val_map' to choose the epoch by"):
        selection.update(0, {"val_map_50": 0.3}, _model(1.0))
    selection.update(0, {"val_map": float("nan")}, _model(1.0))
    assert selection.epoch == -1 and not selection.should_stop(5)
