"""Located diagnostics shared by every frontend.

A :class:`Span` names a stretch of source text (file, 1-based line and column, inclusive end line and
exclusive end column).  :class:`SourceError` is the one exception type frontends raise for bad input;
:class:`SourceWarning` is the same shape but not fatal (e.g. BuildKit's build checks).  Both print in
the compiler style popularised by xDSL's ``Span.print_with_context``::

    Dockerfile:12:5: unknown flag: --frm (did you mean --from?)
    COPY --frm=build /a /b
         ^^^^^^^^^^^

The source line is only printed when the span was given the text it points into.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A region of one source file.  ``end_column`` is exclusive; 0 means "to the end of the line"."""

    file: str
    line: int
    column: int = 1
    end_line: int = 0
    end_column: int = 0
    source_line: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.line < 0 or self.column < 0:
            raise ValueError(f"negative position in span {self.line}:{self.column}")
        if self.end_line == 0:
            object.__setattr__(self, "end_line", self.line)

    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def caret(self) -> str:
        """The marker line: spaces up to the column, then ``^`` under the spanned characters."""
        if self.source_line is None:
            return ""
        text = self.source_line
        start = max(self.column, 1) - 1
        if self.end_line == self.line and self.end_column > self.column:
            width = self.end_column - self.column
        else:
            width = 1
        width = max(1, min(width, max(1, len(text) - start)))
        pad = "".join("\t" if ch == "\t" else " " for ch in text[:start])
        return pad + "^" * width

    def format(self, message: str, severity: str = "") -> str:
        head = f"{self.location()}: {severity + ': ' if severity else ''}{message}"
        if self.source_line is None:
            return head
        return f"{head}\n{self.source_line}\n{self.caret()}"


class FrontendError(Exception):
    """Base class of every error a frontend raises (``frontends.FrontendError``, part of the
    contract): ``str()`` is the full located message the user sees."""


class SourceError(FrontendError):
    """Bad input at a known place in a source file."""

    def __init__(self, message: str, span: Span) -> None:
        self.message = message
        self.span = span
        super().__init__(f"{span.location()}: {message}")

    def format(self) -> str:
        return self.span.format(self.message)


@dataclass(frozen=True)
class SourceWarning:
    """A non-fatal finding (a lint rule) with its place; ``rule`` is BuildKit's check name."""

    rule: str
    message: str
    span: Span
    url: str = ""

    def format(self) -> str:
        return self.span.format(f"{self.rule}: {self.message}", "warning")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...], prefix: str = "") -> str:
    """`` (did you mean X?)`` for the closest choice, or ``""`` if nothing is close (difflib)."""
    import difflib  # lazy: ~20 ms to import (-X importtime), paid only when an error wants a hint

    best = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not best:
        return ""
    original = next(c for c in choices if c.lower() == best[0])
    return f" (did you mean {prefix}{original}?)"


def quoted_hint(word: str, choices) -> str:
    """`` (did you mean "X"?)`` for the closest choice, or ``""``."""
    hint = did_you_mean(word, list(choices))
    return hint.replace("(did you mean ", '(did you mean "').replace("?)", '"?)') if hint else ""
