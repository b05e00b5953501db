"""Every error the IR package raises, in one place.

Errors about a document carry a *key path* (``ops[sha256:ab12…].exec.mounts[2].target``) so a user
of any frontend, or the author of a third-party generator, can find the offending field without a
traceback.  The CLI prints ``str(error)`` and exits 2.
"""

from __future__ import annotations


class IRError(Exception):
    """Base class: anything wrong with an IR document or its use."""

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class DecodeError(IRError):
    """The bytes are not an IR document: bad magic, truncated, not msgpack, wrong shapes."""


class VersionError(IRError):
    """The document needs a newer reader: an unknown major version or feature."""


class ValidationError(IRError):
    """The document decodes but breaks a rule of the spec (schema or graph checks)."""


class ValidationErrors(ValidationError):
    """Several validation errors at once, one per line."""

    def __init__(self, errors: list[IRError]) -> None:
        self.errors = errors
        Exception.__init__(self, "\n".join(str(e) for e in errors))
        self.message = str(self)
        self.path = ""


def key(path: str, name: str | int) -> str:
    """Extend a key path: ``key("ops[x]", "exec")`` → ``ops[x].exec``; ints and digests index."""
    if isinstance(name, int):
        return f"{path}[{name}]"
    if name.startswith("sha256:"):
        return f"{path}[{name[:19]}…]" if len(name) > 19 else f"{path}[{name}]"
    return f"{path}.{name}" if path else name
