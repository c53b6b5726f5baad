"""The benchmarks in bench/ imported as modules, for the tests of their parts (they run as
scripts and import their shared helpers as `common`, so bench/ must be on sys.path)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@contextmanager
def bench_script(name: str) -> Iterator[ModuleType]:
    """bench/<name>.py as a module, with bench/ on sys.path while it is in use."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def bench_fixture(name: str) -> Any:
    """A module-scoped pytest fixture giving bench/<name>.py as a module: in a test file,
    `ladder = bench_fixture("ladder")`."""

    @pytest.fixture(scope="module", name=name)
    def module() -> Iterator[ModuleType]:
        with bench_script(name) as loaded:
            yield loaded

    return module
