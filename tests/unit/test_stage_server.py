"""The stage fork server (sightline.stage_server): a real server process, real clients, a probe
module in the server's folder that reports what it was given, or sleeps until signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PROBE = """
import json, os, sys, time
if sys.argv[1] == "sleep":
    print("ready", os.getpid(), flush=True)
    time.sleep(600)
if sys.argv[1] == "pool":  # an idle thread pool another module holds (MLflow keeps one)
    from concurrent.futures import ThreadPoolExecutor
    json.pool = ThreadPoolExecutor(2)
    print(json.pool.submit(lambda: "pooled").result(), flush=True)
    sys.exit(0)
print(json.dumps({
    "name": __name__, "argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": sys.stdin.read(),
    "probe": os.environ.get("PROBE"), "ppid": os.getppid(),
}))
sys.exit(int(sys.argv[1]))
"""
CLIENT = (
    "import sys; from sightline.stage_server import run_in_server; "
    "status = run_in_server(sys.argv[1], sys.argv[2], sys.argv[3:]); "
    "sys.exit(99 if status is None else status)"
)
NOT_TAKEN = 99


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    folder = tmp_path_factory.mktemp("stage-server")
    (folder / "probe.py").write_text(PROBE)
    address = str(folder / "server.sock")
    process = subprocess.Popen(
        [sys.executable, "-c", f"from sightline.stage_server import serve; serve({address!r}, ())"],
        cwd=folder,
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(address) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield address, folder, process.pid
    process.terminate()
    assert process.wait(timeout=30) == 0
    assert not os.path.exists(address), "the server removes its socket"


def client(
    address: str, *arguments: str, cwd: Path, env: dict[str, str] | None = None, **popen
) -> subprocess.Popen:
    environment = {**os.environ, "SIGHTLINE_VERBOSE": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, address, *arguments],
        cwd=cwd,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_the_stage_runs_forked_from_the_server_in_the_callers_streams_args_and_env(
    server,
) -> None:
    address, folder, server_pid = server
    stage = client(address, "probe", "3", "--flag", cwd=folder, env={"PROBE": "from the caller"})
    out, err = stage.communicate("what the caller piped in", timeout=60)
    assert stage.returncode == 3, err  # the stage's exit status is the stage process's
    report = json.loads(out)
    assert report == {
        "name": "__main__",
        "argv": ["3", "--flag"],
        "cwd": str(folder),
        "stdin": "what the caller piped in",
        "probe": "from the caller",
        "ppid": server_pid,
    }
    assert "stage server forked probe as pid" in err


def test_an_uncaught_error_prints_its_traceback_and_exits_1(server) -> None:
    address, folder, _ = server
    stage = client(address, "probe", "not-a-number", cwd=folder)
    _, err = stage.communicate("", timeout=60)
    assert stage.returncode == 1
    assert "ValueError: invalid literal for int()" in err


def test_a_stage_that_leaves_an_idle_thread_pool_still_exits(server) -> None:
    """A fresh interpreter's exit tells idle pool threads to finish before it joins them; a
    stage exiting otherwise hung for ever (seen in `sightline retrain` on the cluster)."""
    address, folder, _ = server
    stage = client(address, "probe", "pool", cwd=folder)
    out, err = stage.communicate("", timeout=60)
    assert stage.returncode == 0, err
    assert out.strip() == "pooled"


def test_sigterm_to_the_stage_process_stops_the_stage(server) -> None:
    address, folder, _ = server
    stage = client(address, "probe", "sleep", cwd=folder)
    ready, child = stage.stdout.readline().split()
    assert ready == "ready"
    stage.send_signal(signal.SIGTERM)
    stage.communicate(timeout=30)
    assert stage.returncode == 128 + signal.SIGTERM
    assert not _alive(int(child))


def test_a_killed_stage_process_takes_its_stage_down(server) -> None:
    address, folder, _ = server
    stage = client(address, "probe", "sleep", cwd=folder)
    _, child = stage.stdout.readline().split()
    stage.kill()  # no chance to pass anything on: the server sees its socket close
    stage.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(int(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(int(child))


@pytest.mark.parametrize(
    ("where", "env", "reason"),
    [
        ("elsewhere", {}, "the stage runs in"),
        ("here", {"OMP_NUM_THREADS": "7"}, "its environment differs in OMP_NUM_THREADS"),
    ],
)
def test_a_stage_it_cannot_stand_in_for_is_left_to_run_in_its_own_process(
    server, tmp_path: Path, where: str, env: dict[str, str], reason: str
) -> None:
    address, folder, _ = server
    cwd = tmp_path if where == "elsewhere" else folder
    stage = client(address, "probe", "0", cwd=cwd, env=env)
    _, err = stage.communicate("", timeout=60)
    assert stage.returncode == NOT_TAKEN
    assert "stage server did not take probe" in err and reason in err


def test_without_a_server_nothing_runs(tmp_path: Path) -> None:
    stage = client(str(tmp_path / "absent.sock"), "probe", "0", cwd=tmp_path)
    stage.communicate("", timeout=60)
    assert stage.returncode == NOT_TAKEN


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child the server has not reaped yet is a zombie: gone for every purpose here.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
