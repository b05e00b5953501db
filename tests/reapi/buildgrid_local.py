"""A BuildGrid server on loopback for tests/reapi, until tests/support/buildgrid.py (issue 16's shared
fixture) is merged: a throwaway PostgreSQL cluster run as ``irctl-test``, ``bgd migrate apply``, and
``bgd server start`` with an in-memory CAS.  Skips when the BuildGrid venv or PostgreSQL is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

VENV = Path(os.environ.get("IRCTL_BUILDGRID", "/opt/irctl-buildgrid"))
if not (VENV / "bin/bgd").exists() and Path("/tmp/bgvenv/bin/bgd").exists():
    VENV = Path("/tmp/bgvenv")
USER = "irctl-test"

CONFIG = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
connections:
  - !sql-connection &sql
    connection-string: postgresql+psycopg2://bg@127.0.0.1:{pg}/bgd
storages:
  - !lru-storage &main-storage
    size: 256MB
caches:
  - !lru-action-cache &main-action
    storage: *main-storage
    max-cached-refs: 4096
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &state
    sql: *sql
    action-cache: *main-action
    storage: *main-storage
    bot-session-keepalive-timeout: 10
instances:
  - name: ""
    services:
      - !action-cache
        cache: *main-action
      - !execution
        scheduler: *state
      - !bots
        scheduler: *state
      - !cas
        storage: *main-storage
      - !bytestream
        storage: *main-storage
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.pgdata = root / "pg"
        self.pg = _free_port()
        self.port = _free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"

    def _as_user(self, *args: str) -> None:
        subprocess.run(list(args), user=USER, check=True, capture_output=True, cwd=self.root)

    def start(self) -> None:
        os.chown(self.root, *_ids())
        self._as_user("initdb", "-D", str(self.pgdata), "-A", "trust", "-U", "bg")
        self._as_user("pg_ctl", "-D", str(self.pgdata), "-l", str(self.root / "pg.log"), "-o",
                      f"-p {self.pg} -k {self.pgdata} -c listen_addresses=127.0.0.1", "-w", "start")
        self._as_user("createdb", "-h", "127.0.0.1", "-p", str(self.pg), "-U", "bg", "bgd")
        subprocess.run([str(VENV / "bin/bgd"), "migrate", "apply", f"postgresql+psycopg2://bg@127.0.0.1:{self.pg}/bgd"],
                       check=True, capture_output=True)
        cfg = self.root / "bgd.yml"
        cfg.write_text(CONFIG.format(port=self.port, pg=self.pg))
        log = open(self.root / "bgd.log", "ab")
        self.procs.append(subprocess.Popen([str(VENV / "bin/bgd"), "server", "start", str(cfg)],
                                           stdout=log, stderr=log, start_new_session=True))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.procs[-1].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("bgd did not start: " + (self.root / "bgd.log").read_text()[-2000:])

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "stop"], user=USER,
                       capture_output=True, cwd=self.root)


def _ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="session")
def buildgrid():
    if not (VENV / "bin/bgd").exists() or not shutil.which("initdb") or os.geteuid() != 0:
        pytest.skip("needs BuildGrid's venv (IRCTL_BUILDGRID), PostgreSQL's initdb and root")
    root = Path(tempfile.mkdtemp(prefix="irctl-bgd-"))
    server = Server(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
