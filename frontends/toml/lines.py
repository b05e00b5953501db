"""Which line of a TOML text each key and array element is on.

``tomllib`` returns plain dicts without positions, so recipe errors would have nowhere to point.
This is a small scanner of the same text: it follows table headers (``[a.b]``, ``[[a.b]]`` with
their running index), dotted keys, inline tables and arrays (elements by index), and skips over
strings of every TOML flavour and comments.  It trusts that ``tomllib`` has already accepted the
text, so it never reports errors of its own.

    lines = key_lines(text)
    lines[("stages", "app", "steps", 3, "mounts", 0)]   # -> 14
"""

from __future__ import annotations

import re

Path = tuple  # of str keys and int indices

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.S)
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\"}


def _unescape(m: re.Match) -> str:
    """One escape of a TOML basic string (``codecs``' unicode_escape would read the UTF-8 bytes of
    non-ASCII keys as Latin-1 and warn about escapes Python lacks)."""
    esc = m.group(1)
    if len(esc) > 1:
        code = int(esc[1:], 16)
        return chr(code) if code <= 0x10FFFF else m.group(0)
    return _SIMPLE_ESCAPES.get(esc, m.group(0))
_WS = " \t"


class _Scanner:
    def __init__(self, text: str) -> None:
        self.t = text
        self.i = 0
        self.line = 1
        self.out: dict[Path, int] = {}
        self.aot: dict[Path, int] = {}  # array-of-tables path (with indices above) -> count

    # -- low level ------------------------------------------------------------------------
    def peek(self) -> str:
        return self.t[self.i] if self.i < len(self.t) else ""

    def advance(self, n: int = 1) -> None:
        chunk = self.t[self.i:self.i + n]
        self.line += chunk.count("\n")
        self.i += n

    def skip_ws(self, newlines: bool = False) -> None:
        while self.i < len(self.t):
            c = self.t[self.i]
            if c in _WS or (newlines and c in "\r\n"):
                self.advance()
            elif c == "#":
                while self.i < len(self.t) and self.t[self.i] != "\n":
                    self.i += 1
            else:
                return

    def string(self) -> str:
        t = self.t
        for quote in ('"""', "'''"):
            if t.startswith(quote, self.i):
                end = self.i + 3
                while True:
                    j = t.find(quote, end)
                    if j < 0:
                        j = len(t) - 3
                    if quote == '"""' and _escaped(t, j):
                        end = j + 1
                        continue
                    while t.startswith(quote[0], j + 3):  # up to two quotes may close the content
                        j += 1
                    break
                value = t[self.i + 3:j]
                self.advance(j + 3 - self.i)
                return value
        if self.i >= len(t):  # an unterminated string ran to the end (invalid TOML)
            return ""
        q = t[self.i]
        j = self.i + 1
        while j < len(t) and t[j] != q:
            j += 2 if (q == '"' and t[j] == "\\") else 1
        value = t[self.i + 1:j]
        if q == '"' and "\\" in value:
            value = _ESCAPE.sub(_unescape, value)
        self.advance(j + 1 - self.i)
        return value

    def key(self) -> list[str]:
        parts = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c in "\"'":
                parts.append(self.string())
            else:
                m = _BARE.match(self.t, self.i)
                if not m:
                    return parts
                parts.append(m.group(0))
                self.advance(m.end() - self.i)
            self.skip_ws()
            if self.peek() == ".":
                self.advance()
                continue
            return parts

    # -- structure ------------------------------------------------------------------------
    def table_path(self, keys: list[str], new_aot: bool) -> Path:
        path: list = []
        for n, k in enumerate(keys):
            path.append(k)
            last = n == len(keys) - 1
            if last and new_aot:
                count = self.aot.get(tuple(path), 0)
                self.aot[tuple(path)] = count + 1
                path.append(count)
            elif tuple(path) in self.aot:
                path.append(self.aot[tuple(path)] - 1)
        return tuple(path)

    def document(self) -> dict[Path, int]:
        table: Path = ()
        while self.i < len(self.t):
            self.skip_ws(newlines=True)
            if self.i >= len(self.t):
                break
            if self.peek() == "[":
                aot = self.t.startswith("[[", self.i)
                line = self.line
                self.advance(2 if aot else 1)
                keys = self.key()
                self.skip_ws()
                self.advance(2 if aot else 1)
                table = self.table_path(keys, aot)
                self.out.setdefault(table, line)
                for n in range(1, len(table)):
                    self.out.setdefault(table[:n], line)
                continue
            self.keyval(table)
        return self.out

    def keyval(self, prefix: Path) -> None:
        line = self.line
        keys = self.key()
        path = prefix + tuple(keys)
        for n in range(len(prefix) + 1, len(path) + 1):
            self.out.setdefault(path[:n], line)
        self.skip_ws()
        if self.peek() == "=":
            self.advance()
        self.skip_ws()
        self.value(path)

    def value(self, path: Path) -> None:
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.advance()
            n = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() in ("]", ""):
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                self.out[path + (n,)] = self.line
                self.value(path + (n,))
                n += 1
        elif c == "{":
            self.advance()
            while True:
                self.skip_ws(newlines=True)
                if self.peek() in ("}", ""):
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                self.keyval(path)
        else:  # number, bool, date: up to a delimiter
            start = self.i
            while self.i < len(self.t) and self.t[self.i] not in ",]}\n#":
                self.i += 1
            if self.i == start and self.peek() in ",]}":
                self.advance()  # a stray delimiter (invalid TOML): step over it rather than loop on it


def _escaped(t: str, j: int) -> bool:
    n = 0
    while j - n - 1 >= 0 and t[j - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def key_lines(text: str) -> dict[Path, int]:
    """Line of every key path (tables, keys, array elements) in ``text``."""
    return _Scanner(text).document()


def line_of(lines: dict[Path, int], path: Path) -> int:
    """The line of ``path``, else of its longest known prefix; 1 when nothing is known."""
    for n in range(len(path), 0, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1


def format_path(path: Path) -> str:
    """``stages.app.steps[3].mounts[0]``; keys that are not bare are quoted."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            k = p if _BARE.fullmatch(p) else '"' + p.replace('"', '\\"') + '"'
            out += ("." if out else "") + k
    return out
