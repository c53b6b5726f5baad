"""`sightline schedule --cron "0 2 * * *"`: retraining on a single host, with APScheduler.

Each tick runs `sightline retrain` (or `--submit`s it to the cluster) as its own process and
logs one line with its outcome, to the console and to logs/schedule.log. Ticks never overlap
(max_instances=1) and missed ticks collapse into one (coalesce=True).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

JOB_ID = "sightline-retrain"


class ScheduleError(ValueError):
    """A cron expression APScheduler cannot read."""


def cron_trigger(expression: str) -> CronTrigger:
    try:
        return CronTrigger.from_crontab(expression)
    except ValueError as exc:
        raise ScheduleError(
            f"--cron {expression!r}: {exc} (five fields: minute hour day month weekday)"
        ) from None


def schedule_logger(log_file: Path) -> logging.Logger:
    logger = logging.getLogger("sightline.schedule")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        formatter = logging.Formatter("%(asctime)s %(message)s")
        for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(log_file)):
            handler.setFormatter(formatter)
            logger.addHandler(handler)
    return logger


class RetrainTick:
    """One tick: `sightline retrain ARGS` in a fresh process; its exit code is the outcome."""

    def __init__(self, project_root: Path, retrain_args: Sequence[str], logger: logging.Logger):
        self.project_root = project_root
        self.command = [sys.executable, "-m", "sightline.cli", "retrain", *retrain_args]
        self.logger = logger
        self.exit_codes: list[int] = []

    def __call__(self) -> int:
        started, wall = time.monotonic(), time.time()
        code = subprocess.run(self.command, cwd=self.project_root, check=False).returncode
        self.exit_codes.append(code)
        summaries = [
            p
            for p in (self.project_root / "reports" / "retrain").glob("*.json")
            if p.stat().st_mtime >= wall
        ]
        summary = max(summaries, key=lambda p: p.stat().st_mtime) if summaries else None
        outcome = "ok" if code == 0 else f"failed (exit {code})"
        self.logger.info(
            f"tick: retrain {outcome} in {time.monotonic() - started:.1f} s; "
            f"summary {summary or 'none'}"
        )
        return code


def build_scheduler(
    trigger: CronTrigger, tick: Callable[[], int], run_now: bool = False
) -> BlockingScheduler:
    scheduler = BlockingScheduler()
    scheduler.add_job(
        tick,
        trigger,
        id=JOB_ID,
        max_instances=1,  # a tick still running when the next is due: the next is skipped
        coalesce=True,  # several missed ticks (host asleep, a long run): one run
        misfire_grace_time=None,  # a late tick still runs, however late
        next_run_time=datetime.now(trigger.timezone) if run_now else None,
    )
    return scheduler


def run_schedule(
    expression: str,
    project_root: Path,
    retrain_args: Sequence[str],
    log_file: Path,
    once_now: bool = False,
) -> int:
    """Block, running a tick at every cron time; `once_now`: one tick now, then return its
    exit code (to check the setup)."""
    trigger = cron_trigger(expression)
    logger = schedule_logger(log_file)
    tick = RetrainTick(project_root, retrain_args, logger)
    scheduler = build_scheduler(trigger, tick, run_now=once_now)

    def after_tick(event: JobExecutionEvent) -> None:
        if event.exception is not None:
            logger.info(f"tick: could not run retrain: {event.exception}")
        if once_now:
            scheduler.shutdown(wait=False)

    scheduler.add_listener(after_tick, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    now = datetime.now(trigger.timezone)
    first = "now" if once_now else trigger.get_next_fire_time(None, now).isoformat()
    logger.info(
        f"schedule {expression!r}: `{' '.join(tick.command[1:])}` in {project_root}; "
        f"first tick {first}; log {log_file}"
    )
    with contextlib.suppress(KeyboardInterrupt, SystemExit):  # Ctrl-C ends the schedule
        scheduler.start()
    if once_now:
        return tick.exit_codes[-1] if tick.exit_codes else 1
    return 0
