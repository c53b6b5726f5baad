"""Stage processes without the import bill: the fork server `sightline repro` runs beside DVC.

Every DVC stage is a fresh `python -m sightline.pipelines.<stage>` process, and a short stage
(evaluate, register, validate) spends half its time importing torch, torchvision, MLflow and
Ray: 10-15 s of 20-30 s on 2 cores, paid ~45 times by the demo. `sightline repro` starts one
server that imports them once and listens on a Unix socket (SIGHTLINE_STAGE_SERVER). A stage
process started with that variable set (`pipelines/__init__.py`) sends the server its module,
arguments, working directory and environment, and its stdin/stdout/stderr as file descriptors;
the server forks a child that runs the stage exactly as `python -m` would, in those, and the
stage process exits with the child's status. What DVC sees (command, output, exit code, files)
is unchanged. Without the variable, or when the server cannot be reached before it took the
stage, the stage runs in its own process as before.

Forking is safe because the server only imports: it starts no thread pool, Ray connection,
CUDA context or database engine before it forks (a child starts its own). Each child gets its
own process group, so the stage process can pass signals (Ctrl-C, SIGTERM) to the whole stage,
and the server stops a child whose stage process went away.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path

SERVER_ENV = "SIGHTLINE_STAGE_SERVER"

# What the stages import: loading these once is the point of the server.
PRELOAD = (
    "sightline.pipelines.train",
    "sightline.pipelines.evaluate",
    "sightline.pipelines.register",
    "sightline.pipelines.validate",
    "sightline.pipelines.proposals",
    "sightline.pipelines.tune",
    "sightline.models.registry",
)
# Read once, at import, by the preloaded libraries (torch's thread pools, Ray's config): a
# stage whose environment differs from the server's in these runs in its own process.
IMPORT_TIME_ENV_PREFIXES = (
    "RAY_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "NCCL_",
    "GLOO_",
    "PYTHON",
)
_HEADER = struct.Struct("!I")  # the request's JSON length
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def running_server() -> Iterator[None]:
    """Start a server for the stages this process's children run (SIGHTLINE_STAGE_SERVER is
    exported to them); stop it on the way out. It imports while the caller goes on."""
    folder = Path(tempfile.mkdtemp(prefix="sightline-stages-"))
    address = folder / "server.sock"
    server = subprocess.Popen([sys.executable, "-m", __name__, str(address)])
    previous = os.environ.get(SERVER_ENV)
    os.environ[SERVER_ENV] = str(address)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(SERVER_ENV, None)
        else:
            os.environ[SERVER_ENV] = previous
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        address.unlink(missing_ok=True)
        folder.rmdir()


# ---- the stage process's side -------------------------------------------------------------


def delegate_if_served() -> None:
    """Run this `python -m sightline.pipelines.<stage>` process's stage in the server, and exit
    with its status; return (the stage then runs here) when there is no server to take it."""
    address = os.environ.get(SERVER_ENV)
    command = sys.orig_argv[1:]
    if not address or len(command) < 2 or command[0] != "-m":
        return
    module, arguments = command[1], command[2:]
    if module.startswith("sightline.pipelines."):
        status = run_in_server(address, module, arguments)
        if status is not None:
            sys.exit(status)


def run_in_server(address: str, module: str, arguments: list[str]) -> int | None:
    """`python -m module arguments` run by the server at `address`, in this process's working
    directory, environment and standard streams: its exit status, or None when the server
    is not there or cannot take it (nothing has run then)."""
    connection = _connect(address)
    if connection is None:
        return None
    request = {"module": module, "argv": arguments, "cwd": os.getcwd(), "env": dict(os.environ)}
    # Held until the stage's pid is known, then passed on to it (or, if refused, to us).
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED_SIGNALS)
    try:
        body = json.dumps(request).encode()
        socket.send_fds(connection, [_HEADER.pack(len(body)) + body], [0, 1, 2])
        lines = connection.makefile("r", encoding="utf-8")
        kind, _, detail = lines.readline().strip().partition(" ")
        if kind != "pid":  # refused, or the server went away before it took the stage
            _tell(f"stage server did not take {module}: {detail or 'no answer'}; it runs here")
            return None
        _tell(f"stage server forked {module} as pid {detail}")
        pid = int(detail)
        _forward_signals_to(pid)
    except OSError:
        return None
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED_SIGNALS)
    return _wait_for_stage(pid, lines)


def _tell(message: str) -> None:
    """A line for whoever asked for the raw logs (SIGHTLINE_VERBOSE)."""
    from sightline.console import verbose

    if verbose():
        print(message, file=sys.stderr)


def _connect(address: str) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(address)
    except OSError:
        connection.close()
        return None
    return connection


def _forward_signals_to(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)

    for signum in _FORWARDED_SIGNALS:
        signal.signal(signum, forward)


def _wait_for_stage(pid: int, lines: io.TextIOBase) -> int:
    answer = lines.readline().split()
    if answer[:1] == ["exit"]:
        return int(answer[1])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    print(f"error: the stage server stopped while it ran this stage (pid {pid})", file=sys.stderr)
    return 1


# ---- the server ----------------------------------------------------------------------------


def serve(address: str, preload: Iterable[str] = PRELOAD) -> None:
    """Listen at `address` (a socket path), import `preload`, then fork a child per request
    until SIGTERM. Requests that arrive during the imports wait in the socket's backlog."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stages through clients
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    started_with = dict(os.environ)  # the imports add to it (torch: TORCHINDUCTOR_CACHE_DIR)
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception as exc:  # the stage itself reports it, in its context
            print(f"stage server: could not preload {module}: {exc}", file=sys.stderr)
    children: dict[int, socket.socket] = {}
    imports_added = {k: v for k, v in os.environ.items() if k not in started_with}
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    try:
        while not stopping:
            for key, _mask in events.select(timeout=0.2):
                if key.fileobj is listener:
                    _accept(listener, events, children, started_with, imports_added)
                else:  # a stage process went away (it only ever reads)
                    _stop_child_of(key.fileobj, events, children)
            _reap(events, children)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)


def _accept(
    listener: socket.socket,
    events: selectors.BaseSelector,
    children: dict[int, socket.socket],
    started_with: dict[str, str],
    imports_added: dict[str, str],
) -> None:
    connection, _ = listener.accept()
    try:
        connection.settimeout(30)
        request, fds = _read_request(connection)
    except (OSError, ValueError) as exc:
        print(f"stage server: unreadable request: {exc}", file=sys.stderr)
        connection.close()
        return
    refusal = refusal_reason(request, started_with)
    if refusal is not None:
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            connection.sendall(f"refuse {refusal}\n".encode())
        connection.close()
        return
    pid = os.fork()
    if pid == 0:
        # What the stage's own process would hold after the same imports.
        request["env"] = {**imports_added, **request["env"]}
        _run_child(request, fds, closing=[listener, *children.values()])
    with contextlib.suppress(OSError):  # the child does it too; whichever runs first wins
        os.setpgid(pid, pid)  # so that the group exists when the stage process signals it
    for fd in fds:
        os.close(fd)
    try:
        connection.sendall(f"pid {pid}\n".encode())
    except OSError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    children[pid] = connection
    events.register(connection, selectors.EVENT_READ)


def refusal_reason(request: dict, started_with: dict[str, str]) -> str | None:
    """Why this server cannot stand in for the stage's own process, if it cannot: another
    project folder (its modules would be another copy's) or another import-time environment
    than the one the server imported in (`started_with`)."""
    if os.path.realpath(request["cwd"]) != os.path.realpath(os.getcwd()):
        return f"the stage runs in {request['cwd']}, the server in {os.getcwd()}"
    env: dict[str, str] = request["env"]
    differing = sorted(
        key
        for key in set(env) | set(started_with)
        if key.startswith(IMPORT_TIME_ENV_PREFIXES) and env.get(key) != started_with.get(key)
    )
    if differing:
        return "its environment differs in " + ", ".join(differing)
    return None


def _read_request(connection: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _address = socket.recv_fds(connection, 1 << 16, 3)
    if len(fds) != 3 or len(data) < _HEADER.size:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a header and three file descriptors")
    (length,) = _HEADER.unpack_from(data)
    body = bytearray(data[_HEADER.size :])
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ValueError("request cut short")
        body += chunk
    return json.loads(body), fds


def _stop_child_of(
    connection: object, events: selectors.BaseSelector, children: dict[int, socket.socket]
) -> None:
    events.unregister(connection)
    for pid, owner in children.items():
        if owner is connection:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)


def _reap(events: selectors.BaseSelector, children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            connection.sendall(f"exit {128 - code if code < 0 else code}\n".encode())
        with contextlib.suppress(KeyError, ValueError):
            events.unregister(connection)
        connection.close()


def _run_child(request: dict, fds: list[int], closing: list[socket.socket]) -> None:
    """In the forked child: become the stage process the request describes, run it, exit."""
    code = 1
    try:
        for sock in closing:
            sock.close()
        os.setpgid(0, 0)
        for signum in _FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _reopen_standard_streams()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _reseed()
        code = _run_module(request["module"], request["argv"])
    finally:
        os._exit(code)


def _reopen_standard_streams() -> None:
    """sys.std* as a fresh `python` would build them on the descriptors just received."""
    sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115 - the process streams
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = open(fd, "w", encoding="utf-8", closefd=False, errors="backslashreplace")  # noqa: SIM115
        stream.reconfigure(line_buffering=os.isatty(fd) or name == "stderr")
        setattr(sys, name, stream)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _reseed() -> None:
    """Fresh processes draw their unseeded random states from the OS; forked ones share the
    server's, so draw again."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _run_module(module: str, argv: list[str]) -> int:
    """`python -m module argv...`, down to the interpreter's exit: non-daemon threads joined,
    atexit handlers run, streams flushed. Returns the exit status."""
    sys.argv = [module, *argv]
    sys.modules.pop(module, None)  # preloaded under its name; it runs afresh as __main__
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # what the interpreter prints for an uncaught error
        traceback.print_exc()
        code = 1
    # What the interpreter's exit does, in its order: threading's own exit hooks first (they
    # tell concurrent.futures' idle worker threads to finish: joined before them, a pool kept
    # alive by a module-level reference, such as MLflow's artifact upload pool, never ends),
    # then every non-daemon thread joined, then atexit.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        raise SystemExit("usage: python -m sightline.stage_server SOCKET_PATH")
    serve(str(Path(arguments[0])))


if __name__ == "__main__":
    main()
