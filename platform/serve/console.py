"""The web console at /ui: static HTML/JS/CSS (serve/ui/, no build step) over the public API,
plus /ui/config.json (what the page cannot know by itself: the MLflow UI's URL for run links).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).with_name("ui")
# Where the MLflow UI of the tracking store is served, e.g. http://127.0.0.1:5000 (optional).
MLFLOW_UI_URL_ENV = "SIGHTLINE_MLFLOW_UI_URL"


def add_console(api: FastAPI, mlflow_ui_url: str | None) -> None:
    @api.get("/ui/config.json", include_in_schema=False)
    async def console_config() -> dict[str, str | None]:
        return {"mlflow_ui_url": mlflow_ui_url}

    api.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
