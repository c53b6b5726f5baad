"""The one error type for bad dataset files and records."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset file is unreadable or one of its records is malformed.

    The message names the file, the record (image id, annotation id, xml object) and the field at
    fault; the same facts are kept as attributes for callers that report them in a structured way.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        record: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = str(file) if file is not None else None
        self.record = record
        self.field = field

    @classmethod
    def at(
        cls,
        file: str | Path,
        problem: str,
        *,
        record: str | None = None,
        field: str | None = None,
    ) -> DatasetError:
        """An error whose message reads `<file>: <record>: field '<field>': <problem>`."""
        parts = [str(file)]
        if record:
            parts.append(record)
        if field:
            parts.append(f"field {field!r}")
        parts.append(problem)
        return cls(": ".join(parts), file=file, record=record, field=field)
