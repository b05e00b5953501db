"""Even chosen explicitly, a Python build file runs in the sandbox (frontends/pydsl/sandbox.py).

Each hostile build file tries one thing a program on the host could do — read /etc/shadow, $HOME,
the context or the caller's environment, reach a loopback server, write outside its tmpfs, spawn
processes (a fork bomb), allocate 10 GB, loop or sleep forever, flood its output, talk nonsense to
the parent over the pipe — and must fail with a located error (or, for the output flood, be cut),
with nothing changed on the host.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from frontends import BuildRequest, FrontendError, ResolvedImage
from frontends.pydsl import FRONTEND
from ir import ops
from tests.support.cli import irctl
from tests.rootless.conftest import user_cli  # noqa: F401  (fixture)

HEAD = "from frontends.pydsl import image, target\n"
TAIL = 'target("default", image("busybox"))\n'


class Resolver:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def resolve_image(self, ref: str, platform: ops.Platform) -> ResolvedImage:
        self.calls.append(ref)
        return ResolvedImage("docker.io/library/busybox:latest", "sha256:" + "b" * 64,
                             {"config": {"Env": ["PATH=/bin"]}}, platform)

    def resolve_oci_layout(self, name: str, ref: str, platform: ops.Platform) -> ResolvedImage:
        raise LookupError(name)


def compile_text(body: str, **kw) -> str:
    """Compile HEAD + body + TAIL in the sandbox; returns the error message ("" when it compiled)."""
    try:
        FRONTEND.compile(BuildRequest((HEAD + body + TAIL).encode(), filename="build.py", **kw), Resolver())
    except FrontendError as e:
        return str(e)
    return ""


def test_a_legitimate_build_file_compiles_and_resolves_through_the_parent() -> None:
    r = Resolver()
    out = FRONTEND.compile(BuildRequest((HEAD + "import os, json\nx = json.dumps({'a': 1})\n" + TAIL).encode(),
                                        filename="build.py"), r)
    assert r.calls == ["busybox"]
    assert out.document.roots


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/passwd", "/root/.bashrc", "/proc/1/environ",
                                  "/work", "/var/run/docker.sock", "/sys/kernel"])
def test_host_files_are_not_there(path: str) -> None:
    msg = compile_text(f"import os\nos.listdir({path!r}) if os.path.isdir({path!r}) else open({path!r}).read()\n"
                       f"assert not os.path.exists({path!r}), 'visible'\n")
    assert msg.startswith("build.py:3: ") or msg.startswith("build.py:2: "), msg


def _real_root() -> bool:
    from backend.userns import in_user_namespace

    return os.geteuid() == 0 and not in_user_namespace()


@pytest.mark.skipif(not _real_root(), reason="the caller's own files: a root-owned 0600 file needs real root")
def test_a_root_only_file_in_a_bound_directory_stays_unreadable() -> None:
    """The sandbox binds /usr and Python's prefix read-only; its uid 65534 was the caller's uid
    outside, so as root it read any root-owned 0600 file there (found by the review after issue 11).
    Now the child is the host's nobody."""
    import sysconfig

    probes = [Path("/usr/local/share") / f".irctl-pydsl-probe-{os.getpid()}",
              Path(sysconfig.get_paths()["stdlib"]) / f".irctl-pydsl-probe-{os.getpid()}"]
    try:
        for p in probes:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"root-only-in-usr-9d2e")
            os.close(fd)
            msg = compile_text(f"import os\nassert os.path.exists({str(p)!r}), 'not bound'\nopen({str(p)!r}).read()\n")
            assert msg.startswith("build.py:4: PermissionError"), (p, msg)
        msg = compile_text("import os\nassert os.getuid() == 65534 and os.getgid() == 65534 and not os.getgroups()\n"
                           "assert open('/proc/self/uid_map').read().split() in (['65534', '65534', '1'], "
                           "['0', '0', '1', '65534', '65534', '1']), 'map'\n"
                           "caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm'))]\n"
                           "assert all(l.split()[1] == '0' * 16 for l in caps), caps\n")
        assert msg == "" or "No such file" in msg, msg  # /proc may be absent: then the uid checks passed
    finally:
        for p in probes:
            p.unlink(missing_ok=True)


def test_home_context_cache_and_tmp_are_not_there(tmp_path: Path) -> None:
    home = Path.home() / f".irctl-sandbox-probe-{os.getpid()}"
    home.write_text("home secret")
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "f").write_text("context secret")
    try:
        for p in (home, tmp_path / "ctx" / "f", Path("/tmp") / tmp_path.name):
            msg = compile_text(f"open({str(p)!r}).read()\n")
            assert msg.startswith("build.py:2: FileNotFoundError"), (p, msg)
    finally:
        home.unlink()


def test_the_callers_environment_is_not_there(monkeypatch) -> None:
    monkeypatch.setenv("IRCTL_TEST_TOKEN", "hunter2-token")
    msg = compile_text("import os\nassert 'IRCTL_TEST_TOKEN' not in os.environ, 'leaked'\n"
                       "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'PWD'}, sorted(os.environ)\n"
                       "raise SystemExit(0)\n")
    assert msg == "build.py:5: the build file called exit(0)", msg


def test_no_network_not_even_loopback() -> None:
    got: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]

    def accept():
        try:
            conn, _ = srv.accept()
            got.append(conn.recv(100))
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        msg = compile_text(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).send(b'x')\n")
        assert msg.startswith("build.py:3: PermissionError"), msg
        msg = compile_text("import urllib.request\nurllib.request.urlopen('http://1.1.1.1/', timeout=1)\n")
        assert msg.startswith("build.py:3: "), msg
    finally:
        t.join()
        srv.close()
    assert got == []


@pytest.mark.parametrize("target", ["/usr/pwned", "/pwned", "/irctl/frontends/pwned", "/dev/pwned"])
def test_nothing_outside_its_tmpfs_is_writable(target: str) -> None:
    msg = compile_text(f"open({target!r}, 'w').write('x')\n")
    assert msg.startswith("build.py:2: OSError") or msg.startswith("build.py:2: PermissionError"), msg
    assert not Path(target).exists()


def test_its_tmpfs_is_private_and_bounded(tmp_path: Path) -> None:
    name = f"irctl-probe-{os.getpid()}"
    assert compile_text(f"open('/tmp/{name}', 'w').write('x')\n") == ""
    assert not Path("/tmp", name).exists()
    msg = compile_text("f = open('/tmp/big', 'wb')\nfor _ in range(64):\n    f.write(bytes(1 << 20))\n")
    assert msg.startswith("build.py:"), msg


@pytest.mark.parametrize("body", [
    "import os\nwhile True:\n    os.fork()\n",
    "import subprocess\nsubprocess.run(['/bin/true'])\n",
    "import os\nos.execv('/usr/bin/python3', ['python3'])\n",
    "import threading\nthreading.Thread(target=print).start()\n",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})\n",
])
def test_no_new_processes_or_threads(body: str) -> None:
    msg = compile_text(body)
    assert msg.startswith("build.py:"), msg
    assert "Error" in msg


def test_ten_gigabytes_is_a_located_memory_error() -> None:
    msg = compile_text("x = bytearray(10 << 30)\n")
    assert msg.startswith("build.py:2: MemoryError"), msg


def test_a_cpu_loop_and_a_sleep_are_cut_off(monkeypatch) -> None:
    monkeypatch.setenv("IRCTL_PYDSL_TIMEOUT", "2")
    t = time.monotonic()
    msg = compile_text("while True:\n    pass\n")
    assert msg.startswith("build.py: the build file used more than") or "longer than" in msg, msg
    msg = compile_text("import time\ntime.sleep(1000)\n")
    assert msg.startswith("build.py: the build file ran longer than 2 s"), msg
    assert time.monotonic() - t < 20


def test_output_flood_is_cut(capfd) -> None:
    msg = compile_text("import sys\nfor _ in range(200):\n    sys.stderr.write('y' * (1 << 20))\n"
                       "print('\\x1b]0;forged title\\x07')\n")
    assert msg == ""
    err = capfd.readouterr().err
    assert len(err) <= 70 << 10 and "\x1b" not in err


@pytest.mark.parametrize("frame", [
    "struct.pack('>I', 0xFFFFFFF0)",  # a 4 GB message
    "b'\\x00\\x00'",  # half a header, then silence
    "struct.pack('>I', 100) + b'x'",  # a short body, then silence
    "struct.pack('>I', 5) + b'\\xc1\\xc1\\xc1\\xc1\\xc1'",  # not msgpack
    "(lambda m: struct.pack('>I', len(m)) + m)(msgpack.packb({'op': 'resolve_image', 'ref': 5, 'platform': 1}))",
    "(lambda m: struct.pack('>I', len(m)) + m)(msgpack.packb({'op': 'run', 'argv': ['touch', '/tmp/x']}))",
    "(lambda m: struct.pack('>I', len(m)) + m)(msgpack.packb({'op': 'done', 'document': b'junk', 'warnings': []}))",
])
def test_a_hostile_child_cannot_make_the_parent_do_anything_else(frame: str, monkeypatch) -> None:
    """The build file writes its own frames to every fd that could be the reply pipe."""
    monkeypatch.setenv("IRCTL_PYDSL_TIMEOUT", "3")
    t = time.monotonic()
    msg = compile_text("import os, struct, msgpack\n"
                       f"data = {frame}\n"
                       "for fd in range(3, 20):\n"
                       "    try:\n        os.write(fd, data)\n    except OSError:\n        pass\n"
                       "import time\ntime.sleep(30)\n")
    assert time.monotonic() - t < 15
    assert msg.startswith(("build.py: the sandbox", "build.py: the sandboxed build file",
                           "build.py: the build file ran longer than 3 s")), msg


@pytest.mark.parametrize("frame", [
    "b'\\xdd' + struct.pack('>I', N) + b'\\x90' * N",  # 64 M empty arrays: 1 byte each on the wire
    "b'\\xdd' + struct.pack('>I', N) + b'\\x80' * N",  # empty maps
    "b'\\xdd' + struct.pack('>I', N // 4005) + (b'\\xdc' + struct.pack('>H', 4000) + b'\\x90' * 4000) * (N // 4005)",
    "b'\\xdd' + struct.pack('>I', N // 8005) + (b'\\xdc' + struct.pack('>H', 4000) + b'\\xd0\\x80' * 4000) * (N // 8005)",
])
def test_a_child_frame_that_decodes_huge_costs_the_parent_bounded_memory(tmp_path: Path, frame: str) -> None:
    """A frame under the size limit made of one-byte containers (or small ints) that msgpack turns
    into 64-byte objects: the parent (irctl, on the host) took 4.8 GB and 26 s for one (found by the
    review after issue 11).  Through the real CLI, measured alone."""
    from tests.security.measure import MIB, run_measured

    (tmp_path / "build.py").write_text(
        "import os, struct\n"
        f"N = (64 << 20) - 16\nbody = {frame}\ndata = struct.pack('>I', len(body)) + body\n"
        "for fd in range(3, 20):\n"
        "    try:\n        os.write(fd, data)\n    except OSError:\n        pass\n"
        "import time\ntime.sleep(30)\n")
    code, _, err, rss = run_measured([sys.executable, "-m", "irctl", "compile", "-f", str(tmp_path / "build.py"),
                                      str(tmp_path), "-o", str(tmp_path / "g.ir")], timeout=120)
    text = err.decode(errors="replace")
    assert code == 1 and "broke the protocol" in text and "Traceback" not in text, text
    assert rss < 256 * MIB, f"{rss / MIB:.0f} MiB"


def test_a_registry_error_body_never_reaches_the_build_file(tmp_path: Path) -> None:
    """The parent resolves images for the child, on any registry (a loopback one too, like FROM);
    the resolver's error quotes the registry's answer, so a build file asking for
    ``127.0.0.1:PORT/…`` read a loopback service's response body and wrote it into the image (found
    by the review after issue 11).  The child gets only "image lookup #N failed"; the user sees the reason
    when the build fails."""
    import http.server
    import subprocess

    secret = "loopback-service-body-5be1"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = ('{"errors":[{"code":"X","message":"%s"}]}' % secret).encode()
            self.send_response(404 if "/404/" in self.path else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        (tmp_path / "build.py").write_text(
            "import os, struct, msgpack\nfrom frontends.pydsl import image, scratch, target\n"
            "import fcntl, stat\n"
            "def mode(fd):\n    try:\n        return stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & 3\n"
            "    except OSError:\n        return None\n"
            "rd = [fd for fd in range(3, 20) if mode(fd) == 0][0]\nwr = [fd for fd in range(3, 20) if mode(fd) == 1][0]\n"
            "def ask(ref):  # straight over the pipe\n"
            "    m = msgpack.packb({'op': 'resolve_image', 'ref': ref, 'platform': ['linux', 'amd64', '']})\n"
            "    os.write(wr, struct.pack('>I', len(m)) + m)\n"
            "    n = struct.unpack('>I', os.read(rd, 4))[0]\n    data = b''\n"
            "    while len(data) < n:\n        data += os.read(rd, n - len(data))\n"
            "    return repr(msgpack.unpackb(data))\n"
            f"got = [ask('127.0.0.1:{port}/404/x:y'), ask('127.0.0.1:{port}/500/x:y')]\n"
            "target('default', scratch().label('got', ' | '.join(got)))\n")
        r = irctl("compile", "--frontend", "pydsl", "-f", tmp_path / "build.py", tmp_path, "-o", tmp_path / "g.ir",
                  "--cache-dir", tmp_path / "cache", timeout=120)
        assert r.code == 0, r.stderr
        dump = subprocess.run([sys.executable, "-m", "irctl", "dump", "--format", "json", str(tmp_path / "g.ir")],
                              capture_output=True, text=True, check=True).stdout
        assert "image lookup #2 failed" in dump and secret not in dump, dump
        (tmp_path / "fail.py").write_text(f"from frontends.pydsl import image, target\n"
                                          f"target('default', image('127.0.0.1:{port}/404/x:y'))\n")
        r = irctl("compile", "--frontend", "pydsl", "-f", tmp_path / "fail.py", tmp_path, "-o", tmp_path / "f.ir",
                  "--cache-dir", tmp_path / "cache", timeout=120)
        assert r.code == 1 and "fail.py:2: " in r.stderr and secret in r.stderr, r.stderr  # the user sees why
    finally:
        server.shutdown()


def test_a_child_that_stops_reading_cannot_hang_the_parent(monkeypatch) -> None:
    """It asks for an image and never reads the (large) answer: the parent's write times out."""
    monkeypatch.setenv("IRCTL_PYDSL_TIMEOUT", "3")

    class Big(Resolver):
        def resolve_image(self, ref, platform):
            r = super().resolve_image(ref, platform)
            return ResolvedImage(r.ref, r.digest, {"config": {"Env": ["X=" + "y" * (4 << 20)]}}, platform)

    body = ("import os, struct, msgpack\n"
            "m = msgpack.packb({'op': 'resolve_image', 'ref': 'busybox', 'platform': ['linux', 'amd64', '']})\n"
            "for fd in range(3, 20):\n"
            "    try:\n        os.write(fd, struct.pack('>I', len(m)) + m)\n    except OSError:\n        pass\n"
            "import time\ntime.sleep(30)\n")
    t = time.monotonic()
    with pytest.raises(FrontendError, match="longer than 3 s"):
        FRONTEND.compile(BuildRequest((HEAD + body + TAIL).encode(), filename="build.py"), Big())
    assert time.monotonic() - t < 15


def test_the_cli_reports_a_sandbox_error_on_one_located_line(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "build.py").write_text(HEAD + "open('/etc/shadow').read()\n" + TAIL)
    r = irctl("compile", ctx, "-f", ctx / "build.py", "-o", tmp_path / "o.ir")
    assert r.code == 1
    assert r.stderr == "build.py:2: FileNotFoundError: [Errno 2] No such file or directory: '/etc/shadow'\n"


def test_without_namespaces_it_fails_closed(tmp_path: Path, monkeypatch) -> None:
    """A bwrap that cannot create the sandbox (here: a stand-in that fails as bwrap does) stops the
    build with the reason; the file is never run some other way."""
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    msg = compile_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    assert "could not create one" in msg and "No permissions" in msg, msg
    assert not (tmp_path / "ran").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "bubblewrap (bwrap) is not installed" in compile_text("\n")


def test_rootless_user_gets_the_same_sandbox(user_cli, tmp_path: Path) -> None:  # noqa: F811
    """As an unprivileged user (tests/rootless): the sandbox starts, the user's own files are not there."""
    ctx = user_cli.root / "pydsl-ctx"
    ctx.mkdir(exist_ok=True)
    (user_cli.home / "own-secret").write_text("user secret")
    tail = 'from frontends.pydsl import scratch\ntarget("default", scratch())\n'  # no registry needed
    (ctx / "build.py").write_text(HEAD + "import os\nprint(os.getuid())\n" + tail)
    (ctx / "evil.py").write_text(HEAD + f"open({str(user_cli.home / 'own-secret')!r}).read()\n" + tail)
    user_cli.chown(user_cli.root)
    ok = user_cli.run("compile", ctx, "-f", ctx / "build.py", "-o", ctx / "o.ir", "--cache-dir", ctx / "cache")
    assert ok.returncode == 0, ok.stderr
    bad = user_cli.run("compile", ctx, "-f", ctx / "evil.py", "--frontend", "pydsl", "-o", ctx / "o2.ir",
                       "--cache-dir", ctx / "cache")
    assert bad.returncode == 1
    assert bad.stderr.startswith("evil.py:2: FileNotFoundError"), bad.stderr
