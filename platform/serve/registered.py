"""The registered models one task deployment serves: loaded from the MLflow registry by group.

It holds the registry's champion plus, per model family, one version selected by `?model=`:
the champion itself for the champion's family, otherwise that family's latest registered
version (versions are grouped by their `family` tag, so new families need no code here).
Every task deployment (detector, OTDR events, faces) keeps one of these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from torch import nn

from sightline.models.registry import FAMILIES
from sightline.serve.schemas import Catalog, ModelCard
from sightline.track.registry import LoadedModel, champion_version, load_version
from sightline.workloads import workload_for

logger = logging.getLogger(__name__)

# While nothing is loaded, look for a newly registered champion at most this often.
RETRY_LOAD_AFTER_S = 3.0


def family_versions(versions: Iterable[ModelVersion], champion: str | None) -> dict[str, str]:
    """Family -> the version `?model=<family>` serves (see the module docstring)."""
    latest: dict[str, int] = {}
    champion_family = None
    for version in versions:
        family = version.tags.get("family")
        if family is None:
            continue
        latest[family] = max(latest.get(family, 0), int(version.version))
        if str(version.version) == champion:
            champion_family = family
    chosen = {family: str(number) for family, number in latest.items()}
    if champion_family is not None:
        chosen[champion_family] = str(champion)
    return chosen


def model_card(
    loaded: LoadedModel, champion: bool, tags: dict[str, str] | None = None
) -> ModelCard:
    """`tags`: the registry version's tags (its metrics as `metric.<name>`, its run)."""
    known = FAMILIES.get(loaded.family)
    task = loaded.metadata.get("task") or (known.task if known else "unknown")
    tags = tags or {}
    return ModelCard(
        name=loaded.registered_model,
        version=loaded.version,
        family=loaded.family,
        task=str(task),
        class_names=loaded.class_names,
        champion=champion,
        metrics={
            k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")
        },
        run_id=tags.get("run_id"),
    )


def load_versions(name: str, numbers: Iterable[str]) -> dict[str, LoadedModel]:
    models: dict[str, LoadedModel] = {}
    for number in numbers:
        try:
            models[number] = load_version(name, number)
        except Exception:
            # One broken version must not take the others (or the server) down.
            logger.exception("could not load %s v%s; skipping it", name, number)
    return models


class RegisteredModels:
    """The loaded versions of one task group's registered model, and their catalog."""

    def __init__(self, tracking_uri: str, group: str) -> None:
        # Explicit, so a replica never depends on the environment it was started with.
        mlflow.set_tracking_uri(tracking_uri)
        self.group = group
        self.registered_model = workload_for(group).registered_model
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._models: dict[str, LoadedModel] = {}
        self._catalog = Catalog(models=[], families={})
        self._last_attempt = 0.0
        self.load()

    def load(self) -> Catalog:
        """(Re)load the champion and each family's version from the registry."""
        self._last_attempt = time.monotonic()
        name = self.registered_model
        champion = champion_version(self._client, name)
        champion_number = str(champion.version) if champion is not None else None
        versions = self._client.search_model_versions(f"name = '{name}'")
        tags = {str(v.version): dict(v.tags) for v in versions}
        wanted = family_versions(versions, champion_number)
        numbers = set(wanted.values()) | ({champion_number} if champion_number else set())
        models = load_versions(name, sorted(numbers, key=int))
        # Swapped in one assignment each: requests in flight keep the models they resolved.
        self._models = {**self._models, **models}
        self._catalog = Catalog(
            models=[model_card(m, n == champion_number, tags.get(n)) for n, m in models.items()],
            families={f: n for f, n in wanted.items() if n in models},
            champion_version=champion_number if champion_number in models else None,
        )
        logger.info("serving %s versions %s", name, list(models) or "none")
        return self._catalog

    def catalog(self) -> Catalog:
        if not self._catalog.models and time.monotonic() - self._last_attempt > RETRY_LOAD_AFTER_S:
            self.load()
        return self._catalog

    def get(self, version: str) -> LoadedModel:
        return self._models[version]

    def models(self) -> list[nn.Module]:
        """Every loaded version's module."""
        return [loaded.model for loaded in self._models.values()]
