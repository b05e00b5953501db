"""BuildGrid (a Remote Execution API server) on 127.0.0.1 for the farm tests, and ``irctl worker`` bots.

BuildGrid cannot be installed beside irctl (it requires ``lark-parser``, which clobbers our ``lark``):
``setup.sh`` puts 0.4.4 in a venv of its own, ``/opt/irctl-buildgrid`` (``IRCTL_BUILDGRID`` overrides).
Its scheduler refuses sqlite, so each test session gets a throwaway PostgreSQL cluster: ``initdb`` as the
unprivileged ``irctl-test`` (PostgreSQL refuses to run as root), on a free loopback port, trust auth,
migrated once into a template database. Every server is then ``bgd server start`` on the README's
``examples/buildgrid/buildgrid.yml`` (its address and database come from the environment),
listening on a free loopback port, with its own database copied from the template (``createdb -T``,
milliseconds), so an empty server costs only BuildGrid's start-up (~4-6 s).

- ``buildgrid`` (session): one server for the whole session — what most tests need.
- ``fresh_buildgrid`` (function): an empty server (no action cache, CAS, queue or bots) for tests that
  count executions.
- ``workers`` (function): ``workers(url, cache_dir, name, jobs=1)`` starts an ``irctl worker`` and stops
  it after the test; ``start_worker``/``stop_worker`` are the same by hand.
- ``server.jobs()`` / ``server.bots()``: what the server scheduled and which bots it has, read from its
  database — independently of irctl's client (count executions, see a re-run after a lost lease).

Where the venv or PostgreSQL is missing the tests are skipped with the reason — except in CI
(``CI=true``), where that is a failure, so a broken runner cannot pass by skipping them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support import skip_unless_ci

VENV = Path(os.environ.get("IRCTL_BUILDGRID", "/opt/irctl-buildgrid"))
BGD = VENV / "bin" / "bgd"
# The README's example config, run as it ships: the tests prove it works, and the settings that matter
# (keepalive, assigner interval, the psycopg2 driver) have one home. Its !expand-vars are set per server.
CONFIG = Path(__file__).resolve().parents[2] / "examples" / "buildgrid" / "buildgrid.yml"
PG_USER = "irctl-test"  # setup.sh creates it; PostgreSQL will not run as root
PG_ROLE = "bg"
TEMPLATE_DB = "bgd_template"
READY = "irctl worker: {name} ready"  # what `irctl worker` prints on stderr once its bot session exists


def _pg_tool(name: str) -> str | None:
    """Debian keeps PostgreSQL's server tools off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return versions[-1] if versions else None


def missing() -> str | None:
    """Why a BuildGrid server cannot be started here, or None."""
    if not os.access(BGD, os.X_OK):
        return f"{BGD} missing (setup.sh installs BuildGrid 0.4.4 in its own venv)"
    for tool in ("initdb", "pg_ctl", "createdb"):
        if not _pg_tool(tool):
            return f"PostgreSQL's {tool} missing (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"user {PG_USER} missing (setup.sh creates it; PostgreSQL does not run as root)"
    return None


def require() -> None:
    """Skip (fail in CI) unless a BuildGrid server can be started here."""
    reason = missing()
    if reason:
        skip_unless_ci("BuildGrid", reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def _dies_with_us(signame: str, user: str | None = None) -> list[str]:
    """A command prefix: the process gets ``signame`` when this one ends — a test session killed outright
    (a timeout, ^C twice) leaves no server, database or worker running behind it. ``setpriv`` sets it
    after switching to ``user``, since a change of credentials clears it."""
    switch = ["--reuid", user, "--regid", user, "--init-groups"] if user else []
    return ["setpriv", *switch, "--pdeathsig", signame, "--"]


class Cluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 holding BuildGrid's migrated template database. Its
    postmaster is this process's child (not pg_ctl's daemon), so it ends with the test session."""

    def __init__(self, workdir: Path | None = None) -> None:
        """``workdir`` (default: a new one under $TMPDIR) holds the cluster and the servers'
        logs; ``irctl-test`` must be able to reach it, which pytest's 0700 tmp dirs do not let it."""
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="irctl-buildgrid-"))
        self.data = self.dir / "pg"
        self.port = 0
        self._user = PG_USER if os.geteuid() == 0 else None
        self._postmaster: subprocess.Popen | None = None
        self._databases = 0

    def _run(self, tool: str, *args: str) -> None:
        as_user = ["runuser", "-u", self._user, "--"] if self._user else []
        done = subprocess.run([*as_user, _pg_tool(tool) or tool, *args], capture_output=True, text=True, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n"
                               f"server log tail:\n{_tail(self.dir / 'postgres.log')}")

    def start(self, timeout: float = 30.0) -> None:
        if self._user:
            os.chown(self.dir, pwd.getpwnam(self._user).pw_uid, -1)
        # --no-sync and fsync=off: a cluster that lives for one test session need not survive a power cut
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", PG_ROLE, "--no-sync", "-E", "UTF8")
        for _ in range(5):  # a port can be taken between probing and binding: retry
            self.port = _free_port()
            with open(self.dir / "postgres.log", "ab") as log:
                # SIGQUIT: PostgreSQL's immediate shutdown, which also ends its backends
                self._postmaster = subprocess.Popen(
                    [*_dies_with_us("QUIT", self._user), _pg_tool("postgres") or "postgres", "-D", str(self.data),
                     "-p", str(self.port), "-k", str(self.data), "-c", "listen_addresses=127.0.0.1",
                     "-c", "fsync=off"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir)
            if self._wait_ready(timeout):
                break
            self.stop()
        else:
            raise RuntimeError(f"PostgreSQL did not start; log tail:\n{_tail(self.dir / 'postgres.log')}")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_ROLE, TEMPLATE_DB)
        migrate = subprocess.run([str(BGD), "migrate", "apply", self.url(TEMPLATE_DB)], capture_output=True,
                                 text=True)
        if migrate.returncode != 0:
            raise RuntimeError(f"bgd migrate apply failed: {migrate.stdout[-1500:]}{migrate.stderr[-1500:]}")

    def _wait_ready(self, timeout: float) -> bool:
        """What ``pg_ctl -w`` waits for: postmaster.pid's status line says ``ready`` (ours, by its pid)."""
        assert self._postmaster is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._postmaster.poll() is None:
            try:
                lines = (self.data / "postmaster.pid").read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[0] == str(self._postmaster.pid) and lines[7].strip() == "ready":
                return True
            time.sleep(0.05)
        return False

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{PG_ROLE}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """An empty BuildGrid database (a copy of the migrated template)."""
        self._databases += 1
        name = f"bgd_{self._databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_ROLE, "-T", TEMPLATE_DB, name)
        return name

    def drop_database(self, name: str) -> None:
        self._run("dropdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_ROLE, "--if-exists", "--force", name)

    def sql(self, database: str, query: str) -> list[list[str]]:
        psql = [_pg_tool("psql") or "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_ROLE, "-d", database,
                "-X", "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=1", "-c", query]
        done = subprocess.run(psql, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql {query!r}: {done.stderr.strip()}")
        return [line.split("\x1f") for line in done.stdout.splitlines() if line]

    def postmaster_pid(self) -> int | None:
        return self._postmaster.pid if self._postmaster and self._postmaster.poll() is None else None

    def remove(self) -> None:
        """Stop the cluster and delete its directory (the servers using it must be stopped first)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self) -> None:
        if self._postmaster is not None:
            _stop(self._postmaster, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown


@dataclass
class BuildGrid:
    """One running ``bgd server``: ``url`` is what irctl's ``--remote``/``--remote-cache``/``--server`` take."""

    url: str
    port: int
    process: subprocess.Popen
    log: Path
    database: str
    cluster: Cluster

    def stop(self) -> None:
        """Stop the server (idempotent); its database stays until the cluster goes. Killed after a short
        grace: its orderly shutdown takes seconds, and a throwaway server has nothing to save."""
        _stop(self.process, grace=1.0)

    def log_tail(self) -> str:
        return _tail(self.log)

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query on the server's own database (BuildGrid's scheduler state): what it holds,
        read independently of irctl's client."""
        return self.cluster.sql(self.database, query)

    def jobs(self) -> list[dict[str, str]]:
        """Every action the server was asked to execute (not those answered from its action cache), oldest
        first: ``stage`` (4 = completed), ``worker_name``, ``n_tries`` (2 after a lost lease was re-run),
        ``status_code`` (a google.rpc code, 0 = OK), ``action_digest`` ("HEX/SIZE")."""
        columns = ("action_digest", "stage", "worker_name", "n_tries", "status_code")
        rows = self.sql(f"SELECT {', '.join(columns)} FROM jobs ORDER BY queued_timestamp")
        return [dict(zip(columns, row)) for row in rows]

    def bots(self) -> dict[str, dict[str, str]]:
        """The open bot sessions by bot id (irctl worker's ``--name``): ``capacity`` (its free ``--jobs``
        slots), ``max_capacity`` (its ``--jobs``), ``bot_status`` (1 = OK), ``lease_id``."""
        columns = ("bot_id", "capacity", "max_capacity", "bot_status", "lease_id")
        rows = self.sql(f"SELECT {', '.join(columns)} FROM bots")
        return {row[0]: dict(zip(columns[1:], row[1:])) for row in rows}


def start_server(cluster: Cluster, workdir: Path, timeout: float = 60.0) -> BuildGrid:
    """Start ``bgd server`` on a free loopback port with a database of its own; returns once it answers
    GetCapabilities."""
    database = cluster.new_database()
    last = ""
    for _ in range(3):  # a port can be taken between probing and binding: retry
        port = _free_port()
        env = {**os.environ, "BGD_LISTEN": f"127.0.0.1:{port}", "BGD_DATABASE": cluster.url(database)}
        log = workdir / f"buildgrid-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*_dies_with_us("KILL"), str(BGD), "server", "start", str(CONFIG)], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir, env=env)
        server = BuildGrid(f"grpc://127.0.0.1:{port}", port, proc, log, database, cluster)
        if _wait_answering(server, timeout):
            return server
        _stop(proc)
        last = _tail(log)
    raise RuntimeError(f"BuildGrid did not come up; log tail:\n{last}")


@contextlib.contextmanager
def running_server(cluster: Cluster) -> Iterator[BuildGrid]:
    """A server for the ``with`` block; afterwards stopped, its database dropped, its log gone."""
    server = start_server(cluster, cluster.dir)
    try:
        yield server
    finally:
        server.stop()
        cluster.drop_database(server.database)
        server.log.unlink(missing_ok=True)


def _wait_answering(server: BuildGrid, timeout: float) -> bool:
    """Poll a raw GetCapabilities (an empty request serialises to no bytes, so no protos are needed)."""
    import grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary("/build.bazel.remote.execution.v2.Capabilities/GetCapabilities")
        while time.monotonic() < deadline and server.process.poll() is None:
            try:
                call(b"", timeout=2)
                return True
            except grpc.RpcError:
                time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_worker(url: str, cache_dir: Path, name: str, jobs: int = 1, timeout: float = 60.0,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``irctl worker`` (this checkout's, through ``sys.executable``) and return once it says its bot
    session exists. Its merged stdout/stderr lines collect in ``proc.lines`` (a list, appended as they come).
    Stop it with ``stop_worker`` (or use the ``workers`` fixture, which does)."""
    cmd = [*_dies_with_us("TERM"), sys.executable, "-m", "irctl", "worker", "--server", url, "--name", name, "--cache-dir", str(cache_dir),
           "--jobs", str(jobs)]
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, text=True, errors="replace")
    lines: list[str] = []
    said_ready, settled = threading.Event(), threading.Event()
    expected = READY.format(name=name)

    def drain() -> None:  # keeps reading after "ready" so a chatty worker never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip() == expected:
                said_ready.set()
                settled.set()
        settled.set()  # EOF: the worker exited without saying it

    threading.Thread(target=drain, name=f"worker-{name}", daemon=True).start()
    proc.lines = lines  # type: ignore[attr-defined]
    settled.wait(timeout)
    if not said_ready.is_set():
        stop_worker(proc)
        tail = "\n".join(lines[-30:])
        raise RuntimeError(f"irctl worker {name} did not say {expected!r} within {timeout:.0f}s "
                           f"(exit {proc.returncode}); output tail:\n{tail}")
    return proc


def stop_worker(proc: subprocess.Popen, grace: float = 20.0) -> int | None:
    """SIGTERM (the worker finishes or abandons its step and exits 0), SIGKILL after ``grace``; returns the
    exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def listening_sockets(pid: int) -> list[str]:
    """The local addresses (``host:port``, IPv6 hosts in brackets) of the TCP sockets ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                found.append(_address(cols[1], v6))
    return found


def _address(field_: str, v6: bool) -> str:
    """/proc/net/tcp* print addresses as 32-bit words in host (little-endian) order."""
    hexaddr, hexport = field_.split(":")
    raw = b"".join(bytes.fromhex(hexaddr[i:i + 8])[::-1] for i in range(0, len(hexaddr), 8))
    host = socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, raw)
    return f"[{host}]:{int(hexport, 16)}" if v6 else f"{host}:{int(hexport, 16)}"


@pytest.fixture(scope="session")
def buildgrid_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL cluster, shared by every BuildGrid server the session starts."""
    require()
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def buildgrid(buildgrid_cluster: Cluster) -> Iterator[BuildGrid]:
    """One BuildGrid server for the session: its action cache and CAS carry over from test to test."""
    with running_server(buildgrid_cluster) as server:
        yield server


@pytest.fixture
def fresh_buildgrid(buildgrid_cluster: Cluster) -> Iterator[BuildGrid]:
    """An empty BuildGrid server for one test (no action cache, CAS, queue or bots), stopped afterwards."""
    with running_server(buildgrid_cluster) as server:
        yield server


@pytest.fixture
def workers() -> Iterator[Callable[..., subprocess.Popen]]:
    """``workers(url, cache_dir, name, jobs=1)`` → a started ``irctl worker``; all stopped after the test."""
    started: list[subprocess.Popen] = []

    def start(url: str, cache_dir: Path, name: str, jobs: int = 1, **kwargs) -> subprocess.Popen:
        proc = start_worker(url, cache_dir, name, jobs, **kwargs)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            stop_worker(proc)
