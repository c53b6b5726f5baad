"""The command-line shell every pipeline stage shares: arguments, settings, clear errors.

A stage is `def body(settings, args) -> int`; bad input (params, data, an unknown family, a
missing upstream output) ends the stage with one line naming the problem and exit code 2,
instead of a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape

from sightline.config import Settings, SettingsError, load_settings
from sightline.data.errors import DatasetError
from sightline.models.registry import UnknownFamilyError

USER_ERRORS = (SettingsError, DatasetError, UnknownFamilyError, FileNotFoundError)

StageBody = Callable[[Settings, argparse.Namespace], int]


def run_stage(
    body: StageBody,
    description: str | None,
    argv: Sequence[str] | None,
    *,
    per_family: bool,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse `--params` (and `--family` per family, plus the stage's own `add_arguments`),
    load the settings and run `body`."""
    parser = argparse.ArgumentParser(description=description)
    if per_family:
        parser.add_argument("--family", required=True, help="a model family from the registry")
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--params", default=None, help="params.yaml (default: ./params.yaml)")
    args = parser.parse_args(argv)
    try:
        return body(load_settings(args.params), args)
    except USER_ERRORS as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
