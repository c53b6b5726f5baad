"""The outcome of a dataset validation: what passed, what failed, and which records failed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

EXAMPLE_ROWS = 5


class ExpectationOutcome(BaseModel):
    """One expectation run against one table."""

    table: str
    expectation: str  # the GX expectation type, e.g. expect_column_values_to_be_in_set
    description: str  # the check in plain words, e.g. "image files exist"
    columns: list[str] = Field(default_factory=list)
    success: bool
    unexpected_count: int = 0
    observed_value: Any = None  # table-level expectations (row counts) report this instead
    # Up to EXAMPLE_ROWS failing rows: the checked column(s) plus the table's identifying fields
    # (split, image / annotation / category id, file_name).
    examples: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None  # set when the expectation itself raised instead of evaluating

    def headline(self) -> str:
        mark = "ok  " if self.success else "FAIL"
        where = f"({', '.join(self.columns)})" if self.columns else ""
        count = f": {self.unexpected_count} unexpected" if self.unexpected_count else ""
        observed = f" (observed {self.observed_value})" if self.observed_value is not None else ""
        return (
            f"{mark} [{self.table}] {self.description}: {self.expectation}{where}{count}{observed}"
        )


class ValidationReport(BaseModel):
    dataset: str
    splits: list[str]
    success: bool
    row_counts: dict[str, int] = Field(default_factory=dict)
    results: list[ExpectationOutcome] = Field(default_factory=list)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success]

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    def summary(self) -> str:
        """Human text: one line overall, then each failing expectation with its example rows."""
        counts = ", ".join(f"{n} {table}" for table, n in self.row_counts.items())
        scope = f"splits: {', '.join(self.splits) or 'none'}" + (f"; {counts}" if counts else "")
        if self.success:
            return f"{self.dataset} validation passed: {len(self.results)} checks ({scope})"
        failures = self.failures
        lines = [
            f"{self.dataset} validation FAILED: {len(failures)} of {len(self.results)} checks "
            f"failed ({scope})"
        ]
        for outcome in failures:
            lines.append(f"  {outcome.headline()}")
            if outcome.error:
                lines.append(f"      error: {outcome.error}")
            lines.extend(f"      {_format_row(row)}" for row in outcome.examples)
        return "\n".join(lines)


def _format_row(row: dict[str, Any]) -> str:
    return " ".join(f"{key}={value!r}" for key, value in row.items() if value is not None)
