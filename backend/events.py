"""Progress events: a small stream of dataclasses the solver emits and a frontend renders.

Each event names the op (digest, description and group from the document metadata) and carries a
monotonic and a wall-clock timestamp, so tests can assert overlap from ``started``/``finished``
pairs and renderers can show durations.  Secrets never appear here: log lines are redacted by the
exec handler before they are emitted.

``progress`` events report one item of an op's work by bytes (a base image layer downloading, then
extracting, under the ``FROM`` op that named it): ``text`` names the item, ``current``/``total``
count bytes (``total`` 0: unknown), ``done`` closes it.  A ``Meter`` sends them throttled, so a
download pays one clock read per chunk, not a renderer call; ``debug`` events (``text`` only) are
shown with ``--debug`` alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

Kind = Literal["started", "cached", "finished", "failed", "log", "info", "debug", "progress"]


@dataclass(frozen=True)
class Event:
    kind: Kind
    op: str = ""  # op digest; empty for build-wide info
    description: str = ""
    group: str = ""
    text: str = ""  # log line, info message or error summary; finished: "on NAME" when worker NAME ran it
    duration: float = 0.0  # seconds, on finished/failed (and progress: since the item began)
    current: int = 0  # progress: bytes done
    total: int = 0  # progress: bytes in all, 0 when unknown
    done: bool = False  # progress: the item is complete
    mono: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)

    def plain(self) -> str:
        """One line for a plain-text log (what ``irctl solve`` prints without a fancier renderer)."""
        name = self.description or (self.op[7:19] if self.op else "")
        if self.kind == "log":
            return f"#{name} {self.text}"
        if self.kind in ("info", "debug"):
            return f"{self.kind}: {self.text}"
        if self.kind == "progress":
            return f"#{name} {self.text} {self.current}/{self.total}{' done' if self.done else ''}"
        if self.kind == "cached":
            return f"CACHED {name}"
        if self.kind == "started":
            return f"=> {name}"
        if self.kind == "finished":
            return f"DONE {name} {self.duration:.1f}s"
        return f"ERROR {name}: {self.text}"


Callback = Callable[[Event], None]

MAX_SIZE = 1 << 62  # a size beyond this (a hostile descriptor's 10**18 is below; 10**30 is not) is "unknown"


class Meter:
    """Progress of one item (``label``) of op ``owner`` = (digest, description, group): the first
    call, then at most one event per ``interval`` seconds, then ``finish``.  Callable per chunk with
    the running byte count; costs a clock read when nothing is sent.  ``emit`` None: does nothing."""

    def __init__(self, emit: "Callback | None", owner: tuple[str, str, str], label: str, total: int | None,
                 interval: float = 0.1) -> None:
        self.emit = emit
        self.owner = owner
        self.label = label
        self.total = total if isinstance(total, int) and 0 < total <= MAX_SIZE else 0
        self.interval = interval
        self.t0 = time.monotonic()
        self.next = 0.0  # the first call always reports
        self.current = 0

    def __call__(self, current: int) -> None:
        self.current = current
        if self.emit is None:
            return
        now = time.monotonic()
        if now >= self.next:
            self.next = now + self.interval
            self._send(now, False)

    def finish(self) -> None:
        if self.emit is not None:
            self._send(time.monotonic(), True)

    def _send(self, now: float, done: bool) -> None:
        op, description, group = self.owner
        self.emit(Event("progress", op, description, group, self.label, now - self.t0,  # type: ignore[misc]
                        current=self.current, total=self.total, done=done))


class MeteredReader:
    """A binary stream whose ``read`` reports the bytes read so far to a ``Meter``."""

    def __init__(self, raw, meter: Meter) -> None:
        self.raw = raw
        self.meter = meter
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        self.meter(self.count)
        return data


class Recorder:
    """A thread-safe callback that keeps every event (tests, and the JSON renderer)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def spans(self) -> dict[str, tuple[float, float]]:
        """op digest → (started, finished) monotonic times, for executed ops."""
        start = {e.op: e.mono for e in self.of("started")}
        return {e.op: (start[e.op], e.mono) for e in self.of("finished") if e.op in start}
