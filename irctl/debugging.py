"""``--on-error=shell`` on the command line: the options checked before the build starts, and the
progress display held while the shell has the terminal.

The shell itself opens in the backend (``backend.ops.debugshell``), in the failed step's container.
It needs a terminal on stdin: without one the build is refused at once with one line, rather than
run to the failure and then hang or carry on without a shell.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import threading
from dataclasses import replace

from irctl.errors import UserError

ON_ERROR = ("fail", "shell")


def shell_options(on_error: str, shell: str, secrets: bool) -> tuple[tuple[str, ...], bool] | None:
    """(the shell's argv, whether it gets the step's secrets) for ``--on-error=shell``; None for
    ``fail``.  Raises ``UserError`` for a bad value, or when stdin is not a terminal."""
    if on_error not in ON_ERROR:
        raise UserError(f"--on-error {on_error!r}: expected fail or shell")
    if on_error == "fail":
        return None
    try:
        argv = tuple(shlex.split(shell))
    except ValueError as e:
        raise UserError(f"--debug-shell {shell!r}: {e}") from None
    if not argv:
        raise UserError("--debug-shell: empty command")
    if not sys.stdin.isatty():
        raise UserError("--on-error=shell needs a terminal on stdin for the shell (run it from one, "
                        "or leave the option out)")
    return argv, secrets


MAX_HELD_LINES = 10_000  # log lines kept while a shell has the terminal; later ones are counted, not kept


class _Dropped:
    """Where a step's log lines started being left out while held, and how many were."""

    def __init__(self, e) -> None:
        self.event, self.count = e, 0


class HeldProgress:
    """A progress renderer whose output waits while a shell has the terminal: events that arrive
    meanwhile (other steps go on) are kept and shown, in order, when the shell exits; a live view
    (``irctl.progress.TtyProgress``) is stopped and started again around it.  Only the first
    ``MAX_HELD_LINES`` log lines are kept (a step of the build printing without end would otherwise
    grow irctl for as long as the shell stays open); each step's others are one line saying how many."""

    def __init__(self, render) -> None:
        self.render = render
        self._held: list | None = None
        self._lines = 0
        self._dropped: dict[str, _Dropped] = {}
        self._lock = threading.Lock()

    def __call__(self, e) -> None:
        with self._lock:
            if self._held is not None:
                if e.kind == "log" and self._lines >= MAX_HELD_LINES:
                    if e.op not in self._dropped:
                        self._dropped[e.op] = _Dropped(e)
                        self._held.append(self._dropped[e.op])
                    self._dropped[e.op].count += 1
                    return
                self._lines += e.kind == "log"
                self._held.append(e)
                return
        self.render(e)

    def __getattr__(self, name: str):  # claim, close, …: the renderer's own
        return getattr(self.render, name)

    @contextlib.contextmanager
    def hold(self):
        with self._lock:
            self._held = []
        live = getattr(self.render, "live", None)
        if live is not None:
            live.stop()
        sys.stderr.flush()
        try:
            yield
        finally:
            if live is not None:
                live.start()
            with self._lock:
                held, self._held, self._lines, self._dropped = self._held or [], None, 0, {}
            for e in held:
                if isinstance(e, _Dropped):
                    name = e.event.description or e.event.op[7:19] or "the build"
                    e = replace(e.event, kind="info", text=f"{e.count} lines of {name}'s output not shown: "
                                "they came while the debug shell had the terminal")
                self.render(e)


def attach(options, shell: tuple[tuple[str, ...], bool] | None, render):
    """The renderer to give the solver: ``render`` itself, or (with a shell asked for) a held one,
    after setting ``options.debug_shell``."""
    if shell is None:
        return render
    from backend.ops.debugshell import DebugShell  # lazy: the backend is imported in the user namespace

    held = HeldProgress(render)
    argv, secrets = shell
    options.debug_shell = DebugShell(args=argv, secrets=secrets, hold=held.hold)
    return held
