"""Errors the solver raises, in one place.

Every error here is user-facing (``user_facing = True``): the CLI prints ``str(e)`` and exits
non-zero without a traceback.  A ``BuildError`` names the failing op, where it came from in the
user's source (``Dockerfile:7`` and the marked lines, from the document's source map) and the last
lines of its output, the way BuildKit reports a failing step.
"""

from __future__ import annotations


class SolveError(Exception):
    """Base class of everything the solver reports to the user."""

    user_facing = True


class GrantError(SolveError):
    """The graph wants something from the host that the user did not grant on the command line."""


class CacheError(SolveError):
    """The cache store is unusable (corrupt index, locked, wrong filesystem)."""


class BuildError(SolveError):
    """An op failed.  ``str()`` is the whole report: what, where, why, and the output tail."""

    def __init__(self, message: str, *, op: str = "", description: str = "", location: str = "",
                 output_tail: tuple[str, ...] = (), exit_code: int | None = None) -> None:
        self.message = message
        self.op = op
        self.description = description
        self.location = location
        self.output_tail = output_tail
        self.exit_code = exit_code
        super().__init__(self.render())

    def render(self) -> str:
        what = self.description or (f"op {self.op[:19]}…" if self.op else "build")
        parts = [f"{what}: {self.message}"]
        if self.location:
            parts.append(self.location)
        if self.output_tail:
            parts.append("output (last lines):")
            parts.extend("  " + line for line in self.output_tail)
        return "\n".join(parts)
