"""Rendering the solver's progress events: a live tty view, plain prefixed lines, or JSON lines.

Modes follow buildx: ``auto`` picks ``tty`` when stderr is a terminal and ``plain`` otherwise;
``quiet`` prints nothing but errors.  Each renderer is a callable taking ``backend.events.Event``
and is safe to call from the solver's worker threads.  Every text that came from the graph or a
step (names, log lines, errors) goes through ``irctl.terminal.printable`` first, and the tty view
builds rich ``Text`` objects rather than markup, so neither a control sequence nor a ``[red]``
in a description reaches the terminal as such.

What each shows follows BuildKit's: plain lines carry the seconds since their step started
(``#5 0.512 hello``); a pulled layer is two lines per phase in plain mode (begun, done with its size
and time) and a live row in the tty; every tty line fits the terminal (a long name is cut, its
``[stage n/m]`` label and its time kept).  A failed step is marked ``ERROR`` without its message:
the error report after the build prints that once, with the Dockerfile excerpt (the CLI ``claim``s
it); a failure nobody claimed (a second step failing at the same time) is printed by ``close``.
``debug`` events (the snapshotter) only with ``--debug``.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from typing import TextIO

from irctl.errors import UserError
from irctl.terminal import printable

MODES = ("auto", "tty", "plain", "json", "quiet")  # --progress's values (buildx's, json for rawjson)


def renderer(mode: str, stream: TextIO = sys.stderr, *, debug: bool = False, width: int | None = None):
    if mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    if mode == "tty":
        return TtyProgress(stream, debug=debug, width=width)
    if mode == "plain":
        return PlainProgress(stream, debug=debug)
    if mode == "json":
        return JsonProgress(stream)
    if mode == "quiet":
        return QuietProgress(stream)
    raise UserError(f"--progress {mode!r}: expected one of {', '.join(MODES)}")


_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def human_size(n: int) -> str:
    """``49.56MB`` (decimal units, as BuildKit); at most 8 characters whatever a registry claims."""
    if not isinstance(n, int) or n < 0:
        return "?"
    value = float(n)
    for unit in _UNITS:
        if value < 1000 or unit == _UNITS[-1]:
            break
        value /= 1000
    if value >= 1000:
        return ">999EB"
    return f"{n}B" if unit == "B" else f"{value:.4g}{unit}"


def byte_count(current: int, total: int) -> str:
    """``12.3MB / 49.2MB``; just the count when the total is unknown or already passed (a lying size)."""
    if total > 0 and 0 <= current <= total:
        return f"{human_size(current)} / {human_size(total)}"
    return human_size(current)


class _Steps:
    """BuildKit-style step numbers (#1, #2, …) in order of first appearance, when each step began
    (for plain lines' elapsed times), and the failures still to report."""

    def __init__(self, debug: bool = False) -> None:
        self._ids: dict[str, int] = {}
        self._began: dict[str, float] = {}
        self._failures: dict[str, str] = {}  # op -> "name: message", until claimed or closed
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        self.debug = debug

    def number(self, op: str) -> int:
        with self._lock:
            return self._ids.setdefault(op, len(self._ids) + 1)

    def began(self, e) -> float:
        """When ``e``'s step started (its first event, until a ``started`` says otherwise)."""
        with self._lock:
            if e.kind == "started":
                self._began[e.op] = e.mono
            return self._began.setdefault(e.op, e.mono)

    def failed(self, e) -> None:
        with self._lock:
            if e.op not in self._claimed:
                self._failures[e.op] = f"{_name(e)}: {_text(e)}"

    def claim(self, op: str) -> None:
        """The caller reports ``op``'s failure itself (with its location): not printed again."""
        with self._lock:
            self._claimed.add(op)
            self._failures.pop(op, None)

    def unclaimed(self) -> list[tuple[int, str]]:
        with self._lock:
            out = [(self._ids.get(op, 0), text) for op, text in self._failures.items()]
            self._failures.clear()
            return out

    def close(self) -> None:
        pass


def _name(e) -> str:
    return printable(e.description or (e.op[7:19] if e.op else ""))


def _text(e) -> str:
    return printable(e.text)


def _where(e) -> str:
    """`` on worker-1``: where a finished step ran, when not here (``--remote``)."""
    return f" {_text(e)}" if e.text.startswith("on ") else ""


class PlainProgress(_Steps):
    def __init__(self, stream: TextIO, debug: bool = False) -> None:
        super().__init__(debug)
        self.stream = stream
        self._items: set[tuple[str, str]] = set()  # progress items whose first line is out
        self._headed: set[str] = set()  # steps whose ``#n name`` line is out

    def __call__(self, e) -> None:
        if e.kind in ("info", "debug"):
            if e.kind == "debug" and not self.debug:
                return
            line = f"=> {_text(e)}"
        elif e.kind == "progress":
            line = self._progress(e)
            if not line:
                return
        else:
            n = self.number(e.op) if e.op else 0
            t0 = self.began(e)
            if e.kind == "failed":
                self.failed(e)
            with self._lock:
                header = e.op not in self._headed
                self._headed.add(e.op)
            line = {
                "started": "",
                "cached": f"#{n} CACHED",
                "finished": f"#{n} DONE {e.duration:.1f}s{_where(e)}",
                "failed": f"#{n} ERROR {e.duration:.1f}s",
                "log": f"#{n} {e.mono - t0:.3f} {_text(e)}",
            }[e.kind]
            if header or e.kind == "started":  # a resolved source never starts: its first line names it
                line = f"#{n} {_name(e)}" + (f"\n{line}" if line else "")
        self.stream.write(line + "\n")
        self.stream.flush()

    def _progress(self, e) -> str:
        """The item's first event and its last: two lines per layer and phase, never one per chunk."""
        key = (e.op, e.text)
        with self._lock:
            first = key not in self._items
            self._items.add(key)
        n = self.number(e.op)
        if e.done:
            return f"#{n} {_text(e)} {byte_count(e.current, e.total)} {e.duration:.1f}s done"
        return f"#{n} {_text(e)} {byte_count(e.current, e.total)}" if first else ""

    def close(self) -> None:
        for n, text in self.unclaimed():
            self.stream.write(f"#{n} ERROR: {text}\n")
        self.stream.flush()


class JsonProgress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, e) -> None:
        record = {"kind": e.kind, "op": e.op, "description": e.description, "group": e.group,
                  "text": e.text, "duration": round(e.duration, 6), "time": e.wall}
        if e.kind == "progress":
            record.update(current=e.current, total=e.total, done=e.done)
        with self._lock:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()

    def claim(self, op: str) -> None:
        pass

    def close(self) -> None:
        pass


class QuietProgress(_Steps):
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        super().__init__()
        self.stream = stream

    def __call__(self, e) -> None:
        if e.kind == "failed":
            self.failed(e)

    def close(self) -> None:
        for _, text in self.unclaimed():
            self.stream.write(f"ERROR {text}\n")


def fit(prefix: str, name: str, suffix: str, width: int) -> str:
    """``prefix name suffix`` in ``width`` terminal cells: the name is cut (with …) so that its start
    (the ``[stage n/m]`` label) and the suffix (a time) stay; wide characters count as two."""
    from rich.cells import cell_len, set_cell_size

    room = width - cell_len(prefix) - (cell_len(suffix) + 1 if suffix else 0)
    if cell_len(name) > room:
        name = set_cell_size(name, room - 1).rstrip(" ") + "…" if room > 0 else ""
    return f"{prefix}{name}" + (f" {suffix}" if suffix else "")


class TtyProgress(_Steps):
    """A live view: one line per running step with a timer and its last few log lines, one per
    layer being pulled; finished steps scroll up like BuildKit's tty mode.  Every line is cut to the
    terminal's width, never wrapped."""

    def __init__(self, stream: TextIO, debug: bool = False, width: int | None = None) -> None:
        super().__init__(debug)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, width=width)
        self.rows: dict[str, dict] = {}
        self.items: dict[tuple[str, str], object] = {}  # progress items under way: (op, label) -> event
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.live = Live(console=self.console, refresh_per_second=8, transient=True,
                         get_renderable=self._render)
        self.live.start()

    @property
    def width(self) -> int:
        return max(self.console.width, 20)

    def _line(self, text: str, style: str = ""):
        from rich.text import Text

        return Text(text, style=style, no_wrap=True, overflow="crop")

    def _render(self):
        from rich.console import Group

        now = time.monotonic()
        w = self.width
        lines = [self._line(f"[+] Building {now - self.start:.1f}s", "bold blue")]
        with self.lock:
            for row in self.rows.values():
                if row["state"] != "running":
                    continue
                lines.append(self._line(fit(f" => #{row['n']} ", row["name"], f"{now - row['t0']:.1f}s", w)))
                for log in row["log"]:
                    lines.append(self._line(fit("    ", log, "", w), "dim"))
            for (op, label), e in self.items.items():
                n = self._ids.get(op, 0)
                lines.append(self._line(fit(f" => #{n} ", _short(printable(label)),
                                            f"{byte_count(e.current, e.total)} {e.duration:.1f}s", w)))
        return Group(*lines)

    def _print(self, head: list[tuple[str, str]], name: str, suffix: str = "", suffix_style: str = "") -> None:
        """One finished line: the ``head`` parts (text, style), then ``name`` cut to fit, then ``suffix``."""
        from rich.text import Text

        prefix = "".join(t for t, _ in head)
        line = fit(prefix, name, suffix, self.width)
        text = Text(no_wrap=True, overflow="crop")
        for t, style in head:
            text.append(t, style=style)
        text.append(line[len(prefix):len(line) - len(suffix)] if suffix else line[len(prefix):])
        if suffix:
            text.append(suffix, style=suffix_style)
        self.console.print(text, highlight=False, soft_wrap=False)

    def __call__(self, e) -> None:
        if e.kind in ("info", "debug"):
            if e.kind == "info" or self.debug:
                self._print([("=> ", "dim")], _text(e))
            return
        n = self.number(e.op)
        if e.kind == "progress":
            key = (e.op, e.text)
            with self.lock:
                if e.done:
                    self.items.pop(key, None)
                else:
                    self.items[key] = e
            if e.done:
                self._print([(f" => #{n} ", "")], _short(_text(e)),
                            f"{byte_count(e.current, e.total)} {e.duration:.1f}s", "green")
            return
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
            self._print([(" => ", ""), ("CACHED", "blue"), (f" #{n} ", "")], _name(e))
        elif e.kind == "finished":
            self._print([(f" => #{n} ", "")], _name(e), f"{e.duration:.1f}s{_where(e)}", "green")
        elif e.kind == "failed":
            self.failed(e)
            self._print([(" => ", ""), ("ERROR", "red"), (f" #{n} ", "")], _name(e), f"{e.duration:.1f}s", "red")

    def close(self) -> None:
        from rich.text import Text

        self.live.stop()
        for n, text in self.unclaimed():  # whole: an error is worth its wrapped lines
            self.console.print(Text.assemble(("ERROR", "red"), f" #{n} {text}"), highlight=False)


def _short(label: str) -> str:
    """``extracting sha256:0123456789ab`` for a label naming a whole digest (the tty has no room)."""
    head, _, digest = label.rpartition("sha256:")
    return f"{head}sha256:{digest[:12]}" if len(digest) == 64 else label
