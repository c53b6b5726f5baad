"""The Ray Serve application: the FastAPI ingress (gateway.py) in front of one deployment per
task group (detector.py, otdr.py, faces.py).

    build_app(settings)                 -> the bound application, ready for serve.run
    run(settings, blocking=True)        -> start/join Ray, start Serve on settings.serve.host:port,
                                           deploy; when blocking, serve until Ctrl-C

A port that already answers is refused (PortInUse), never shared: Serve's proxy binds with
SO_REUSEPORT, so a second app on the same port would silently split requests with the first.

Routes: GET /healthz, GET /v1/models, POST /v1/detect, POST /v1/otdr/events,
POST /v1/faces/{enroll,identify,verify}, GET /v1/faces, DELETE /v1/faces/{identity}; OpenAPI
at /docs. Every error is a JSON body {"error": {"code", "message"}} (errors.py); bad input
never takes the server down.
"""

from __future__ import annotations

import socket
import time

import httpx
from ray import serve
from ray.serve import Application

from sightline.cluster import ensure_ray
from sightline.config import Settings
from sightline.serve.capacity import deployment_options
from sightline.serve.detector import Detector
from sightline.serve.faces import Faces
from sightline.serve.gateway import ApiConfig, Gateway
from sightline.serve.otdr import OTDREvents

APP_NAME = "sightline"


def build_app(settings: Settings) -> Application:
    config = ApiConfig.from_settings(settings)
    serve_params = settings.serve
    options = deployment_options(serve_params.scaling)  # replicas and queue limits, per task
    return Gateway.bind(
        config,
        detection=Detector.options(**options).bind(
            config.tracking_uri, serve_params.batch, serve_params.proposal_workers
        ),
        otdr=OTDREvents.options(**options).bind(config.tracking_uri),
        identification=Faces.options(**options).bind(
            config.tracking_uri,
            str(settings.path(serve_params.gallery_path).resolve()),
            serve_params.batch,
        ),
    )


class PortInUse(RuntimeError):
    """Something already accepts connections on the port the app was asked to serve on."""


def run(settings: Settings, *, blocking: bool = True) -> None:
    """Deploy the app on Ray Serve; when blocking, serve until Ctrl-C, then shut Serve down.

    Raises PortInUse, before Ray starts, when serve.host:serve.port is already served."""
    host, port = settings.serve.host, settings.serve.port
    check_port_free(host, port)
    ensure_ray(settings.ray_address)
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


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUse naming the port and what holds it (a Sightline app or another program)."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return  # nothing accepts connections there
    raise PortInUse(
        f"{host}:{port} is already served by {describe_server(host, port)}; stop it first, "
        "or set serve.port to a free port. To load new champions into a running Sightline "
        "app, POST /v1/admin/reload instead of starting a second one."
    )


def describe_server(host: str, port: int) -> str:
    try:
        health = httpx.get(f"http://{host}:{port}/healthz", timeout=5).json()
        return f"a Sightline app ({health['models_loaded']} models loaded)"
    except (httpx.HTTPError, ValueError, TypeError, KeyError):
        return "another program (it does not answer GET /healthz as a Sightline app does)"
