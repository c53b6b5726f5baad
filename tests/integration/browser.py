"""Headless Debian Chromium driven by Selenium, for the browser tests (the /ui console, the
MLflow UI). `make browser` installs chromium + chromium-driver; without them the tests skip.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = "Chromium and chromedriver are not installed (run `make browser` as root)"
# Headless as root in a container; no network, no background traffic, no first-run UI.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
# A fake camera (a moving test pattern) whose permission prompt is accepted by itself.
FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
WAIT_S = 90.0  # generous: the pages are slow on a loaded 2-core machine, never a timed assertion


def require_chromium() -> None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(MISSING)


@contextmanager
def chromium(extra_flags: tuple[str, ...] = ()) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile folder) that records console messages."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, *extra_flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="sightline-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], message: str) -> Any:
    """Wait until `condition(driver)` is truthy (React/JS pages render after load)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # A re-render between finding an element and reading it is retried, not a failure.
    waiting = WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))
    try:
        return waiting.until(condition, message)
    except TimeoutException:
        shot = Path(tempfile.gettempdir()) / "sightline-browser-timeout.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"{message} (at {driver.current_url}; screenshot {shot})") from None


def console_errors(driver: Any) -> list[str]:
    """Console messages of level SEVERE since the last call (JS errors, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, path: Path, update: bool) -> None:
    """Write a screenshot of the page to `path` when `update` (SIGHTLINE_UPDATE_SCREENSHOTS=1)."""
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
