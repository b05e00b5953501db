"""A server that names a blob and then stalls its stream: the deadline of a blob stream grows with
the blob's size (a big blob takes time), so without a bound on the wait for each message a server
that names a huge blob (its size is its own to say) and sends nothing holds a build for days."""

from __future__ import annotations

import threading
import time

import pytest

from backend.reapi import errors
from backend.reapi.client import RemoteError
from backend.reapi.protos import bytestream_pb2 as bs
from tests.reapi.fakeserver import FakeServer

HUGE = ("sha256:" + "a" * 64, 1 << 40)  # 1 TiB: a stream deadline of ~12 days at 1 MiB/s


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(errors, "BACKOFF", 0.0)


def _silent(stop):
    yield bs.ReadResponse(data=b"x" * 1000)
    stop.wait(30)  # and nothing more


def _empty(stop):
    yield bs.ReadResponse(data=b"x" * 1000)
    while not stop.wait(0.01):
        yield bs.ReadResponse()  # messages without a byte: no progress either


@pytest.mark.parametrize("send", [_silent, _empty], ids=["silence", "empty-messages"])
def test_a_stream_that_stops_sending_is_given_up_on(send):
    stop = threading.Event()

    def stall(request, context):
        yield from send(stop)

    server = FakeServer(Read=stall)
    remote = server.remote(timeout=0.5)
    failed: list[BaseException] = []

    def read():
        try:
            with remote.open_blob(HUGE) as f:
                while f.read(1 << 16):
                    pass
        except BaseException as e:
            failed.append(e)

    reader = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    reader.start()
    reader.join(10)
    stop.set()
    try:
        assert not reader.is_alive(), "the read still waits on a server that sends nothing"
        assert len(failed) == 1 and isinstance(failed[0], RemoteError), failed
        assert "ByteStream.Read" in str(failed[0]) and "\n" not in str(failed[0]), failed
        assert time.monotonic() - started < 5
    finally:
        remote.close()
        server.stop()
