"""Physical lines → logical lines, the way BuildKit's line-based parser reads a Dockerfile.

A Dockerfile is not context free at the line level: the escape character is chosen by a directive
on the first lines, a line continues while it ends with that character, comment and blank lines
inside a continuation vanish, and an instruction that names a here-document swallows the following
lines verbatim until a terminator.  BuildKit (``frontend/dockerfile/parser/parser.go``) does this
with a scanner loop; so do we, keeping for every character of a joined line the physical line and
column it came from, so that later stages can point a caret at the exact place of an error.

This module knows nothing about instructions except which words may carry heredocs: the caller
passes a callback that decides, from the joined line, whether to read heredoc bodies.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Callable

from frontends.common.expand import GO_SPACE
from frontends.errors import SourceError, Span


_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z", re.S)
KNOWN_DIRECTIVES = ("syntax", "escape", "check")


@dataclass(frozen=True)
class Directive:
    """A parser directive (``# name=value``) from the head of the file."""

    name: str
    value: str
    line: int


@dataclass
class HeredocBody:
    """One ``<<NAME`` of an instruction and the raw text read for it (line endings kept)."""

    name: str
    file_descriptor: int
    expand: bool
    chomp: bool
    content: str = ""
    start_line: int = 0  # first body line (the terminator's line if the body is empty)
    end_line: int = 0  # the terminator's line


@dataclass(slots=True)
class LogicalLine:
    """One instruction's text with continuations joined, and where each piece came from."""

    text: str
    start_line: int
    end_line: int
    # (offset in text, physical line, 1-based column) for every joined piece, offsets ascending
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    heredocs: list[HeredocBody] = field(default_factory=list)
    empty_continuation_lines: list[int] = field(default_factory=list)

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column) in the source of character ``offset`` of :attr:`text`."""
        segs = self.segments
        if len(segs) == 1:
            return segs[0][1], segs[0][2] + offset
        i = bisect.bisect_right(segs, (offset, 1 << 62, 0)) - 1
        if i < 0:
            i = 0
        start, line, col = self.segments[i]
        return line, col + (offset - start)


class LineSource:
    """The raw text split the way Go's scanner with BuildKit's ``scanLines`` splits it."""

    def __init__(self, text: str, filename: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        self.filename = filename
        parts = text.split("\n")
        lines = [p + "\n" for p in parts[:-1]]
        if parts[-1]:
            lines.append(parts[-1])
        self.raw = lines
        self._display: list[str] | None = None

    def display(self, line: int) -> str:
        """The source line ``line`` (1-based) without its line ending, for diagnostics."""
        lines = self._display
        if lines is None:
            lines = self._display = [r.rstrip("\r\n") for r in self.raw]
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return ""

    def span(self, line: int, column: int = 1, end_column: int = 0, end_line: int = 0) -> Span:
        return Span(self.filename, line, column, end_line or line, end_column, self.display(line))


class Scanner:
    """Iterates the logical lines of a Dockerfile.  ``wants_heredocs(text)`` returns the heredocs an
    instruction line announces (empty if it cannot carry any)."""

    def __init__(
        self,
        source: LineSource,
        wants_heredocs: Callable[[str, "Scanner"], list[HeredocBody]],
    ) -> None:
        self.src = source
        self.wants_heredocs = wants_heredocs
        self.escape = "\\"
        self.directives: list[Directive] = []
        self._directives_done = False

    # -- directives -------------------------------------------------------------------------
    def _set_escape(self, token: str) -> None:
        self.escape = token

    def _directive(self, token: str, line: int) -> None:
        if self._directives_done:
            return
        if not token.startswith("#"):
            self._directives_done = True
            return
        m = _DIRECTIVE.match(token[1:].lstrip(GO_SPACE))
        if not m or m.group(1).lower() not in KNOWN_DIRECTIVES:
            self._directives_done = True
            return
        name, value = m.group(1).lower(), m.group(2)
        if any(d.name == name for d in self.directives):
            raise SourceError(f"only one {name} parser directive can be used", self.src.span(line))
        if name == "escape":
            if value not in ("`", "\\"):
                raise SourceError(
                    f"invalid escape token '{value}' does not match ` or \\", self.src.span(line)
                )
            self._set_escape(value)
        self.directives.append(Directive(name, value, line))

    # -- the loop ---------------------------------------------------------------------------
    def __iter__(self):
        raw = self.src.raw
        n = len(raw)
        i = 0
        while i < n:
            lineno = i + 1
            token = raw[i].rstrip("\r\n")
            stripped = token.lstrip(GO_SPACE)
            indent = len(token) - len(stripped)
            if not self._directives_done:
                self._directive(stripped, lineno)
            esc = self.escape
            i += 1
            if stripped[:1] == "#":
                continue
            t = stripped.rstrip(" \t")
            if t[-1:] == esc and (len(t) == 1 or t[-2] != esc):
                text, eol = t[:-1], False
            else:
                text, eol = stripped, True
                if not text:
                    continue
            ll = LogicalLine("", lineno, lineno, [(0, lineno, indent + 1)], [], [])
            pieces = [text]
            length = len(text)
            while not eol and i < n:
                lineno = i + 1
                rawline = raw[i]
                i += 1
                token = rawline.rstrip("\r\n")
                if not self._directives_done:
                    self._directive(token, lineno)
                body = token.lstrip(GO_SPACE)
                if body[:1] == "#":
                    continue
                if not body:
                    ll.empty_continuation_lines.append(lineno)
                    continue
                t = token.rstrip(" \t")
                if t[-1:] == esc and (len(t) == 1 or t[-2] != esc):
                    piece, eol = t[:-1], False
                else:
                    piece, eol = token, True
                ll.segments.append((length, lineno, 1))
                pieces.append(piece)
                length += len(piece)
            ll.text = "".join(pieces)
            ll.end_line = i
            if "<<" in ll.text:
                for doc in self.wants_heredocs(ll.text, self):
                    doc.start_line = i + 1
                    collected: list[str] = []
                    terminated = False
                    while i < n:
                        rawline = raw[i]
                        i += 1
                        candidate = rawline.rstrip("\r\n")
                        if doc.chomp:
                            candidate = candidate.lstrip("\t")
                        if candidate == doc.name:
                            terminated = True
                            break
                        collected.append(rawline)
                    if not terminated:
                        raise SourceError(
                            f"unterminated heredoc {doc.name!r} (no line with just {doc.name})",
                            self.src.span(ll.start_line, ll.segments[0][2]),
                        )
                    doc.content = "".join(collected)
                    doc.end_line = i
                    ll.heredocs.append(doc)
                ll.end_line = i
            yield ll
