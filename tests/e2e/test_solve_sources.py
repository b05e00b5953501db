"""Solver sources end to end: a loopback registry image (lazy pull, offline cached rebuild), ssh agents,
the --jobs cap, http sources."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from backend.entitlements import Entitlements
from backend.events import Recorder
from backend.solve.solver import SolveOptions, solve
from ir import builder as b
from tests.e2e.conftest import PATH, Solving, read_file
from tests.support.registry import registry  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pushed(registry: str, busybox_layout: Path) -> tuple[str, str]:  # noqa: F811
    """(reference, manifest digest) of busybox pushed to the loopback registry."""
    ref = f"{registry}/irctl-test/busybox:latest"
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{busybox_layout}:latest",
                    f"docker://{ref}"], check=True, capture_output=True)
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return ref, out


def test_registry_image_lazy_pull_and_offline_cached_rebuild(tmp_path: Path, pushed: tuple[str, str]) -> None:
    ref, digest = pushed
    cache = tmp_path / "cache"
    base = b.image(ref).with_env("PATH", PATH)
    step = base.run(["sh", "-c", "echo from-registry > /r"])
    res = solve(b.build_document({"default": step}), ["default"], SolveOptions(cache_dir=cache))
    assert read_file(res["default"], "/r") == b"from-registry\n"
    assert res["default"].layers[0].is_dir()

    # Pinned by digest on an address where nothing listens: the manifest is in the store, the exec
    # result is cached (its key uses the image's identity, not its reference): no network at all.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    moved = b.image(f"{dead}/irctl-test/busybox", digest=digest).with_env("PATH", PATH)
    rec = Recorder()
    again = solve(b.build_document({"default": moved.run(["sh", "-c", "echo from-registry > /r"])}), ["default"],
                  SolveOptions(cache_dir=cache, on_event=rec))
    assert rec.of("started") == []
    assert again["default"].identity == res["default"].identity


def test_image_layers_are_extracted_only_when_needed(tmp_path: Path, pushed: tuple[str, str]) -> None:
    ref, digest = pushed
    cache = tmp_path / "cache"
    only_meta = b.image(ref, digest=digest)
    res = solve(b.build_document({"default": only_meta}), ["default"], SolveOptions(cache_dir=cache, materialize=False))
    assert res["default"].identity == digest
    assert res["default"].image is not None and res["default"].image.config["Cmd"] == ["sh"]
    assert not any(p.is_dir() for p in res["default"].layers)  # nothing extracted, nothing downloaded
    res = solve(b.build_document({"default": only_meta}), ["default"], SolveOptions(cache_dir=cache))
    assert all(p.is_dir() for p in res["default"].layers)


@pytest.mark.skipif(shutil.which("ssh-agent") is None, reason="ssh-agent missing (apt-get install openssh-client)")
def test_ssh_agent_is_forwarded_through_a_proxy_socket(solving: Solving, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            threading.Event().wait(0.05)
        # Inside: the socket is there with the requested mode; busybox has no unix-socket client, so
        # forwarding itself is checked from the host through the same proxy class below.
        step = solving.base().run(["sh", "-c", "test -S /run/ssh.sock && ls -ln /run/ssh.sock | cut -c1-10 > /mode"],
                                  mounts=[b.ssh("/run/ssh.sock", mode=0o600)])
        res = solving.solve(step, ssh={"default": sock})
        assert read_file(res["default"], "/mode") == b"srw-------\n"
        assert not Path(res["default"].layers[-1], "run", "ssh.sock").exists()

        from backend.runtime.sshproxy import SSHProxy

        with SSHProxy(sock, tmp_path) as proxy, socket.socket(socket.AF_UNIX) as c:
            c.connect(str(proxy.path))
            c.sendall(b"\0\0\0\1\x0b")  # SSH_AGENTC_REQUEST_IDENTITIES
            reply = c.recv(64)
        assert reply[4] == 12  # SSH_AGENT_IDENTITIES_ANSWER
    finally:
        agent.terminate()
        agent.wait()


def test_jobs_caps_concurrent_execs(solving: Solving) -> None:
    base = solving.base()
    stages = [base.with_meta(f"s{i}").run(["sh", "-c", f"echo begin; sleep 0.5; echo end; echo {i} > /f{i}"])
              for i in range(3)]
    solving.solve(stages[0].merge(stages[1:]), jobs=1)
    lines = [e.text for e in solving.last.of("log")]
    assert lines == ["begin", "end"] * 3  # one at a time: never two begins in a row


def test_http_source_checksum_verified_and_cached(solving: Solving, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    (served / "tool.sh").write_bytes(b"echo tool\n")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import hashlib

        url = f"http://127.0.0.1:{server.server_port}/tool.sh"
        good = "sha256:" + hashlib.sha256(b"echo tool\n").hexdigest()
        src = b.http(url, checksum=good, mode=0o755)
        loopback = Entitlements(network_private=True)  # the server is on the host's loopback
        res = solving.solve(solving.base().copy(src, "/tool.sh", "/usr/local/bin/tool", create_dest_path=True),
                            entitlements=loopback)
        assert read_file(res["default"], "/usr/local/bin/tool") == b"echo tool\n"
        solving.solve(solving.base().copy(src, "/tool.sh", "/usr/local/bin/tool", create_dest_path=True),
                      entitlements=loopback)
        assert solving.ran() == []
        with pytest.raises(Exception, match="expected checksum"):
            solving.solve(b.http(url, checksum="sha256:" + "0" * 64), entitlements=loopback)
    finally:
        server.shutdown()
    assert os.path.isdir(solving.cache)
