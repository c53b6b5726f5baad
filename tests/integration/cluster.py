"""A real cluster on one host: Ray head + worker nodes (`ray start`, one raylet each), an MLflow
tracking server on a throwaway PostgreSQL, a DVC directory remote, shared checkpoint storage.

Used by the cluster tests (the `local_cluster` fixture) and by `make cluster-up` /
`make cluster-down` (`python -m tests.integration.cluster up|down DIR`). Every process is
started here and stopped by its own pid: never `ray stop` (other Ray instances share the host).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.serving import free_port

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 240.0
# Ray 2.60's `ray start --head` turns token auth on; this loopback-only test cluster turns it
# off, on its nodes and in every process sent to it (a real cluster keeps tokens).
AUTH_OFF = {"RAY_AUTH_MODE": "disabled"}


class ClusterStartError(RuntimeError):
    pass


class NodeStartFailed(ClusterStartError):
    """`ray start` exited: Ray gives a raylet 30 s to register, too short on a loaded host."""


def _retried(start, attempts: int = 3) -> None:
    for attempt in range(attempts):
        try:
            return start()
        except NodeStartFailed:
            if attempt == attempts - 1:
                raise


def postgres_bin_dir() -> Path | None:
    """Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin, off PATH."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


def _wait_for(what: str, ready, timeout_s: float = STARTUP_TIMEOUT_S, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise ClusterStartError(f"{what} not ready after {timeout_s:.0f} s\n{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _let_others_traverse(folder: Path) -> None:
    """PostgreSQL runs as `postgres`, which must pass through every folder above its data dir;
    pytest's temp folders are 0700 (root only). Adds search (x) permission, not listing."""
    for path in [folder, *folder.resolve().parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(mode | stat.S_IXOTH)


@dataclass
class LocalCluster:
    root: Path
    ray_address: str = ""
    dashboard_url: str = ""
    mlflow_uri: str = ""
    postgres_uri: str = ""
    processes: dict[str, subprocess.Popen | int] = field(default_factory=dict)

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def storage(self) -> Path:
        """Checkpoint storage every node reads (stands in for NFS / s3://)."""
        return self.root / "storage"

    @property
    def ray_temp_root(self) -> Path:
        """Where the nodes keep their Ray temp dirs: short, whatever `root` is, because Ray's
        socket paths under it (.../session_<time>_<pid>/sockets/plasma_store) must fit the
        107 bytes of an AF_UNIX address."""
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"sightline-ray-{digest}"

    def node_temp_dir(self, name: str) -> Path:
        """Each node its own temp dir, as separate machines have. Nodes sharing one session
        dir share runtime_resources/: a worker node's runtime-env agent, setting up or
        releasing a job's working_dir there, removed it from under the job's driver still
        running in it on the head."""
        folder = self.ray_temp_root / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this cluster. The auth mode too: a process that has
        started a Ray 2.60 instance of its own (a pytest session has) carries
        RAY_AUTH_MODE=token into its children, whose drivers then fail against these nodes."""
        return {"RAY_ADDRESS": self.ray_address, **AUTH_OFF, "MLFLOW_TRACKING_URI": self.mlflow_uri}

    # --- starting -------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.processes[name] = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives `make cluster-up` returning; stopped by pid
                env={**os.environ, **(env or {})},
            )
        return log

    def _ray_start(self, name: str, args: list[str]) -> None:
        # Free ports for everything Ray would otherwise take at a fixed default, so several
        # nodes (and other engineers' Ray instances) share the host.
        common = [
            str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
            "--node-name", name, "--min-worker-port", "0", "--max-worker-port", "0",
            "--dashboard-agent-listen-port", str(free_port()),
        ]  # fmt: skip
        env = {
            "RAY_ADDRESS": "",
            **AUTH_OFF,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        log = self.root / "logs" / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0  # a restarted node appends
        self._spawn(name, common + args, env)
        process = self.processes[name]

        def started() -> bool:
            text = log.read_bytes()[offset:].decode(errors="replace")
            if process.poll() is not None:
                raise NodeStartFailed(text[-2000:])
            return "Ray runtime started." in text

        _wait_for(f"ray node {name}", started, log=log)

    def start_ray_head(self, num_cpus: int = 0) -> None:
        _retried(lambda: self._start_ray_head(num_cpus))

    def _start_ray_head(self, num_cpus: int) -> None:
        port, dashboard = free_port(), free_port()
        self._ray_start("head", [
            "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(num_cpus), "--temp-dir", str(self.node_temp_dir("head")),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
            "--ray-client-server-port", str(free_port()),
        ])  # fmt: skip
        self.ray_address = f"127.0.0.1:{port}"
        self.dashboard_url = f"http://127.0.0.1:{dashboard}"

    def add_worker(self, name: str, num_cpus: int = 1) -> None:
        _retried(lambda: self._add_worker(name, num_cpus))
        if (self.root / "cluster.json").exists():
            self.save()  # `down` from another process stops the new node too

    def _add_worker(self, name: str, num_cpus: int) -> None:
        self._ray_start(name, [
            "--address", self.ray_address, "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(num_cpus), "--resources", json.dumps({name: 1}),
            "--temp-dir", str(self.node_temp_dir(name)),
        ])  # fmt: skip

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 60) -> None:
        """Stop one process started here (a Ray node: its raylet and workers go with it)."""
        process = self.processes.pop(name, None)
        if process is None:
            return
        pid = process if isinstance(process, int) else process.pid
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if isinstance(process, subprocess.Popen):
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                process.wait()
        else:  # started by another process (`make cluster-up`): wait for the group to go
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.5)
            os.killpg(pid, signal.SIGKILL)

    def start_postgres(self) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ClusterStartError("PostgreSQL is not installed (make postgres installs it)")
        data, sockets = self.root / "pg" / "data", self.root / "pg" / "sockets"
        sockets.mkdir(parents=True, exist_ok=True)
        # PostgreSQL refuses to run as root: as root, the cluster belongs to `postgres`.
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_user:
            _let_others_traverse(self.root)
            shutil.chown(self.root / "pg", "postgres")
            shutil.chown(sockets, "postgres")
        port = free_port()

        def pg(*args: str) -> None:
            subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)

        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        pg(
            str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "pg" / "server.log"),
            "-w", "-o", f"-p {port} -h 127.0.0.1 -k {sockets}", "start",
        )  # fmt: skip
        self.processes["postgres"] = int((data / "postmaster.pid").read_text().split()[0])
        createdb = str(bin_dir / "createdb")
        pg(createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        self.postgres_uri = f"postgresql+psycopg://postgres@127.0.0.1:{port}/mlflow"

    def start_mlflow(self, port: int | None = None) -> None:
        """The tracking server: runs in PostgreSQL, artifacts served by the server itself."""
        port = port or free_port()
        artifacts = self.root / "mlflow-artifacts"
        log = self._spawn("mlflow", [
            str(BIN / "mlflow"), "server", "--backend-store-uri", self.postgres_uri,
            "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1",
        ])  # fmt: skip
        self.mlflow_uri = f"http://127.0.0.1:{port}"
        _wait_for("mlflow server", lambda: _http_ok(f"{self.mlflow_uri}/health"), log=log)
        if (self.root / "cluster.json").exists():
            self.save()  # a restart: `down` from another process stops the new server

    # --- the whole thing ------------------------------------------------------------------

    @classmethod
    def up(cls, root: Path, workers: int = 2) -> LocalCluster:
        cluster = cls(root=root)
        root.mkdir(parents=True, exist_ok=True)
        cluster.dvc_remote.mkdir(exist_ok=True)
        cluster.storage.mkdir(exist_ok=True)
        try:
            cluster.start_postgres()
            cluster.start_ray_head()
            for index in range(workers):
                cluster.add_worker(f"worker{index + 1}")
            cluster.start_mlflow()
        except BaseException:
            cluster.down()
            raise
        cluster.save()
        return cluster

    def down(self) -> None:
        for name in [n for n in self.processes if n not in ("head", "postgres")]:
            self.stop(name)
        self.stop("head")
        if "postgres" in self.processes:
            self.processes.pop("postgres")
            bin_dir = postgres_bin_dir()
            as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(self.root / "pg" / "data"),
                 "-m", "fast", "-w", "stop"],
                capture_output=True, check=False,
            )  # fmt: skip
        (self.root / "cluster.json").unlink(missing_ok=True)
        shutil.rmtree(self.ray_temp_root, ignore_errors=True)

    def save(self) -> None:
        """cluster.json (pids included, for `down` from another process) and cluster.env."""
        record = {
            "ray_address": self.ray_address,
            "dashboard_url": self.dashboard_url,
            "mlflow_uri": self.mlflow_uri,
            "postgres_uri": self.postgres_uri,
            "pids": {
                name: p if isinstance(p, int) else p.pid for name, p in self.processes.items()
            },
        }
        (self.root / "cluster.json").write_text(json.dumps(record, indent=2))
        env = {
            **self.env,
            "SIGHTLINE_DVC_REMOTE": str(self.dvc_remote),
            "SIGHTLINE_STORAGE": str(self.storage),
            "RAY_DASHBOARD": self.dashboard_url,
        }
        (self.root / "cluster.env").write_text(
            "".join(f"export {key}={value}\n" for key, value in env.items())
        )

    @classmethod
    def load(cls, root: Path) -> LocalCluster:
        record = json.loads((root / "cluster.json").read_text())
        pids = record.pop("pids")
        return cls(root=root, processes=dict(pids), **record)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m tests.integration.cluster up|down DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "up":
        LocalCluster.up(root)
        print(f"cluster up; source {root / 'cluster.env'}")
        print((root / "cluster.env").read_text(), end="")
    elif (root / "cluster.json").exists():
        LocalCluster.load(root).down()
        print("cluster down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster for every cluster test; SIGHTLINE_CLUSTER_DIR reuses a `make cluster-up` one."""
    reuse = os.environ.get("SIGHTLINE_CLUSTER_DIR")
    if reuse and (Path(reuse) / "cluster.json").exists():
        yield LocalCluster.load(Path(reuse))
        return
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed and could not be: `make postgres` installs it")
    cluster = LocalCluster.up(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.down()
