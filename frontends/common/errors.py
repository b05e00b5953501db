"""The one exception of the shared stage layer."""

from __future__ import annotations


class StageError(ValueError):
    """A bad value, reported without a place: the frontend that passed the value adds its location."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
