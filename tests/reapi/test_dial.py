"""What ``grpc://HOST:PORT`` dials: the host by name, whatever it is called.  gRPC reads a target
of the form ``scheme:rest`` as a resolver URI, so ``grpc://unix:7`` (host "unix", port 7) would
have dialled the Unix socket ``./7`` of the directory irctl runs in."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from backend.reapi.address import parse_endpoint
from backend.reapi.client import Remote, Unreachable


def test_a_host_named_like_a_grpc_scheme_is_a_host(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("7")
    listener.listen(1)
    listener.settimeout(3)
    reached: list[bytes] = []

    def accept():
        try:
            conn, _ = listener.accept()
            reached.append(conn.recv(16))
            conn.close()
        except OSError:
            pass

    waiter = threading.Thread(target=accept)
    waiter.start()
    remote = Remote(parse_endpoint("grpc://unix:7", "--remote-cache")[0], timeout=2)
    try:
        with pytest.raises(Unreachable):
            remote.capabilities()  # no host "unix" (or nothing on its port 7)
    finally:
        remote.close()
        waiter.join()
        listener.close()
    assert reached == [], "the client dialled the Unix socket ./7"
    assert os.path.exists("7")


def test_names_and_addresses_are_still_dialled(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: refused, by whichever spelling
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (f"grpc://127.0.0.1:{port}", f"grpc://localhost:{port}"):
        remote = Remote(parse_endpoint(url, "--remote-cache")[0], timeout=2)
        with pytest.raises(Unreachable, match="connection refused"):
            remote.capabilities()
        remote.close()
