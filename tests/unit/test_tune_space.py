"""Search spaces from params.yaml: parsed into Ray Tune samplers, bad entries named."""

from __future__ import annotations

import json

import pytest
from ray import tune

from sightline.config import SettingsError, load_settings
from sightline.tune.search import (
    default_config,
    early_stopping,
    search_algorithm,
    trial_settings,
)
from sightline.tune.space import parse_space, split_config
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def settings():
    return load_settings(REPO_ROOT / "params.yaml")


def test_every_space_in_params_parses(settings) -> None:
    assert {"faster_rcnn", "triplet"} <= set(settings.tune.spaces)
    for family, raw in settings.tune.spaces.items():
        assert set(parse_space(family, raw)) == set(raw)


def test_samplers_become_tune_domains() -> None:
    space = parse_space(
        "faster_rcnn",
        {
            "models.anchor_sizes": {"choice": [[16, 32], [8, 16]]},
            "train.lr": {"loguniform": [0.001, 0.1]},
            "models.width": {"randint": [8, 33]},
            "models.representation_size": {"grid": [32, 64]},
        },
    )
    assert isinstance(space["models.anchor_sizes"], tune.search.sample.Categorical)
    assert space["models.anchor_sizes"].categories == ["[16, 32]", "[8, 16]"]  # JSON text
    assert isinstance(space["train.lr"], tune.search.sample.Float)
    assert isinstance(space["models.width"], tune.search.sample.Integer)
    assert space["models.representation_size"] == {"grid_search": [32, 64]}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({}, "no search space"),
        ({"anchor_sizes": {"choice": [1]}}, "keys are 'models.<param>'"),
        ({"train.speed": {"choice": [1]}}, "`train` has no field 'speed'"),
        ({"train.lr": {"gaussian": [0, 1]}}, "unknown sampler 'gaussian'"),
        ({"train.lr": {"uniform": [0.1, 0.01]}}, "low < high"),
        ({"train.lr": {"loguniform": [0, 0.1]}}, "bounds must be > 0"),
        ({"train.lr": {"choice": []}}, "non-empty list"),
        ({"train.lr": {"choice": [1], "grid": [2]}}, "exactly one sampler"),
    ],
)
def test_bad_spaces_name_the_entry(raw: dict, fragment: str) -> None:
    with pytest.raises(SettingsError, match=r"tune\.spaces\.ssd") as caught:
        parse_space("ssd", raw)
    assert fragment in str(caught.value)


def test_a_trial_overrides_model_params_and_train_for_its_family_only(settings) -> None:
    config = {"models.anchor_sizes": "[8, 16]", "train.lr": 0.005, "models.mining": "semi_hard"}
    assert split_config(config) == (
        {"anchor_sizes": [8, 16], "mining": "semi_hard"},
        {"lr": 0.005},
    )
    chosen = trial_settings(settings, "faster_rcnn", config)
    assert chosen.model_params("faster_rcnn")["anchor_sizes"] == [8, 16]
    assert (
        chosen.model_params("faster_rcnn")["width"] == settings.model_params("faster_rcnn")["width"]
    )
    train = chosen.train_for("detection", "faster_rcnn")
    assert train.lr == 0.005 and train.epochs == settings.tune.max_epochs
    assert train.num_workers == settings.tune.workers_per_trial
    assert train.threads_per_worker == settings.tune.threads_per_worker
    assert train.max_failures == 0  # a failing trial is not retried
    assert train.controller_failure_limit == settings.tune.worker_start_retries  # nor waits forever
    assert chosen.train_for("detection", "ssd") == settings.train_for("detection", "ssd")


def test_the_baseline_trial_is_the_current_params(settings) -> None:
    space = parse_space("triplet", settings.tune.spaces["triplet"])
    baseline = default_config(settings, "triplet", space)
    assert baseline["train.lr"] == settings.train_for("identification", "triplet").lr
    assert baseline["models.margin"] == settings.model_params("triplet").get("margin")


def test_a_bad_value_in_a_trial_is_named(settings) -> None:
    with pytest.raises(ValueError, match=r"family_train\.faster_rcnn"):
        trial_settings(settings, "faster_rcnn", {"train.lr": "fast"})


def test_the_baseline_runs_first_and_trials_run_at_most_n_at_a_time(settings) -> None:
    space = parse_space("faster_rcnn", settings.tune.spaces["faster_rcnn"])
    baseline = default_config(settings, "faster_rcnn", space)
    assert baseline["models.anchor_sizes"] == json.dumps(
        settings.model_params("faster_rcnn")["anchor_sizes"]
    )

    def trials(max_concurrent: int, seed: int) -> list:
        search = search_algorithm(space, baseline, max_concurrent, seed=seed)
        experiment = {"run": _noop_trial, "config": space, "num_samples": 4}
        search.add_configurations({"search": experiment})
        return [search, *(search.next_trial() for _ in range(3))]

    search, first, second, third = trials(max_concurrent=2, seed=0)
    assert first is not None and first.config == baseline  # list values survive as JSON
    assert second is not None and third is None  # two live trials: the third waits
    search.on_trial_complete(first.trial_id)
    assert search.next_trial() is not None
    # The same seed draws the same trials: a search is repeatable from params.yaml.
    assert trials(4, seed=0)[2].config == trials(4, seed=0)[2].config
    assert trials(4, seed=0)[2].config != trials(4, seed=1)[2].config


def test_a_grid_has_no_baseline_trial(settings) -> None:
    space = parse_space("x", {"train.lr": {"grid": [0.1, 0.2]}})
    assert search_algorithm(space, {"train.lr": 0.02}, max_concurrent=1, seed=0) is None


def _noop_trial(config: dict) -> None:
    """A trainable to hand Tune's variant generator (nothing runs)."""


def test_a_family_budget_overrides_the_search_wide_epochs_and_grace() -> None:
    from sightline.config import Tune

    spaces = {"triplet": {}, "faster_rcnn": {}}
    tune_cfg = Tune(
        max_epochs=2, grace_period=1, family_budget={"triplet": {"max_epochs": 8}}, spaces=spaces
    )
    assert tune_cfg.budget("triplet").model_dump() == {"max_epochs": 8, "grace_period": 1}
    assert tune_cfg.budget("faster_rcnn").model_dump() == {"max_epochs": 2, "grace_period": 1}
    capped = Tune(max_epochs=2, grace_period=5)  # grace can not exceed the epochs
    assert capped.budget("yolo").grace_period == 2
    with pytest.raises(ValueError, match=r"family_budget\.tripplet: no search space"):
        Tune(family_budget={"tripplet": {"max_epochs": 8}}, spaces=spaces)  # a typo is named


@pytest.mark.parametrize(("epochs", "grace"), [(2, 1), (4, 1), (8, 3)])
def test_asha_stops_weak_trials_early_but_not_at_the_last_epoch_nor_the_baseline(
    epochs: int, grace: int
) -> None:
    from ray.tune.experiment import Trial

    from sightline.config import TuneBudget

    budget = TuneBudget(max_epochs=epochs, grace_period=grace)
    asha = early_stopping("map", budget, 2, baseline={"train.lr": 0.02})
    strong, weak, late = (Trial("trial", stub=True, config={"train.lr": 0.1}) for _ in range(3))
    baseline = Trial("trial", stub=True, config={"train.lr": 0.02})
    for trial in (strong, weak, late, baseline):
        asha.on_trial_add(None, trial)
    for epoch in range(1, epochs + 1):  # the first trial sets the bar and runs to the end
        result = asha.on_trial_result(None, strong, {"training_iteration": epoch, "map": 0.5})
        assert result == "CONTINUE"
    results = [asha.on_trial_result(None, weak, {"training_iteration": e, "map": 0.1})
               for e in range(1, grace + 1)]  # fmt: skip
    assert results[-1] == "STOP"  # below the first rung's cutoff at the grace epoch
    # The baseline scores as badly but runs on: the search's gain is measured against it.
    for epoch in range(1, epochs + 1):
        result = asha.on_trial_result(None, baseline, {"training_iteration": epoch, "map": 0.1})
        assert result == "CONTINUE"
    # A trial that got past every rung is not stopped at its last epoch, however it scores.
    for epoch in range(1, epochs):
        asha.on_trial_result(None, late, {"training_iteration": epoch, "map": 0.9})
    assert asha.on_trial_result(None, late, {"training_iteration": epochs, "map": 0.0}) == (
        "CONTINUE"
    )
