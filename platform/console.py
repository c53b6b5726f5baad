"""What a stage prints: Sightline's own lines on the console, the libraries' logs in a file.

A stage run quietly (the default) writes every library's log records (Ray's, MLflow's, Ray
Train's driver side, any other logger) and the Python warnings raised outside Sightline's code
to `logs/<stage>.log` under the project root; the console keeps Sightline's own lines, its
warnings and every ERROR, whoever logs it. Ray workers' stdout stays in Ray's own log files (the
driver does not subscribe to it), so training progress reaches the console as data
(`sightline.train.progress`) and is drawn here: a live bar in a terminal, one plain line per
epoch in any output (a CI log gets lines, never control codes).

`SIGHTLINE_VERBOSE=1` (what the CLI's `--verbose` sets) leaves every library printing as it
does by itself, for `dvc repro` stages too.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

VERBOSE_ENV = "SIGHTLINE_VERBOSE"
LOG_DIR = "logs"
# Set while a quiet stage runs: MLflow's artifact bars and "View run at" lines (read when
# used), tqdm bars (read at import: for the stage's child processes).
QUIET_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "TQDM_DISABLE": "1",
}
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
OWN_LOGGER = "sightline"


def verbose() -> bool:
    """Whether the raw logs were asked for (SIGHTLINE_VERBOSE=1 / true / yes / on)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def stage_log_path(project_root: Path, stage: str) -> Path:
    return Path(project_root) / LOG_DIR / f"{stage}.log"


def _own_code_dirs() -> tuple[Path, ...]:
    """Where Sightline's modules live (platform/, models/, pipelines/ in a checkout)."""
    dirs = []
    for package in ("sightline", "sightline.models", "sightline.pipelines"):
        spec = find_spec(package)
        dirs += [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    return tuple(dirs)


class _ShownOnConsole(logging.Filter):
    """ERRORs from anyone; WARNINGs only from Sightline's own loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == OWN_LOGGER or record.name.startswith(f"{OWN_LOGGER}.")
        return record.levelno >= logging.ERROR or (ours and record.levelno >= logging.WARNING)


class _QuietLogs:
    """The logging state a quiet stage changed, to put back when it ends (a stage may run
    inside a longer process, e.g. a test)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._own_dirs = _own_code_dirs()
        self._rerouted: dict[logging.Logger, tuple[list[logging.Handler], bool]] = {}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(log_path, mode="w", encoding="utf-8")
        self._file.setFormatter(logging.Formatter(FILE_FORMAT))
        self._console = logging.StreamHandler()
        self._console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        self._console.addFilter(_ShownOnConsole())

    def __enter__(self) -> _QuietLogs:
        own, root = logging.getLogger(OWN_LOGGER), logging.getLogger()
        self._own_level = own.level
        own.setLevel(logging.INFO)  # other loggers keep their levels (Ray's, MLflow's: INFO)
        root.addHandler(self._file)
        root.addHandler(self._console)
        self.reroute_library_loggers()
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._show_warning
        self._environ = {name: os.environ.get(name) for name in QUIET_ENV}
        os.environ.update(QUIET_ENV)
        logging.getLogger(f"{OWN_LOGGER}.console").info(
            "Ray workers' own output is in Ray's session logs (/tmp/ray/session_latest/logs on "
            "the head node by default); %s=1 prints it on the console instead",
            VERBOSE_ENV,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in self._environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        warnings.showwarning = self._showwarning
        for logger, (handlers, propagate) in self._rerouted.items():
            logger.handlers, logger.propagate = handlers, propagate
        root = logging.getLogger()
        root.removeHandler(self._console)
        root.removeHandler(self._file)
        logging.getLogger(OWN_LOGGER).setLevel(self._own_level)
        self._file.close()

    def reroute_library_loggers(self) -> None:
        """Loggers that print by themselves (Ray's and MLflow's set up their own console
        handler and stop propagation at import) hand their records to the root's handlers."""
        for logger in list(logging.Logger.manager.loggerDict.values()):
            if not isinstance(logger, logging.Logger) or logger in self._rerouted:
                continue
            if logger.handlers and not logger.propagate:
                self._rerouted[logger] = (list(logger.handlers), logger.propagate)
                logger.handlers, logger.propagate = [], True

    def _show_warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        """A Python warning as a log record: Sightline's own on the console, others in the file."""
        ours = any(Path(filename).resolve().is_relative_to(d) for d in self._own_dirs)
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        logging.getLogger(f"{OWN_LOGGER}.warnings" if ours else "py.warnings").warning(text)


_active: _QuietLogs | None = None


@contextmanager
def stage_logging(project_root: Path, stage: str) -> Iterator[Path | None]:
    """Run a stage quietly (see the module docstring); yields its log file, or None when
    verbose (nothing is changed then)."""
    global _active
    if verbose() or _active is not None:
        yield None if _active is None else _active.log_path
        return
    with _QuietLogs(stage_log_path(project_root, stage)) as quiet:
        _active = quiet
        try:
            yield quiet.log_path
        finally:
            _active = None


def quiet_stage() -> bool:
    """Whether a quiet stage is running in this process."""
    return _active is not None


def reroute_library_loggers() -> None:
    """After a library configured its own console logging (e.g. ray.init), send it to the
    stage's log file again; nothing outside a quiet stage."""
    if _active is not None:
        _active.reroute_library_loggers()


class EpochProgress:
    """A training's progress: in a terminal a live bar over the current epoch's batches, and on
    any output one line per finished epoch."""

    def __init__(self, label: str, console: Console | None = None) -> None:
        self.label = label
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> EpochProgress:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("batches"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def batch_done(self, epoch: int, epochs: int, batch: int, batches: int) -> None:
        if self._bar is None:
            return
        description = f"{self.label} epoch {epoch + 1}/{epochs}"
        if self._task is None:
            self._task = self._bar.add_task(description, total=batches)
        self._bar.update(self._task, description=description, completed=batch, total=batches)

    def epoch_done(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        shown = [f"{name} {metrics[name]:.4f}" for name in ("loss",) if name in metrics]
        if "train_images_per_s" in metrics:
            shown.append(f"{metrics['train_images_per_s']:.1f} images/s")
        self.console.print(
            f"{self.label} epoch {epoch + 1}/{epochs}: {', '.join(shown)}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        if self._bar is not None and self._task is not None:
            self._bar.reset(self._task)
