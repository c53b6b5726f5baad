"""The Ray Serve application: the FastAPI ingress (gateway.py) in front of one deployment per
task group (detector.py, otdr.py, faces.py).

    build_app(settings)                 -> the bound application, ready for serve.run
    run(settings, blocking=True)        -> start/join Ray, start Serve on settings.serve.host:port,
                                           deploy; when blocking, serve until Ctrl-C

Routes: GET /healthz, GET /v1/models, POST /v1/detect, POST /v1/otdr/events,
POST /v1/faces/{enroll,identify,verify}, GET /v1/faces, DELETE /v1/faces/{identity}; OpenAPI
at /docs. Every error is a JSON body {"error": {"code", "message"}} (errors.py); bad input
never takes the server down.
"""

from __future__ import annotations

import time

from ray import serve
from ray.serve import Application

from sightline.cluster import ensure_ray
from sightline.config import Settings
from sightline.serve.detector import Detector
from sightline.serve.faces import Faces
from sightline.serve.gateway import ApiConfig, Gateway
from sightline.serve.otdr import OTDREvents

APP_NAME = "sightline"


def build_app(settings: Settings) -> Application:
    config = ApiConfig.from_settings(settings)
    return Gateway.bind(
        config,
        detection=Detector.bind(config.tracking_uri),
        otdr=OTDREvents.bind(config.tracking_uri),
        identification=Faces.bind(
            config.tracking_uri, str(settings.path(settings.serve.gallery_path).resolve())
        ),
    )


def run(settings: Settings, *, blocking: bool = True) -> None:
    """Deploy the app on Ray Serve; when blocking, serve until Ctrl-C, then shut Serve down."""
    ensure_ray(settings.ray_address)
    host, port = settings.serve.host, settings.serve.port
    serve.start(http_options={"host": host, "port": port})
    if not blocking:
        deploy(settings)
        return
    try:
        deploy(settings)
        url = f"http://{host}:{port}"
        print(f"Sightline is serving at {url} (API docs: {url}/docs); press Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping Sightline Serve")
    finally:
        serve.shutdown()


def deploy(settings: Settings) -> None:
    """Deploy (or update in place) the application and wait until it is running."""
    prepare_tracking_store(settings.tracking_uri)
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")


def prepare_tracking_store(tracking_uri: str) -> None:
    """Create / upgrade the MLflow store's schema once, here, before the task replicas start:
    several replicas opening a fresh SQLite store at once race on its schema migration."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).search_registered_models(max_results=1)
