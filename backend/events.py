"""Progress events: a small stream of dataclasses the solver emits and a frontend renders.

Each event names the op (digest, description and group from the document metadata) and carries a
monotonic and a wall-clock timestamp, so tests can assert overlap from ``started``/``finished``
pairs and renderers can show durations.  Secrets never appear here: log lines are redacted by the
exec handler before they are emitted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

Kind = Literal["started", "cached", "finished", "failed", "log", "info"]


@dataclass(frozen=True)
class Event:
    kind: Kind
    op: str = ""  # op digest; empty for build-wide info
    description: str = ""
    group: str = ""
    text: str = ""  # log line, info message or error summary
    duration: float = 0.0  # seconds, on finished/failed
    mono: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)

    def plain(self) -> str:
        """One line for a plain-text log (what ``irctl solve`` prints without a fancier renderer)."""
        name = self.description or (self.op[7:19] if self.op else "")
        if self.kind == "log":
            return f"#{name} {self.text}"
        if self.kind == "info":
            return f"info: {self.text}"
        if self.kind == "cached":
            return f"CACHED {name}"
        if self.kind == "started":
            return f"=> {name}"
        if self.kind == "finished":
            return f"DONE {name} {self.duration:.1f}s"
        return f"ERROR {name}: {self.text}"


Callback = Callable[[Event], None]


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
