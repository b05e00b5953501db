"""An in-process ``Executor`` (``backend.runtime.executor``): the solver's logic tested without root.

A step's argv is a tiny script instead of a program: commands separated by ``&&``, each one of

    write PATH TEXT     append PATH TEXT     echo WORDS…     cat PATH     env
    exit N              sleep SECONDS

or a name given to the executor with a Python callable (``calls``), called with the run's context
and the command's arguments.

Paths are container paths: one under a mount's target reads and writes the mount's host source (a
tmpfs is a fresh temp dir per run), any other the rootfs the snapshotter prepared, so a step's writes
land in its upper dir, its output mounts and its cache mounts exactly as a container's would.  Like
runc, a run creates the stubs its mounts need in the rootfs and the working directory when missing.
A read-only mount refuses writes (exit 1).  ``sleep`` waits on the build's cancel event and raises
``Cancelled`` when it is set, as the real runtime kills the container.  Every run is kept in ``runs``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.runtime.container import Cancelled
from backend.runtime.spec import BindMount, FileMount, Mount, Process, TmpfsMount


@dataclass
class FakeRun:
    """What one run was given (mount targets with their host paths, ``None`` for a tmpfs)."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    network: str
    hostname: str
    privileged: bool
    mounts: dict[str, Path | None] = field(default_factory=dict)
    readonly: set[str] = field(default_factory=set)
    started: float = 0.0
    ended: float = 0.0

    @classmethod
    def of(cls, process: Process, network: str, hostname: str, privileged: bool) -> "FakeRun":
        return cls(tuple(process.args), tuple(process.env), process.cwd, process.uid, process.gid, network,
                   hostname, privileged, started=time.monotonic())


class ScriptError(Exception):
    """A command of the script failed: its message is printed and the run exits 1."""


class FakeExecutor:
    def __init__(self, calls: dict[str, Callable[["Context", list[str]], int | None]] | None = None,
                 missing: Exception | None = None) -> None:
        self.calls = dict(calls or {})
        self.missing = missing  # raised by ready(): "no runtime on this host"
        self.runs: list[FakeRun] = []
        self.shells: list[tuple[FakeRun, str]] = []  # debug shells (``shell``): the run, what it printed
        self.running = 0
        self.max_running = 0
        self.warmed = self.closed = False
        self._lock = threading.Lock()

    # -- the Executor protocol ----------------------------------------------------------------------
    def ready(self) -> None:
        if self.missing is not None:
            raise self.missing

    def warm(self) -> None:
        self.warmed = True

    def close(self) -> None:
        self.closed = True

    def run(self, rootfs: Path, process: Process, mounts: Sequence[Mount], *, network: str, hostname: str,
            output: Callable[[bytes], None], cancel: threading.Event, privileged: bool, sandbox=None) -> int:
        record = FakeRun.of(process, network, hostname, privileged)
        with self._lock:
            self.runs.append(record)
        return self._run(record, rootfs, process, mounts, output, cancel)

    def _run(self, record: FakeRun, rootfs: Path, process: Process, mounts: Sequence[Mount],
             output: Callable[[bytes], None], cancel: threading.Event) -> int:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            with tempfile.TemporaryDirectory(prefix="fake-tmpfs-") as tmp:
                ctx = Context(Path(rootfs), process, record, output, cancel, _mount_table(rootfs, mounts, Path(tmp)))
                for m in mounts:
                    record.mounts[m.target] = None if isinstance(m, TmpfsMount) else m.source
                    if isinstance(m, BindMount) and m.readonly:
                        record.readonly.add(m.target)
                ctx.host(process.cwd).mkdir(parents=True, exist_ok=True)
                return self._script(ctx)
        finally:
            record.ended = time.monotonic()
            with self._lock:
                self.running -= 1

    def shell(self, rootfs: Path, process: Process, mounts: Sequence[Mount], *, network: str, hostname: str,
              cancel: threading.Event, privileged: bool, sandbox=None) -> int:
        """The debug shell of ``--on-error=shell``: its argv is a script run as ``run`` runs one, kept
        with what it printed in ``shells`` (not in ``runs``)."""
        printed: list[bytes] = []
        record = FakeRun.of(process, network, hostname, privileged)
        try:
            return self._run(record, rootfs, process, mounts, printed.append, cancel)
        finally:  # a cancelled one too
            with self._lock:
                self.shells.append((record, b"".join(printed).decode()))

    # -- the script ---------------------------------------------------------------------------------
    def _script(self, ctx: "Context") -> int:
        words = list(ctx.process.args)
        while words:
            n = words.index("&&") if "&&" in words else len(words)
            command, words = words[:n], words[n + 1:]
            try:
                code = self._command(ctx, command)
            except ScriptError as e:
                ctx.say(f"{command[0]}: {e}")
                return 1
            if code:
                return code
        return 0

    def _command(self, ctx: "Context", command: list[str]) -> int:
        name, args = command[0], command[1:]
        if name in self.calls:
            return self.calls[name](ctx, args) or 0
        if name in ("write", "append"):
            path = ctx.writable(args[0])
            with open(path, "a" if name == "append" else "w") as f:
                f.write(" ".join(args[1:]) + "\n")
        elif name == "echo":
            ctx.say(" ".join(args))
        elif name == "cat":
            try:
                ctx.output(ctx.host(args[0]).read_bytes())
            except OSError as e:
                raise ScriptError(f"{args[0]}: {e.strerror}") from None
        elif name == "env":
            for e in ctx.process.env:
                ctx.say(e)
        elif name == "exit":
            return int(args[0])
        elif name == "sleep":
            if ctx.cancel.wait(float(args[0])):
                raise Cancelled("run cancelled")
        else:
            raise ScriptError("command not found")
        return 0


def _mount_table(rootfs: Path, mounts: Sequence[Mount], tmp: Path) -> list[tuple[str, Path, bool]]:
    """(target, host path, read-only) per mount, longest target first; the stubs made in the rootfs."""
    table = []
    for i, m in enumerate(mounts):
        stub = rootfs / m.target.lstrip("/")
        if isinstance(m, FileMount):
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.touch()
            table.append((m.target, Path(m.source), True))
            continue
        stub.mkdir(parents=True, exist_ok=True)
        if isinstance(m, TmpfsMount):
            host = tmp / str(i)
            host.mkdir()
            table.append((m.target, host, False))
        else:
            table.append((m.target, Path(m.source), m.readonly))
    return sorted(table, key=lambda t: -len(t[0]))


@dataclass
class Context:
    """One run as a script command (or a ``call``) sees it."""

    rootfs: Path
    process: Process
    run: FakeRun
    output: Callable[[bytes], None]
    cancel: threading.Event
    table: list[tuple[str, Path, bool]]

    def say(self, line: str) -> None:
        self.output((line + "\n").encode())

    def _find(self, path: str) -> tuple[Path, bool]:
        path = os.path.normpath(os.path.join(self.process.cwd, path))
        for target, host, readonly in self.table:
            if path == target or path.startswith(target.rstrip("/") + "/"):
                rel = os.path.relpath(path, target)
                return (host if rel == "." else host / rel), readonly
        return self.rootfs / path.lstrip("/"), False

    def host(self, path: str) -> Path:
        """Where the container path ``path`` is on the host."""
        return self._find(path)[0]

    def writable(self, path: str) -> Path:
        host, readonly = self._find(path)
        if readonly:
            raise ScriptError(f"{path}: Read-only file system")
        host.parent.mkdir(parents=True, exist_ok=True)
        return host
