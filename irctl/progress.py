"""Rendering the solver's progress events: a live tty view, plain prefixed lines, or JSON lines.

Modes follow buildx: ``auto`` picks ``tty`` when stderr is a terminal and ``plain`` otherwise;
``quiet`` prints nothing but errors.  Each renderer is a callable taking ``backend.events.Event``
and is safe to call from the solver's worker threads.  Every text that came from the graph or a
step (names, log lines, errors) goes through ``irctl.terminal.printable`` first, and the tty view
builds rich ``Text`` objects rather than markup, so neither a control sequence nor a ``[red]``
in a description reaches the terminal as such.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from typing import TextIO

from irctl.terminal import printable


def renderer(mode: str, stream: TextIO = sys.stderr):
    if mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    if mode == "tty":
        return TtyProgress(stream)
    if mode == "plain":
        return PlainProgress(stream)
    if mode == "json":
        return JsonProgress(stream)
    if mode == "quiet":
        return QuietProgress()
    raise ValueError(f"unknown progress mode {mode!r} (auto, tty, plain, json, quiet)")


class _Numbered:
    """BuildKit-style step numbers (#1, #2, …) in order of first appearance."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def number(self, op: str) -> int:
        with self._lock:
            return self._ids.setdefault(op, len(self._ids) + 1)

    def close(self) -> None:
        pass


def _name(e) -> str:
    return printable(e.description or (e.op[7:19] if e.op else ""))


def _text(e) -> str:
    return printable(e.text)


class PlainProgress(_Numbered):
    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def __call__(self, e) -> None:
        if e.kind == "info":
            line = f"=> {_text(e)}"
        else:
            n = self.number(e.op) if e.op else 0
            line = {
                "started": f"#{n} {_name(e)}",
                "cached": f"#{n} {_name(e)}\n#{n} CACHED",
                "finished": f"#{n} DONE {e.duration:.1f}s",
                "failed": f"#{n} ERROR: {_text(e)}",
                "log": f"#{n} {_text(e)}",
            }[e.kind]
        self.stream.write(line + "\n")
        self.stream.flush()


class JsonProgress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, e) -> None:
        record = {"kind": e.kind, "op": e.op, "description": e.description, "group": e.group,
                  "text": e.text, "duration": round(e.duration, 6), "time": e.wall}
        with self._lock:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class QuietProgress:
    def __call__(self, e) -> None:
        if e.kind == "failed":
            sys.stderr.write(f"ERROR {_name(e)}: {_text(e)}\n")

    def close(self) -> None:
        pass


class TtyProgress(_Numbered):
    """A live view: one line per step with a running timer, CACHED/DONE markers, and the last
    few log lines of running steps; finished steps scroll up like BuildKit's tty mode."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream)
        self.rows: dict[str, dict] = {}
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.live = Live(console=self.console, refresh_per_second=8, transient=True,
                         get_renderable=self._render)
        self.live.start()

    def _render(self):
        from rich.text import Text

        out = Text()
        out.append(f"[+] Building {time.monotonic() - self.start:.1f}s\n", style="bold blue")
        with self.lock:
            for op, row in self.rows.items():
                if row["state"] != "running":
                    continue
                out.append(f" => #{row['n']} {row['name']} {time.monotonic() - row['t0']:.1f}s\n")
                for line in row["log"]:
                    out.append(f"    {line}\n", style="dim")
        return out

    def __call__(self, e) -> None:
        from rich.text import Text

        if e.kind == "info":
            self.console.print(Text(f"=> {_text(e)}", style="dim"), highlight=False)
            return
        n = self.number(e.op)
        with self.lock:
            row = self.rows.setdefault(e.op, {"n": n, "name": _name(e), "state": "new", "t0": e.mono,
                                              "log": collections.deque(maxlen=5)})
            if e.kind == "started":
                row.update(state="running", t0=e.mono)
            elif e.kind == "log":
                row["log"].append(_text(e)[:1000])  # the live view shows the end of a few short lines
            elif e.kind in ("cached", "finished", "failed"):
                row["state"] = e.kind
        if e.kind == "cached":
            self.console.print(Text.assemble(" => ", ("CACHED", "blue"), f" #{n} {_name(e)}"), highlight=False)
        elif e.kind == "finished":
            self.console.print(Text.assemble(f" => #{n} {_name(e)} ", (f"{e.duration:.1f}s", "green")),
                               highlight=False)
        elif e.kind == "failed":
            self.console.print(Text.assemble(" => ", ("ERROR", "red"), f" #{n} {_name(e)}: {_text(e)}"),
                               highlight=False)

    def close(self) -> None:
        self.live.stop()
