"""Forward an SSH agent into a build step without exposing the agent's own socket or directory.

``SSHProxy`` listens on a fresh Unix socket (in a private directory on a tmpfs, given the mode and
owner the mount asks for) and relays every connection to the granted agent socket, byte for byte,
on two threads per connection.  The build sees only the proxy socket, bind-mounted at its target.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import tempfile
import threading
from pathlib import Path


class SSHProxy:
    def __init__(self, agent: Path, workdir: Path, *, uid: int = 0, gid: int = 0, mode: int = 0o600):
        self.agent = os.fspath(agent)
        self.dir = Path(tempfile.mkdtemp(prefix="ssh-", dir=workdir))
        self.path = self.dir / "agent.sock"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(os.fspath(self.path))
        os.chown(self.path, uid, gid)
        os.chmod(self.path, mode)
        self._server.listen(16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="ssh-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._server, selectors.EVENT_READ)
        while not self._stop.is_set():
            if not sel.select(timeout=0.1):
                continue
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()
        sel.close()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.agent)
        except OSError:
            client.close()
            upstream.close()
            return

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        t.start()
        pipe(client, upstream)
        t.join(timeout=30)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)

    def __enter__(self) -> "SSHProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
