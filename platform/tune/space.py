"""params.yaml `tune.spaces.<family>` -> a Ray Tune search space, checked before any trial runs.

Each key names what it tunes: `models.<hyper-parameter>` (the family's `models` block) or
`train.<field>` (the `train` block, e.g. `train.lr`); each value is one sampler:

    {choice: [a, b, ...]}     one of the listed values (lists allowed: anchor sizes)
    {uniform: [low, high]}    {loguniform: [low, high]}    {randint: [low, high]}
    {grid: [a, b, ...]}       every value, once per sample (a grid search)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ray import tune

from sightline.config import SettingsError, Train

SAMPLERS = ("choice", "uniform", "loguniform", "randint", "grid")
SECTIONS = ("models", "train")


def parse_space(family: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """{"models.anchor_sizes": {"choice": [...]}, ...} -> {"models.anchor_sizes": tune.choice}."""
    if not raw:
        raise SettingsError(f"tune.spaces.{family}: no search space for {family!r} in params.yaml")
    return {key: _sampler(f"tune.spaces.{family}.{key}", key, spec) for key, spec in raw.items()}


def _sampler(where: str, key: str, spec: Any) -> Any:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise SettingsError(f"{where}: keys are 'models.<param>' or 'train.<field>'")
    if section == "train" and name not in Train.model_fields:
        raise SettingsError(f"{where}: `train` has no field {name!r}")
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise SettingsError(f"{where}: give exactly one sampler of {', '.join(SAMPLERS)}")
    ((kind, args),) = spec.items()
    if kind not in SAMPLERS:
        raise SettingsError(f"{where}: unknown sampler {kind!r}; known: {', '.join(SAMPLERS)}")
    if not isinstance(args, list) or not args:
        raise SettingsError(f"{where}.{kind}: expected a non-empty list, got {args!r}")
    if kind in ("choice", "grid"):
        values = [encode_value(v) for v in args]
        return tune.choice(values) if kind == "choice" else tune.grid_search(values)
    if len(args) != 2 or not all(isinstance(v, int | float) for v in args) or args[0] >= args[1]:
        raise SettingsError(f"{where}.{kind}: expected [low, high] numbers with low < high")
    if kind == "loguniform" and args[0] <= 0:
        raise SettingsError(f"{where}.loguniform: bounds must be > 0")
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](
        *args
    )


def encode_value(value: Any) -> Any:
    """Lists (anchor sizes, ratios) travel through Tune as JSON text: Tune reads a list in a
    config as nested parameters, which breaks preset trials (the baseline)."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def decode_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value[:1] in ("[", "{") else value


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's sampled config -> (model hyper-parameter overrides, train overrides)."""
    values = {k: decode_value(v) for k, v in config.items()}
    models = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("models.")}
    train = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("train.")}
    return models, train
