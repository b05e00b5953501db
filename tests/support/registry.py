"""Session-scoped pytest fixture: Debian's ``docker-registry`` (distribution v2) on 127.0.0.1.

Import the fixture into a test module (``from tests.support.registry import registry  # noqa: F401``);
it yields ``"127.0.0.1:PORT"``. Storage and config live in a temp dir removed afterwards. Tests using it
are skipped when the binary is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

BINARY = "/usr/bin/docker-registry"

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: irctl-test-secret
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(workdir: Path, timeout: float = 20.0, extra: str = "") -> tuple[subprocess.Popen, str]:
    """Start a registry storing under ``workdir`` (``extra``: more top-level config, e.g. an ``auth:``
    section); returns the process and ``host:port``."""
    last = ""
    for _ in range(5):  # a port can be taken between probing and binding: retry
        port = _free_port()
        (workdir / "storage").mkdir(parents=True, exist_ok=True)
        cfg = workdir / "config.yml"
        cfg.write_text(CONFIG.format(root=workdir / "storage", port=port) + extra)
        log = open(workdir / "registry.log", "ab")
        # docker-registry reads REGISTRY_* variables as overrides of its config file: none of ours
        # (skopeo's REGISTRY_AUTH_FILE, set for the rootless suite) may reach it
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        proc = subprocess.Popen([BINARY, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        addr = f"127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://{addr}/v2/", timeout=1).status_code in (200, 401):  # 401: it asks for auth
                    return proc, addr
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        stop_registry(proc)
        last = (workdir / "registry.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"docker-registry did not come up; log tail:\n{last}")


def stop_registry(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    if not shutil.which(BINARY):
        pytest.skip(f"{BINARY} not installed")
    workdir = Path(tempfile.mkdtemp(prefix="irctl-registry-"))
    proc, addr = start_registry(workdir)
    try:
        yield addr
    finally:
        stop_registry(proc)
        shutil.rmtree(workdir, ignore_errors=True)
