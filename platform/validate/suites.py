"""The Great Expectations machinery every dataset kind shares: tables in, outcomes out.

A dataset kind (detection.py, otdr.py) flattens its files into pandas tables and declares one
`TableSuite` per table: its expectations and the fields that identify a failing row. A
`SuiteSet` registers those suites once per process in one ephemeral GX context (a pandas
dataframe asset + suite + validation definition per table) and runs a table through its suite.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core import ExpectationValidationResult
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from sightline.validate.report import EXAMPLE_ROWS, ExpectationOutcome

# Rows may be ignored by a column-pair check only when a value is missing (e.g. an undecodable
# image has no actual size); other checks report the missing value.
EITHER_MISSING = "either_value_is_missing"


def is_true(column: str, description: str) -> gxe.Expectation:
    """A boolean fact computed per row; null (not applicable) rows are skipped."""
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True], description=description)


@dataclass(frozen=True)
class TableSuite:
    checks: Callable[[], list[gxe.Expectation]]
    id_fields: list[str]  # what identifies a failing row in the report


@functools.cache
def _context() -> Any:
    return gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )


class SuiteSet:
    """The suites of one dataset kind, registered in the shared context on first use."""

    def __init__(self, dataset: str, suites: Mapping[str, TableSuite]) -> None:
        self.dataset = dataset
        self.suites = dict(suites)

    @functools.cached_property
    def _definitions(self) -> dict[str, gx.ValidationDefinition]:
        context = _context()
        source = context.data_sources.add_pandas(f"sightline_{self.dataset}")
        definitions = {}
        for table, spec in self.suites.items():
            name = f"{self.dataset}_{table}"
            batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
            suite = context.suites.add(gx.ExpectationSuite(name=name))
            for expectation in spec.checks():
                suite.add_expectation(expectation)
            definitions[table] = context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch, suite=suite)
            )
        return definitions

    def run(self, table: str, df: pd.DataFrame) -> list[ExpectationOutcome]:
        id_fields = self.suites[table].id_fields
        result = self._definitions[table].run(
            batch_parameters={"dataframe": df},
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": EXAMPLE_ROWS,
                "unexpected_index_column_names": id_fields,
            },
        )
        return [_outcome(table, r, id_fields) for r in result.results]

    def run_all(self, frames: Mapping[str, pd.DataFrame]) -> list[ExpectationOutcome]:
        return [outcome for table, df in frames.items() for outcome in self.run(table, df)]


def _outcome(
    table: str, result: ExpectationValidationResult, id_fields: list[str]
) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = config.kwargs
    columns = kwargs.get("column_list") or [
        kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs
    ]
    details = result.result or {}
    return ExpectationOutcome(
        table=table,
        expectation=config.type,
        description=config.description or config.type,
        columns=list(columns),
        success=bool(result.success),
        unexpected_count=int(details.get("unexpected_count") or 0),
        observed_value=plain(details.get("observed_value")),
        examples=[
            _identity_first(plain(row), id_fields)
            for row in details.get("partial_unexpected_index_list") or []
        ],
        error=_exception_message(result.exception_info or {}),
    )


def _identity_first(row: dict[str, Any], id_fields: list[str]) -> dict[str, Any]:
    """Which record (split, ids, file) before the values that failed the check."""
    return {k: row[k] for k in id_fields if k in row} | {
        k: v for k, v in row.items() if k not in id_fields
    }


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX reports one exception as a flat dict, several as {metric id: flat dict}."""
    flat = [info] if "raised_exception" in info else list(info.values())
    messages = [str(e.get("exception_message")) for e in flat if e.get("raised_exception")]
    return "; ".join(messages) or None


def plain(value: Any) -> Any:
    """JSON-ready Python values: numpy scalars unwrapped, NaN -> None, 64.0 -> 64."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    return value
