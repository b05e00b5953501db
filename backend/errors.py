"""The root of every error backend/ raises, and the errors the solver reports.

Every exception class defined in backend/ descends from ``BackendError`` (tests/backend/test_errors.py
walks the modules), so a caller can catch "anything the backend refused" in one clause, and the CLI
(``irctl/errors.py``) prints ``str(e)`` of any of them as one line, without a traceback: each
``str()`` is written for the user.  A room's base that several of its modules raise lives here
(``LayerError``, ``ContainerError``, ``ExportError``); a class one module raises lives beside it
(``RegistryError`` in ``oci/reference.py``, ``SnapshotError`` in ``snapshot/``, ...).  A class keeps a
builtin base only where callers rely on it, and says why in its docstring (``fs.safefs.TreeError``
is an ``OSError``).

A ``BuildError`` names the failing op, where it came from in the user's source (``Dockerfile:7`` and
the marked lines, from the document's source map) and the last lines of its output, the way BuildKit
reports a failing step.
"""

from __future__ import annotations


class BackendError(Exception):
    """Root of every error backend/ raises; ``str()`` is the message for the user."""


class LayerError(BackendError):
    """A layer could not be written or an archive was refused (``backend/oci``: the layer tar, its
    compression, its extraction and its blobs in the store all raise it)."""


class ContainerError(BackendError):
    """Running a container failed (``backend/runtime``); a process exiting non-zero is not one: that is
    its exit code."""


class ExportError(BackendError):
    """An image could not be assembled or written (``backend/export``)."""


class SolveError(BackendError):
    """Base class of everything the solver reports to the user."""


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
