"""The one exit path for user errors: a message on stderr and an exit code, never a traceback.

Library errors (``ir.errors.IRError``, a frontend's located error, a backend build error) are
turned into ``UserError`` by ``user_errors()``, a context manager every command runs inside.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from ir.errors import IRError
from irctl.terminal import printable


class UserError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def report(e: BaseException) -> None:
    """Write the message to stderr, control characters escaped (``irctl.terminal``): it may quote
    a Dockerfile line, a path from a context, a step's output or IR metadata."""
    text = printable(str(e), newlines=True)
    sys.stderr.write(("error: " + text if "\n" not in text and not _located(text) else text) + "\n")


def _located(text: str) -> bool:
    head = text.split(" ", 1)[0]
    return head.count(":") >= 2 or head.startswith("ops[")


@contextlib.contextmanager
def user_errors(exit_code: int = 1) -> Iterator[None]:
    """Translate every known library error into a ``UserError`` (IR errors exit 2)."""
    try:
        yield
    except IRError as e:
        raise UserError(str(e), 2) from None
    except OSError as e:
        if e.filename is not None:
            raise UserError(f"{e.filename}: {e.strerror}", exit_code) from None
        if not _is_ours(e):  # a bare OSError of ours (safefs.TreeError) still has a message
            raise
        raise UserError(str(e), exit_code) from None
    except Exception as e:
        # Exceptions our packages define (backend.errors.BackendError and below, ...) carry a
        # user-facing str(); anything else is a bug.
        if getattr(type(e), "user_facing", False) or _is_ours(e):
            raise UserError(str(e), exit_code) from None
        raise


def _is_ours(e: BaseException) -> bool:
    mod = type(e).__module__.split(".", 1)[0]
    return mod in ("frontends", "backend", "ir", "irctl")
