"""A command run on a pseudo-terminal of its own (``pty.fork``), driven as a person would drive it:
wait for a prompt, type a line, read what came back.  For the interactive parts of the CLI (the
debug shell of ``--on-error=shell``), which refuse to start without a terminal on stdin."""

from __future__ import annotations

import os
import pty
import select
import signal
import time


class TerminalSession:
    """``argv`` on a pty (stdin, stdout and stderr all the terminal); ``text`` is everything it
    printed so far.  Always ``close()`` it (kills what is left)."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: nothing of pytest's may run here
            try:
                if cwd:
                    os.chdir(cwd)
                os.execvpe(argv[0], argv, env if env is not None else os.environ)
            finally:
                os._exit(127)
        self.buf = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        return self.buf.decode(errors="replace").replace("\r\n", "\n")

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False at end of output."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every process holding the terminal is gone
            return False
        self.buf += data
        return bool(data)

    def expect(self, marker: str, timeout: float = 60) -> str:
        """Wait until ``marker`` has been printed (after everything seen before); returns the text up to it."""
        start = len(self.buf)
        want = marker.encode()
        end = time.monotonic() + timeout
        while want not in self.buf[start:]:
            if time.monotonic() > end or not self._read(0.2):
                raise AssertionError(f"{marker!r} never came; the terminal showed:\n{self.text}")
        return self.buf[start:self.buf.index(want, start)].decode(errors="replace").replace("\r\n", "\n")

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def wait(self, timeout: float = 120) -> int:
        """Read to the end and return the exit status."""
        end = time.monotonic() + timeout
        while self._read(0.2):
            if time.monotonic() > end:
                raise AssertionError(f"still running after {timeout}s; the terminal showed:\n{self.text}")
        _, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)
