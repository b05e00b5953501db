"""The exceptions of the shared layer: a bad stage value, a word that cannot be expanded."""

from __future__ import annotations

from frontends.errors import FrontendError


class StageError(ValueError):
    """A bad value, reported without a place: the frontend that passed the value adds its location."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExpandError(FrontendError):
    """A word that cannot be expanded: unbalanced quotes or braces, bad ``${…}`` syntax, ``${v?}``."""

    def __init__(self, message: str, source: str = "") -> None:
        self.message = message
        self.source = source
        super().__init__(f"failed to process {_go_quote(source)}: {message}" if source else message)


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
