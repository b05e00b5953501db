"""``--load`` and ``--output type=docker`` without ``dest``: the image lands in the local engine, whose own
tools then see it (``docker image inspect``/``run``, ``podman image inspect``/``run``), with the image id irctl
reports; no engine, or an engine that refuses, is one line.

Docker is the anchors' dockerd (``../shared/anchors/setup.sh``), found through ``DOCKER_HOST`` (default
``unix:///run/anchor-docker.sock``); podman gets a store of its own under the test's temp dir. With ``CI=true``
a missing engine fails the test instead of skipping it: CI must prove the load.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socketserver
import subprocess
import tarfile
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e

ANCHOR_DOCKER = "unix:///run/anchor-docker.sock"
DOCKER = shutil.which("docker", path="/usr/bin:/bin") or shutil.which("docker") or "docker"  # Debian's client
LOADED = re.compile(r"^loaded (?P<what>.+) \(image id (?P<id>sha256:[0-9a-f]{64})\) into (?P<where>.+)$", re.M)


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the load tests: bash ../shared/anchors/setup.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker_host() -> str:
    host = os.environ.get("DOCKER_HOST") or ANCHOR_DOCKER
    try:
        ok = subprocess.run([DOCKER, "--host", host, "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        _missing(f"no Docker engine answers at {host}")
    return host


def _docker(host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, "--host", host, *args], capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture
def podman_env() -> Iterator[dict]:
    """podman with a store of its own (nothing of the machine's touched) and no Docker in sight. The store
    is under a short path: conmon's sockets live in it, and a path near 108 bytes makes ``podman run`` wait
    out conmon's 20 s timeout."""
    if shutil.which("podman") is None:
        _missing("podman is not installed")
    if Path("/var/run/docker.sock").exists():
        _missing("/var/run/docker.sock exists: --load would rightly prefer that Docker over podman")
    root = Path(tempfile.mkdtemp(prefix="irctl-podman-", dir="/tmp"))
    try:
        (root / "storage.conf").write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/graph"\n'
                                          f'runroot = "{root}/run"\n')
        yield {"CONTAINERS_STORAGE_CONF": str(root / "storage.conf")}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _podman(env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env={**clean, **env}, timeout=120)


def _ctx(tmp_path: Path, base: str) -> Path:
    return write(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nCOPY msg.txt /msg.txt\nRUN echo ran > /file\n"
                                                  'CMD ["cat", "/file"]\n', "msg.txt": "from the context\n"})


def _archive_config(path: Path) -> tuple[str, dict]:
    """The config digest and config of a docker archive, read with tarfile (independently of irctl)."""
    with tarfile.open(path) as tf:
        entry = json.load(tf.extractfile("manifest.json"))[0]
        config = tf.extractfile(entry["Config"]).read()
    return "sha256:" + entry["Config"].rsplit("/", 1)[1], json.loads(config)


def test_load_into_docker(tmp_path, busybox_ref, cache_env, docker_host):
    name = f"irctl-load-test/{uuid.uuid4().hex[:12]}:v1"
    archive = tmp_path / "image.tar"
    r = irctl("build", _ctx(tmp_path, busybox_ref), "--load", "-t", name, "--output", f"type=docker,dest={archive}",
              env={**cache_env, "DOCKER_HOST": docker_host})
    assert r.code == 0, r.stderr
    try:
        m = LOADED.search(r.stderr)
        assert m and m["what"] == name and m["where"] == f"Docker at {docker_host}", r.stderr
        config_digest, config = _archive_config(archive)  # the same image, written beside the load
        assert m["id"] == config_digest
        inspect = json.loads(_docker(docker_host, "image", "inspect", name).stdout)[0]
        assert inspect["Id"] == config_digest
        assert inspect["RepoTags"] == [name]
        assert inspect["Config"]["Cmd"] == ["cat", "/file"]
        assert inspect["RootFS"]["Layers"] == config["rootfs"]["diff_ids"] and len(config["rootfs"]["diff_ids"]) == 3
        run = _docker(docker_host, "run", "--rm", "--network", "none", name, "cat", "/file", "/msg.txt")
        assert run.stdout == "ran\nfrom the context\n"
    finally:
        _docker(docker_host, "image", "rm", "-f", name, check=False)


def test_output_type_docker_without_dest_loads_by_name_or_id(tmp_path, busybox_ref, cache_env, docker_host):
    name = f"irctl-load-test/{uuid.uuid4().hex[:12]}:named"
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY f /f\n", "f": uuid.uuid4().hex})
    env = {**cache_env, "DOCKER_HOST": docker_host}
    named = irctl("build", ctx, "--output", f"type=docker,name={name}", env=env)
    assert named.code == 0, named.stderr
    untagged = irctl("build", ctx, "--output", "type=docker", env=env)
    assert untagged.code == 0, untagged.stderr
    try:
        m = LOADED.search(named.stderr)
        assert m and m["what"] == name, named.stderr
        # untagged: loaded by id, and the id said
        said = re.search(r"^loaded untagged image (sha256:[0-9a-f]{64}) into Docker at (\S+)$", untagged.stderr, re.M)
        assert said and said[1] == m["id"] and said[2] == docker_host, untagged.stderr
        assert json.loads(_docker(docker_host, "image", "inspect", said[1]).stdout)[0]["RepoTags"] == [name]
    finally:
        _docker(docker_host, "image", "rm", "-f", name, check=False)


def test_load_into_podman_without_docker(tmp_path, busybox_ref, cache_env, podman_env):
    r = irctl("build", _ctx(tmp_path, busybox_ref), "--load", "-t", "irctl-load-test:podman",
              env={**cache_env, **podman_env, "DOCKER_HOST": ""})
    assert r.code == 0, r.stderr
    m = LOADED.search(r.stderr)
    assert m and m["where"] == "podman (containers-storage, root)", r.stderr
    inspect = _podman(podman_env, "image", "inspect", "irctl-load-test:podman")
    assert inspect.returncode == 0, inspect.stderr
    image = json.loads(inspect.stdout)[0]
    assert "sha256:" + image["Id"] == m["id"]
    assert image["RepoTags"] == ["localhost/irctl-load-test:podman"]
    assert len(image["RootFS"]["Layers"]) == 3
    # the VM may lack CAP_SYS_RESOURCE: podman must lower the limits rather than copy its own
    run = _podman(podman_env, "--runtime", "runc", "run", "--rm", "--network", "none", "--pull", "never",
                  "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "irctl-load-test:podman")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "ran\n"


def test_no_engine_reachable_is_one_line(tmp_path, busybox_ref, cache_env):
    if Path("/var/run/docker.sock").exists():
        pytest.skip("/var/run/docker.sock exists here")
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY f /f\n", "f": "x"})
    empty = tmp_path / "bin"
    empty.mkdir()
    r = irctl("build", ctx, "--progress", "plain", "--load", "-t", "x:1",
              env={**cache_env, "DOCKER_HOST": "", "PATH": str(empty)})
    assert r.code == 1
    assert "#1 " not in r.stderr  # said before the build, not after it
    assert r.stderr.splitlines()[-1] == ("error: --load: no container engine to load into: no Docker "
                                         "(/var/run/docker.sock absent, DOCKER_HOST unset); no podman or skopeo on PATH")


@pytest.mark.parametrize("host, says", [
    ("unix:///nonexistent/docker.sock", "error: --load: Docker at unix:///nonexistent/docker.sock (DOCKER_HOST): "
                                        "no such socket"),
    ("npipe:////./pipe/docker_engine", "error: --load: DOCKER_HOST=npipe:////./pipe/docker_engine: unsupported "
                                       "(unix:///PATH, tcp://HOST:PORT or ssh://HOST)"),
    ("/run/docker.sock", "error: --load: DOCKER_HOST=/run/docker.sock: expected unix:///PATH, tcp://HOST:PORT or "
                         "ssh://HOST"),
])
def test_a_docker_host_that_cannot_be_used_is_one_line(tmp_path, busybox_ref, cache_env, host, says):
    """The user named an engine: irctl never loads elsewhere instead (podman is installed here)."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY f /f\n", "f": "x"})
    r = irctl("build", ctx, "--load", env={**cache_env, "DOCKER_HOST": host})
    assert r.code == 1
    assert r.stderr.splitlines()[-1] == says


class _FakeDocker(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A Docker API that reads the whole upload, then answers ``answer`` (status, body)."""

    daemon_threads = True

    def __init__(self, path: str, answer: tuple[int, bytes]):
        self.answer = answer
        self.received = b""
        super().__init__(path, _FakeHandler)


class _FakeHandler(socketserver.StreamRequestHandler):
    def handle(self):
        if not self.rfile.readline():  # irctl's probe: connected, sent nothing
            return
        while self.rfile.readline() not in (b"\r\n", b""):  # headers (the body is chunked)
            pass
        body = b""
        while True:
            size = int(self.rfile.readline().strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                break
            body += self.rfile.read(size)
            self.rfile.readline()
        self.server.received = body
        status, data = self.server.answer
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # irctl reads only so much of it
            self.wfile.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n" % (status, len(data)) + data)


@pytest.mark.parametrize("status, body, says", [
    (200, b'{"stream":"Loading\\n"}\r\n{"errorDetail":{},"error":"bad \\u001b]0;owned\\u0007 layer\\nforged"}\r\n',
     r"refused the image: bad \x1b]0;owned\x07 layer forged"),
    (500, json.dumps({"message": "no space\r\n#3 DONE " + "x" * 5000}).encode(),
     "refused the image (HTTP 500): " + ("no space #3 DONE " + "x" * 5000)[:300] + "…"),
    (200, b"[" * (2 << 20), "answered without saying it loaded the image: " + "[" * 300 + "…"),  # read to a bound
], ids=["error-event-with-controls", "http-error-long", "huge-garbage"])
def test_the_engines_answer_is_bounded_and_printed_safely(tmp_path, busybox_ref, cache_env, status, body, says):
    sock = str(tmp_path / "docker.sock")
    server = _FakeDocker(sock, (status, body))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY f /f\n", "f": "x"})
        r = irctl("build", ctx, "--load", "-t", "x:1", env={**cache_env, "DOCKER_HOST": f"unix://{sock}"})
    finally:
        server.shutdown()
        server.server_close()
    with tarfile.open(fileobj=io.BytesIO(server.received)) as tf:  # the whole archive arrived
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] == ["x:1"]
    assert r.code == 1
    last = r.stderr.splitlines()[-1]
    assert last == f"error: --load: Docker at unix://{sock} {says}"
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr


def test_an_engine_over_tcp_is_the_same_api(tmp_path, busybox_ref, cache_env):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _FakeHandler)
    server.daemon_threads = True
    server.answer, server.received = (200, b'{"stream":"Loaded image: x:1\\n"}\r\n'), b""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"tcp://127.0.0.1:{server.server_address[1]}"
    try:
        ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY f /f\n", "f": "x"})
        r = irctl("build", ctx, "--load", "-t", "x:1", env={**cache_env, "DOCKER_HOST": host})
    finally:
        server.shutdown()
        server.server_close()
    assert r.code == 0, r.stderr
    assert LOADED.search(r.stderr)["where"] == f"Docker at {host}"
    with tarfile.open(fileobj=io.BytesIO(server.received)) as tf:
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] == ["x:1"]


@pytest.mark.parametrize("script, code, says", [
    ('cat > "$OUT"; echo "Loaded image: x:1"', 0, None),
    ('cat > "$OUT"; printf "Error: \\033[2Jno\\n" >&2; exit 3', 1,
     r"error: --load: Docker at ssh://builder@example.invalid (docker load): docker load failed (exit 3): "
     r"Error: \x1b[2Jno"),
], ids=["loaded", "refused"])
def test_ssh_and_tls_engines_go_through_the_docker_cli(tmp_path, busybox_ref, cache_env, script, code, says):
    """irctl speaks neither ssh nor TLS to an engine: the docker CLI does, reading the archive on its stdin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'load -q' ] || exit 9\n{script}\n")
    (bin_dir / "docker").chmod(0o755)
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY f /f\n", "f": "x"})
    got = tmp_path / "received.tar"
    r = irctl("build", ctx, "--load", "-t", "x:1", env={**cache_env, "DOCKER_HOST": "ssh://builder@example.invalid",
                                                       "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(got)})
    assert r.code == code, r.stderr
    with tarfile.open(got) as tf:  # the whole archive went to the CLI
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] == ["x:1"]
    if says is None:
        assert LOADED.search(r.stderr)["where"] == "Docker at ssh://builder@example.invalid (docker load)"
    else:
        assert r.stderr.splitlines()[-1] == says


def test_several_platforms_are_refused_as_buildx_does():
    from irctl.errors import UserError
    from irctl.loading import load_image

    with pytest.raises(UserError) as e:
        load_image([object(), object()], store=None, names=["x:1"], options=None)
    assert str(e.value) == ("--load: docker exporter does not currently support exporting manifest lists "
                            "(2 platforms); push them, or --output type=oci,dest=… for an index")
