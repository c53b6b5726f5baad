"""One server per port: `sightline serve` refuses a port that already answers, naming the port
and what holds it, before it starts Ray (Serve's proxy binds with SO_REUSEPORT, so a second app
would otherwise split the requests with the first without a word)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sightline.cli import app
from sightline.config import Serve, Settings
from sightline.serve.app import PortInUse, check_port_free, run
from tests.conftest import REPO_ROOT


@pytest.fixture
def plain_listener() -> Iterator[int]:
    """A port held by a program that is not Sightline: it accepts and hangs up at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def hang_up() -> None:
        while True:
            try:
                sock.accept()[0].close()
            except OSError:
                return  # the fixture closed the socket

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class _SightlineHealth(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "models_loaded": 3}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sightline_like_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SightlineHealth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_free_port_passes() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: nothing accepts connections
        check_port_free("127.0.0.1", port)


def test_a_port_held_by_another_program_is_refused_naming_it(plain_listener: int) -> None:
    with pytest.raises(PortInUse) as caught:
        check_port_free("127.0.0.1", plain_listener)
    message = str(caught.value)
    assert f"127.0.0.1:{plain_listener}" in message
    assert "another program" in message and "serve.port" in message


def test_a_port_held_by_a_sightline_app_says_so_and_how_to_reload(
    sightline_like_server: int,
) -> None:
    with pytest.raises(PortInUse) as caught:
        check_port_free("127.0.0.1", sightline_like_server)
    message = str(caught.value)
    assert f"127.0.0.1:{sightline_like_server}" in message
    assert "a Sightline app (3 models loaded)" in message and "/v1/admin/reload" in message


def test_run_refuses_before_starting_ray(
    plain_listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another test may have started this process's Ray already, so watch the call itself.
    from sightline.serve import app as serve_app

    ray_starts: list[object] = []
    monkeypatch.setattr(serve_app, "ensure_ray", lambda address: ray_starts.append(address))
    with pytest.raises(PortInUse):
        run(Settings(serve=Serve(port=plain_listener)), blocking=False)
    assert ray_starts == []


def test_sightline_serve_exits_1_with_the_reason(plain_listener: int, tmp_path: Path) -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["serve"] = {**params.get("serve", {}), "port": plain_listener}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["serve", "--params", str(path)])
    assert result.exit_code == 1, result.output
    assert f"127.0.0.1:{plain_listener} is already served by another program" in result.output
