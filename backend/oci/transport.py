"""The HTTP under the registry client: httpx imported without what irctl never uses (its CLI,
trio), a transport that makes its TLS context only when a request needs one, and the retry rules
(which failures may succeed on another attempt, how long a ``Retry-After`` is honoured).

httpx costs ~0.1 s to import: callers that may not talk to a registry import this room lazily
(``# lazy:`` beside the import).
"""

from __future__ import annotations

import errno
import socket
import ssl
import sys
import threading
from urllib.parse import urlencode

# httpx's __init__ imports its command-line tool (click, rich, pygments: ~40 ms per build) unless that
# import fails, which it handles; irctl never runs httpx's CLI.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx  # noqa: E402

from backend.oci.reference import RegistryError  # noqa: E402

TRANSIENT_STATUS = (429, 500, 502, 503, 504)


def import_httpcore() -> None:
    """Import httpcore (httpx imports it on its first transport) without trio.  httpcore imports
    trio, when installed, only for its async locks under a trio event loop (~0.1 s here); irctl's
    clients are synchronous.  trio stays importable for anyone else afterwards."""
    if "httpcore" in sys.modules:
        return
    block = "trio" not in sys.modules
    if block:
        sys.modules["trio"] = None  # type: ignore[assignment]  # makes `import trio` raise ImportError
    try:
        import httpcore  # noqa: F401
    finally:
        if block and "trio" in sys.modules and sys.modules["trio"] is None:
            del sys.modules["trio"]


MAX_RETRY_AFTER = 30.0  # seconds: a registry asking for more is not waited for longer


def retry_delay(retry_after: str, backoff: float) -> float:
    """The wait before a retry: a registry's ``Retry-After`` seconds (ASCII digits only: ``²`` is
    ``isdigit()``), capped; an HTTP date or anything else falls back to our own backoff."""
    if retry_after.isascii() and retry_after.isdigit() and len(retry_after) <= 6:
        return min(float(retry_after), MAX_RETRY_AFTER)
    return backoff


class LazyTLSTransport(httpx.BaseTransport):
    """httpx's default transport, except that its TLS context (loading the CA bundle costs 50-500 ms)
    is made on the first ``https://`` request: a plain-HTTP (loopback) registry never pays for it.
    ``http://`` requests go through a pool whose context has no CA at all, so it could never
    verify a server (it never does TLS: the scheme decides, request by request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plain: httpx.HTTPTransport | None = None
        self._tls: httpx.HTTPTransport | None = None

    def _transport(self, https: bool) -> httpx.HTTPTransport:
        with self._lock:
            import_httpcore()
            if https:
                if self._tls is None:
                    self._tls = httpx.HTTPTransport()
                return self._tls
            if self._plain is None:
                self._plain = httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
            return self._plain

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._transport(request.url.scheme != "http").handle_request(request)

    def close(self) -> None:
        for t in (self._plain, self._tls):
            if t is not None:
                t.close()


_FINAL_ERRNOS = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)


def transient(e: httpx.TransportError) -> bool:
    """Whether another attempt could succeed: a timeout or a connection that broke (reset, closed
    mid-reply) may; a host name that does not resolve (no such host, or no network to ask), no route,
    a refused connection or a TLS failure fails the same way again, as docker's and BuildKit's pulls
    assume.  Retrying those only delays the error: a mistyped ``COPY --from=biuld`` is an image name
    on docker.io, and its "did you mean build?" came after five attempts."""
    if isinstance(e, httpx.TimeoutException):
        return True
    if isinstance(e, (httpx.UnsupportedProtocol, httpx.ProxyError, httpx.LocalProtocolError)):
        return False
    cause: BaseException | None = e
    for _ in range(8):  # httpx wraps httpcore's error, which wraps the socket's
        if cause is None:
            break
        if isinstance(cause, socket.gaierror):
            return False
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return False  # a certificate or protocol mismatch; an EOF mid-handshake is a cut connection
        if isinstance(cause, OSError) and cause.errno in _FINAL_ERRNOS:
            return False
        cause = cause.__cause__ or cause.__context__
    return True


def read_capped(resp: httpx.Response, limit: int, what: str) -> bytes:
    buf = bytearray()
    try:
        for chunk in resp.iter_bytes(1 << 16):
            buf += chunk
            if len(buf) > limit:
                raise RegistryError(f"{what} is larger than {limit} bytes; refusing it")
    except (httpx.TransportError, httpx.StreamError) as e:
        raise RegistryError(f"{what}: {e}") from None
    finally:
        resp.close()
    return bytes(buf)


def add_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)
