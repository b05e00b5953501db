"""`irctl worker` against a hostile client: what a step of any client reaches of the worker's machine.
(Hostile envelopes, actions and layers: tests/farm/test_worker.py.)"""

from __future__ import annotations

import socket
import threading

import pytest

from tests.support.buildgrid import start_worker, stop_worker
from tests.support.farmsteps import busybox_layer, client, exec_step, execute, upload_base

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base(buildgrid, tmp_path_factory):
    return upload_base(buildgrid.url, busybox_layer(tmp_path_factory.mktemp("bb")))


@pytest.fixture(scope="module")
def worker(buildgrid, tmp_path_factory):
    proc = start_worker(buildgrid.url, tmp_path_factory.mktemp("wa") / "cache", "wa")
    yield proc
    assert stop_worker(proc) == 0


def test_a_step_cannot_reach_the_workers_loopback(buildgrid, base, worker):
    """The server the worker serves listens on the worker's loopback (as in these tests): a step of
    any client, on the default network, cannot connect to it (slirp4netns --disable-host-loopback);
    the machine's other addresses it can reach (SECURITY.md, "Build farm workers")."""
    port = int(buildgrid.url.rsplit(":", 1)[1])
    outside = _own_address()
    with socket.create_server((outside or "127.0.0.1", 0)) as listener:  # the control: the machine's LAN address
        threading.Thread(target=_close_each, args=(listener,), daemon=True).start()
        probes = [("127.0.0.1", port), ("10.0.2.2", port)] + ([(outside, listener.getsockname()[1])] if outside else [])
        script = "; ".join(f"if timeout 5 nc -w 3 {a} {p} </dev/null; then echo reached {a}; else echo refused {a}; fi"
                           for a, p in probes)
        with client(buildgrid.url) as remote:
            result = execute(remote, exec_step(base, script, network="default")).result
    assert result.exit_code == 0
    said = [line.split()[:2] for line in result.stdout_raw.decode().splitlines() if line.split()[:1] in (
        ["reached"], ["refused"])]
    assert said == [["refused", "127.0.0.1"], ["refused", "10.0.2.2"]] + ([["reached", outside]] if outside else [])


def _close_each(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed: the test is over
            return
        conn.close()


def _own_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") else addr
