"""Where a REAPI server is: ``grpc://HOST:PORT`` or ``grpcs://HOST:PORT`` and ``,key=value`` options.

One spelling for every flag that names a server (``--remote-cache``, ``--remote``, ``irctl worker
--server``), in the ``key=value`` style of ``--cache-to``.  ``instance=NAME`` belongs to the server
(REAPI's instance name); any other key is the flag's own, returned to it when the flag allows it.
A server address is typed by a user or written in CI config: anything else (userinfo, a path, a
query, a missing port) is refused with one line naming the flag, not guessed at.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from backend.errors import BackendError

SCHEMES = {"grpc": False, "grpcs": True}  # scheme -> TLS
# REAPI: an instance name may not contain these path segments (they delimit ByteStream resource names)
RESERVED_SEGMENTS = frozenset({"blobs", "uploads", "actions", "actionResults", "operations",
                               "capabilities", "compressed-blobs"})
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


class EndpointError(BackendError, ValueError):
    """A server address irctl cannot use; ``str()`` names the flag and the value.  A ``ValueError`` too,
    so a CLI option parser that reports ``ValueError`` reports this one as it is."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # grpc://HOST:PORT, canonical: what every message about this server names
    target: str  # HOST:PORT, what grpc dials
    instance: str = ""  # the REAPI instance name ("" is the server's default instance)
    tls: bool = False

    def __str__(self) -> str:
        return self.url


def parse_endpoint(text: str, flag: str, allowed: tuple[str, ...] = ()) -> tuple[Endpoint, dict[str, str]]:
    """``grpc://HOST:PORT[,instance=NAME][,key=value…]`` → the endpoint and the ``allowed`` options."""

    def refuse(why: str) -> EndpointError:
        return EndpointError(f"{flag} {text!r}: {why}")

    address, *options = text.strip().split(",")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as e:
        raise refuse(f"not an address ({e})") from None
    if parts.scheme not in SCHEMES:
        raise refuse("expected grpc://HOST:PORT or grpcs://HOST:PORT")
    if parts.username is not None or parts.password is not None:
        raise refuse("credentials in the address are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise refuse("expected grpc://HOST:PORT with nothing after the port (options follow a comma)")
    host = parts.hostname or ""
    if not host or not _PRINTABLE.fullmatch(host):
        raise refuse("the host is missing")
    if port is None or port == 0:
        raise refuse("the port is missing (grpc://HOST:PORT)")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    values: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if not eq or not key:
            raise refuse(f"expected key=value after a comma, got {option!r}")
        if key != "instance" and key not in allowed:
            known = ("instance", *allowed)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
            raise refuse(f"unknown option {key!r} ({hint})")
        if key in values:
            raise refuse(f"{key}= given twice")
        values[key] = value.strip()
    instance = values.pop("instance", "")
    _check_instance(instance, refuse)
    endpoint = Endpoint(url=f"{parts.scheme}://{hostport}", target=hostport, instance=instance,
                        tls=SCHEMES[parts.scheme])
    return endpoint, values


def _check_instance(name: str, refuse) -> None:
    if not name:
        return
    if not _PRINTABLE.fullmatch(name):
        raise refuse("instance= may hold printable characters only, no spaces")
    segments = name.split("/")
    if "" in segments or "." in segments or ".." in segments:
        raise refuse("instance= has an empty, '.' or '..' path segment")
    reserved = RESERVED_SEGMENTS.intersection(segments)
    if reserved:
        raise refuse(f"instance= may not contain the segment {min(reserved)!r} (REAPI reserves it)")
