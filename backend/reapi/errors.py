"""What a REAPI server refused, as one line naming the server: ``REAPI server grpc://h:p: <what>``.

gRPC's own errors are long, multi-line and carry the server's text verbatim; a hostile server's text
could hold escape sequences for the user's terminal.  Here a status code becomes a short word, the
server's detail is cut to one escaped line, and which calls are retried (and how often) is decided in
one place: only a call that is safe to repeat, only on UNAVAILABLE or RESOURCE_EXHAUSTED, a bounded
number of times with growing pauses.
"""

from __future__ import annotations

import random
import re
import time
from typing import Callable, TypeVar

from backend.errors import BackendError

T = TypeVar("T")

ATTEMPTS = 4  # a retried call runs at most this often
BACKOFF = 0.25  # seconds before the first retry; doubled each time, with jitter
DETAIL_CHARS = 160
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# gRPC status code name -> what the user reads
WORDS = {
    "CANCELLED": "cancelled", "UNKNOWN": "failed", "INVALID_ARGUMENT": "refused the request",
    "DEADLINE_EXCEEDED": "timed out", "NOT_FOUND": "not found", "ALREADY_EXISTS": "already exists",
    "PERMISSION_DENIED": "permission denied", "RESOURCE_EXHAUSTED": "overloaded",
    "FAILED_PRECONDITION": "refused (failed precondition)", "ABORTED": "aborted",
    "OUT_OF_RANGE": "out of range", "UNIMPLEMENTED": "not implemented by this server",
    "INTERNAL": "internal server error", "UNAVAILABLE": "unavailable", "DATA_LOSS": "data loss",
    "UNAUTHENTICATED": "authentication required",
}
CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
RETRYABLE = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})


class RemoteError(BackendError):
    """A REAPI server failed or refused a call, or sent something irctl refuses; ``str()`` is one line."""

    def __init__(self, url: str, what: str, code: str = ""):
        super().__init__(f"REAPI server {url}: {what}")
        self.url, self.what, self.code = url, what, code  # code: the gRPC status name, "" if none


class Unreachable(RemoteError):
    """The server could not be reached: connection refused, unknown host, or no answer in time."""


class BlobMismatch(RemoteError):
    """A blob whose bytes do not hash to (or are not the size of) the digest asked for."""


class BlobNotFound(RemoteError):
    """The CAS does not hold a blob asked for."""


def clean(text: str, limit: int = DETAIL_CHARS) -> str:
    """A server's text made safe for one terminal line: control characters shown escaped, cut short."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return text if len(text) <= limit else text[:limit] + "…"


def status_text(status) -> str:
    """A ``google.rpc.Status`` a server put in a message, as words."""
    code = status.code
    name = CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else ""
    word = WORDS.get(name, f"status {code}")
    return word + (f" ({clean(status.message)})" if status.message else "")


def code_of(error: BaseException) -> str:
    """The gRPC status name of an ``RpcError`` ("" for anything else)."""
    code = getattr(error, "code", None)
    try:
        return code().name if callable(code) else ""
    except Exception:  # a grpc.RpcError that is not a Call has no code()
        return ""


def _reason(detail: str) -> str:
    """gRPC's connection failures, spelled as the user knows them."""
    low = detail.lower()
    for needle, reason in (("connection refused", "connection refused"), ("dns", "unknown host"),
                           ("name or service not known", "unknown host"), ("errors resolving", "unknown host"),
                           ("domain name not found", "unknown host"), ("handshake", "TLS handshake failed"),
                           ("ssl", "TLS handshake failed"), ("timeout", "timed out"),
                           ("connection reset", "connection reset"), ("socket closed", "connection closed")):
        if needle in low:
            return reason
    return clean(detail) or "unavailable"


def translate(url: str, rpc: str, error: BaseException, *, reached: bool) -> RemoteError:
    """The ``RemoteError`` for a failed call ``rpc``.  ``reached``: the server answered a call before,
    so a timeout is the call's, not the connection's."""
    code = code_of(error)
    detail = getattr(error, "details", lambda: "")() if callable(getattr(error, "details", None)) else ""
    detail = detail or ""
    if detail.lower().replace(" ", "_") == code.lower():  # gRPC's own "Deadline Exceeded": no news
        detail = ""
    if code == "UNAVAILABLE" or (code == "DEADLINE_EXCEEDED" and not reached):
        reason = "timed out" if code == "DEADLINE_EXCEEDED" else _reason(detail)
        return Unreachable(url, f"cannot reach it ({reason})", code)
    word = WORDS.get(code, "failed")
    return RemoteError(url, f"{rpc}: {word}" + (f" ({clean(detail)})" if detail else ""), code)


def with_retries(call: Callable[[], T], *, retry: bool = True, attempts: int = ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``; repeated after a pause while it fails with a retryable gRPC status (when ``retry``:
    only for calls that are safe to repeat).  The last error propagates as gRPC raised it."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as e:
            if not retry or attempt == attempts - 1 or code_of(e) not in RETRYABLE:
                raise
            sleep(BACKOFF * (2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")
