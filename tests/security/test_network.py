"""Steps' networks, as root and rootless: `default` is a private namespace per step (slirp4netns) from
which the host's loopback services are unreachable but the outside world is; `none` is loopback only;
`host` (RUN --network=host, or `irctl build --network host`) needs --allow network.host, refused up front
otherwise; the network helper never outlives irctl, not even a SIGKILLed one."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.rootless.conftest import user_cli  # noqa: F401  (fixture)
from tests.security.conftest import write_ctx
from tests.security.sandbox_support import builder  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"host-secret-7c1e\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_server():
    """An HTTP server on the host's 127.0.0.1 (a stand-in for a local admin API, a metadata proxy…)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _probe(port: int) -> str:
    """Shell that records the interfaces, the resolv.conf and whether each address reaches the server."""
    get = "(printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 1)"  # stdin kept open: busybox nc may quit at its EOF
    tries = "; ".join(f"({get} | timeout 5 nc -w 3 {addr} {port}) > /r/{name} 2>&1"
                      for name, addr in (("loopback", "127.0.0.1"), ("gateway", "10.0.2.2")))
    return ("mkdir /r; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /r/ifaces; "
            f"cat /etc/resolv.conf > /r/resolv; {tries}; true")


def _host_ifaces() -> list[str]:
    return sorted(line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:])


def test_default_network_is_private(builder, loopback_server):
    r, out = builder.build(f"FROM busybox\nRUN {_probe(loopback_server)}\n")
    assert r.code == 0, r.stderr
    assert sorted((out / "r" / "ifaces").read_text().split()) == ["lo", "tap0"]
    assert (out / "r" / "resolv").read_text().splitlines()[0] == "nameserver 10.0.2.3"
    for name in ("loopback", "gateway"):  # the step's own lo; slirp's host alias with host loopback disabled
        assert "host-secret" not in (out / "r" / name).read_text(), name


def test_host_network_needs_the_grant(builder, loopback_server):
    dockerfile = f"FROM busybox\nRUN --network=host {_probe(loopback_server)}\n"
    r, _ = builder.build(dockerfile)
    assert r.code != 0
    assert "network.host" in r.stderr and "--allow network.host" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r, _ = builder.build(f"FROM busybox\nRUN {_probe(loopback_server)}\n", "--network", "host")
    assert r.code != 0
    assert "--network host" in r.stderr and "--allow network.host" in r.stderr, r.stderr
    # granted: the host's namespace, its loopback service included
    for args in ((), ("--network", "host")):
        df = dockerfile if not args else f"FROM busybox\nRUN {_probe(loopback_server)}\n"
        r, out = builder.build(df, "--allow", "network.host", *args)
        assert r.code == 0, r.stderr
        assert "host-secret" in (out / "r" / "loopback").read_text()
        if builder.mode == "root":
            assert sorted((out / "r" / "ifaces").read_text().split()) == _host_ifaces()


def test_network_none_by_flag_and_by_step(builder, loopback_server):
    r, out = builder.build(f"FROM busybox\nRUN {_probe(loopback_server)}\n")  # cached, with the default network
    assert r.code == 0 and sorted((out / "r" / "ifaces").read_text().split()) == ["lo", "tap0"], r.stderr
    # --network none is part of the step's cache key: not the cached default-network result
    for df, args in ((f"FROM busybox\nRUN {_probe(loopback_server)}\n", ("--network", "none")),
                     (f"FROM busybox\nRUN --network=none {_probe(loopback_server)}\n", ())):
        r, out = builder.build(df, *args)
        assert r.code == 0, r.stderr
        assert (out / "r" / "ifaces").read_text().split() == ["lo"]
        assert "host-secret" not in (out / "r" / "loopback").read_text()


def test_unknown_network_mode_is_refused(builder):
    r, _ = builder.build("FROM busybox\nRUN true\n", "--network", "bridge")
    assert r.code != 0 and "--network 'bridge'" in r.stderr and "Traceback" not in r.stderr


def _outside() -> str | None:
    """A name the host can resolve and reach on port 80 (the package mirror), else None."""
    try:
        addr = socket.getaddrinfo("deb.debian.org", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        socket.create_connection((addr, 80), timeout=5).close()
    except OSError:
        return None
    return "deb.debian.org"


def test_default_network_reaches_the_outside(builder):
    name = _outside()
    if name is None:
        pytest.skip("the host itself cannot reach deb.debian.org:80")
    # DNS through slirp4netns's forwarder (busybox's own resolver), then TCP to the address it gave
    script = (f"nslookup {name} > /dns 2>&1; addr=$(grep -A9 '^Name:' /dns | sed -n 's/^Address[^:]*: *//p' "
              "| grep -v : | head -1); echo \"$addr\" > /addr; "
              f"(printf 'HEAD / HTTP/1.0\\r\\nHost: {name}\\r\\n\\r\\n'; sleep 2) | timeout 10 nc -w 5 $addr 80 "
              "| head -1 > /http")
    r, out = builder.build(f"FROM busybox\nRUN {script}\n")
    assert r.code == 0, r.stderr
    assert (out / "addr").read_text().strip(), (out / "dns").read_text()
    assert (out / "http").read_text().startswith("HTTP/1."), (out / "http").read_text()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def test_network_helper_dies_with_a_killed_irctl(tmp_path, layout_ctx):
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo started; sleep 60\n"})
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.Popen([sys.executable, "-m", "irctl", "build", str(ctx), "--progress", "plain", *layout_ctx],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                         stdin=subprocess.DEVNULL)
    slirp = []
    try:
        deadline = time.monotonic() + 60
        while not slirp and time.monotonic() < deadline:
            slirp = [c for c in _children(p.pid) if "slirp4netns" in " ".join(_cmdline(c)[:1])]
            time.sleep(0.05)
        assert slirp, "no slirp4netns child seen"
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_cmdline(s) and "slirp4netns" in _cmdline(s)[0] for s in slirp):
        time.sleep(0.1)
    assert not any(_cmdline(s) and "slirp4netns" in _cmdline(s)[0] for s in slirp), "slirp4netns outlived irctl"
    # the next build reaps the container the killed one left (and works)
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo again\n")
    r = subprocess.run([sys.executable, "-m", "irctl", "build", str(ctx), "--progress", "plain", *layout_ctx],
                       capture_output=True, text=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr


def test_every_step_gets_a_fresh_namespace(builder):
    """The pool only starts networks ahead: no two steps share one (nor state left in it)."""
    r, out = builder.build("FROM busybox\nRUN readlink /proc/self/ns/net > /a; cat /proc/net/tcp | wc -l > /ta; "
                           "nc -l -p 7777 -e true & sleep 0.2\n"
                           "RUN readlink /proc/self/ns/net > /b; (echo x; sleep 1) | timeout 3 nc 127.0.0.1 7777 "
                           "> /probe 2>&1; echo $? >> /probe\n")
    assert r.code == 0, r.stderr
    a, b = (out / "a").read_text().strip(), (out / "b").read_text().strip()
    assert a.startswith("net:[") and a != b
    assert (out / "probe").read_text().splitlines()[-1] != "0"  # the first step's listener is gone


def test_solve_refuses_host_network_without_the_grant(tmp_path, layout_ctx):
    """A third party's IR asking for the host's network gets it only from the command line."""
    from tests.support.cli import irctl

    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN --network=host true\nRUN true\n"})
    graph = tmp_path / "g.irb"
    r = irctl("compile", ctx, "-o", graph, *layout_ctx)
    assert r.code == 0, r.stderr
    env = {"IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    layout = layout_ctx[1].split("=", 1)[1].removeprefix("oci-layout://").rsplit(":", 1)[0]
    r = irctl("solve", graph, "--progress", "plain", "--oci-layout", f"busybox={layout}", env=env)
    assert r.code != 0 and "network=host" in r.stderr and "--allow network.host" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = irctl("solve", graph, "--progress", "plain", "--oci-layout", f"busybox={layout}", "--allow", "network.host",
              env=env)
    assert r.code == 0, r.stderr


def _dns_stub(sock: socket.socket, stop: threading.Event) -> None:
    """Answer every A query with 192.0.2.77 (enough DNS for busybox's nslookup)."""
    import struct

    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(512)
        except OSError:  # the timeout included
            continue
        question = data[12:12 + data[12:].index(b"\0") + 5]
        is_a = struct.unpack("!H", question[-4:-2])[0] == 1
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 77]) if is_a else b""
        sock.sendto(data[:2] + struct.pack("!HHHHH", 0x8180, 1, int(is_a), 0, 0) + question + answer, addr)


def test_dns_works_with_a_loopback_host_resolver(tmp_path, layout_ctx):
    """A host whose resolver is on its loopback (systemd-resolved's 127.0.0.53): the step cannot reach the
    host's loopback, yet its DNS (slirp4netns's forwarder, which asks from the host side) still works."""
    if os.geteuid() != 0:
        pytest.skip("needs root: binds port 53 and a private mount namespace")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 53))
    except OSError as e:
        sock.close()
        pytest.skip(f"127.0.0.1:53 busy: {e}")
    stop = threading.Event()
    stub = threading.Thread(target=_dns_stub, args=(sock, stop), daemon=True)
    stub.start()
    try:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\nsearch example.test\n")
        ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN cat /etc/resolv.conf > /resolv; "
                                                         "nslookup build.example > /dns 2>&1\n"})
        out = tmp_path / "out"
        build = [sys.executable, "-m", "irctl", "build", str(ctx), "--progress", "plain", *layout_ctx,
                 "--output", f"type=local,dest={out}"]
        r = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                            str(resolv), *build], capture_output=True, text=True, cwd=ROOT, timeout=120,
                           env={**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert (out / "resolv").read_text() == "nameserver 10.0.2.3\nsearch example.test\n"
        assert "192.0.2.77" in (out / "dns").read_text(), (out / "dns").read_text()
    finally:
        stop.set()
        stub.join()
        sock.close()


def test_no_usable_tun_device_is_a_clear_error(monkeypatch, tmp_path):
    from backend.runtime import netns

    monkeypatch.setattr(netns, "TUN", str(tmp_path / "no-tun"))
    with pytest.raises(netns.NetworkError, match=r"chmod 0666 .*--network none"):
        netns.StepNetwork().start()
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    with pytest.raises(netns.NetworkError, match="slirp4netns is not installed"):
        netns.StepNetwork().start()


def test_pool_hands_out_fresh_networks_and_leaves_no_helper():
    from backend.runtime import netns

    pool = netns.NetworkPool()
    pool.prestart()
    nets = [pool.take() for _ in range(3)]
    try:
        paths = set()
        for net in nets:
            net.wait_ready()
            paths.add(os.stat(net.path).st_ino)
        assert len(paths) == 3  # three distinct namespaces
        helpers = [n.proc.pid for n in nets]
    finally:
        for net in nets:
            net.close()
        pool.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and "slirp" in " ".join(_cmdline(p))
                                              for p in helpers):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() and "slirp" in " ".join(_cmdline(p)) for p in helpers)
    time.sleep(0.5)  # a prestart still under way closes its network itself once it sees the pool closed
    assert not [c for c in _children(os.getpid()) if "slirp4netns" in " ".join(_cmdline(c)[:1])]
