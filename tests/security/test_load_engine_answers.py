"""A Docker engine's answer to ``--load`` is input (``backend.export.load``): one that trickles a byte
at a time, each well inside the read timeout, must not hold irctl for as long as it likes."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from backend.export import load


class _Archive:
    def chunks(self):
        yield b"not really a tar"


def _trickling_engine(path: str, stop: threading.Event) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            request = b""
            while not request.endswith(b"0\r\n\r\n"):  # the chunked body's end
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not stop.wait(0.1):  # one space every 0.1 s, for ever: never a read timeout
                try:
                    conn.sendall(b"1\r\n \r\n")
                except OSError:
                    return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_an_engine_trickling_its_answer_is_given_up_on(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "LOAD_TIMEOUT", 1.0)
    path = str(tmp_path / "docker.sock")
    stop = threading.Event()
    _trickling_engine(path, stop)
    started = time.monotonic()
    try:
        with pytest.raises(load.LoadError, match=r"^Docker at test: .*(too long|timed out)"):
            load.load(load.Engine("docker-api", "Docker at test", path), _Archive(), [], scratch=tmp_path)
    finally:
        stop.set()
    assert time.monotonic() - started < 5
