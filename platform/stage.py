"""The command-line shell every pipeline stage shares: arguments, settings, clear errors.

A stage is `def body(settings, args) -> int`; bad input (params, data, an unknown family, a
missing upstream output) ends the stage with one line naming the problem and exit code 2,
instead of a traceback. A stage runs quietly: the libraries' logs go to `logs/<stage>.log`, whose
path it prints first (`sightline.console`; SIGHTLINE_VERBOSE=1 prints them all instead).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sightline.config import Settings, SettingsError, load_settings
from sightline.console import stage_logging
from sightline.data.errors import DatasetError
from sightline.models.registry import UnknownFamilyError

USER_ERRORS = (SettingsError, DatasetError, UnknownFamilyError, FileNotFoundError)

StageBody = Callable[[Settings, argparse.Namespace], int]


def stage_name(body: StageBody, args: argparse.Namespace) -> str:
    """The stage's module and what it runs on, e.g. `train-faster_rcnn`, `validate-otdr`."""
    module = sys.modules[body.__module__]  # `python -m` runs it as __main__; its spec knows
    parts = [getattr(module.__spec__, "name", body.__module__).rpartition(".")[2]]
    parts += [v for k, v in vars(args).items() if k != "params" and isinstance(v, str)]
    return "-".join(parts)


def _shown(path: Path) -> str:
    """Relative to the working directory when inside it (shorter), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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
        settings = load_settings(args.params)
        with stage_logging(settings.project_root, stage_name(body, args)) as log_path:
            if log_path is not None:
                Console(stderr=True).print(
                    f"[dim]logs: {escape(_shown(log_path))}[/]",
                    soft_wrap=True,
                    highlight=False,
                )
            return body(settings, args)
    except USER_ERRORS as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
