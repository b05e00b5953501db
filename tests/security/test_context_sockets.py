"""A live socket in the build context (an agent's, a docker.sock under a home dir used as context) is
not part of the context: it is never hashed, COPY skips it, and a RUN bind mount of the context
must not hand it to the step either (BuildKit transfers no sockets), or an untrusted Dockerfile
could talk to the host service behind it."""

from __future__ import annotations

import socket

import pytest

from tests.support.cli import irctl
from tests.security.conftest import write_ctx

pytestmark = pytest.mark.e2e


@pytest.fixture
def live_socket(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "agent").mkdir()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(ctx / "agent" / "host.sock"))
    s.listen(1)
    yield ctx
    s.close()


@pytest.mark.parametrize("source", [".", "agent"])
def test_a_context_bind_mount_does_not_expose_a_host_socket(tmp_path, layout_ctx, live_socket, source):
    run = f"RUN --mount=type=bind,source={source},target=/src sh -c 'find /src; test -z \"$(find /src -type s)\"'\n"
    ctx = write_ctx(live_socket, {"Dockerfile": "FROM busybox\n" + run, "agent/other": "x\n"})
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr[-2000:]


def test_a_context_bind_mount_of_the_socket_itself_is_refused(tmp_path, layout_ctx, live_socket):
    run = "RUN --mount=type=bind,source=agent/host.sock,target=/s ls -la /s\n"
    ctx = write_ctx(live_socket, {"Dockerfile": "FROM busybox\n" + run})
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code != 0 and "agent/host.sock" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
