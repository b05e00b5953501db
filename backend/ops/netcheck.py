"""Which addresses a fetched source (http, git) may reach: only the public internet, unless granted.

A graph is untrusted, and a URL in it is the classic server-side request forgery: ``http://127.0.0.1:8080/``,
``http://169.254.169.254/latest/meta-data/`` (a cloud's metadata service), ``http://10.0.0.5/`` behind the
firewall, a name whose DNS answer is any of those.  Without ``--allow network.private`` a source may
reach only *global* unicast addresses (Python's ``is_global``: not loopback, link-local, private,
CGNAT 100.64/10, unique-local fc00::/7, unspecified, reserved, documentation, benchmarking…), and no
multicast; an IPv6 address that embeds an IPv4 one (``::ffff:127.0.0.1``, ``::127.0.0.1``,
``2002:7f00:1::``) is judged by the IPv4 address it carries.

The check is on the *resolved* addresses (every one of them must pass), and callers connect to the
address checked here, not to the name again: no DNS-rebinding window between check and connect.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from backend.errors import GrantError

GRANT = "--allow network.private"


def _kind(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``addr`` is not a public unicast address, or None when it is."""
    if isinstance(addr, ipaddress.IPv6Address):
        inner = addr.ipv4_mapped or addr.sixtofour
        if inner is None and addr.packed[:12] == bytes(12) and int(addr) > 1:
            inner = ipaddress.IPv4Address(addr.packed[12:])  # IPv4-compatible ::a.b.c.d (deprecated, still routed)
        if inner is not None:
            why = _kind(inner)
            return f"{why} (as {addr})" if why else None
    for name in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(addr, f"is_{name}"):
            return "link-local" if name == "link_local" else name
    if not addr.is_global:
        return "not globally routable"
    return None


def refusal(addr: str) -> str | None:
    """Why connecting to the literal address ``addr`` needs the grant, or None."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    return _kind(ip)


def literal_refusal(host: str) -> str | None:
    """Why ``host`` needs the grant judging by its spelling alone (an address, ``localhost``), or None;
    the solver's up-front check, before any name is resolved."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return "loopback"
    return refusal(name)


@dataclass(frozen=True)
class Checked:
    host: str  # as the URL spells it (no brackets)
    port: int
    address: str  # the checked address to connect to


def resolve(host: str, port: int, allow_private: bool, what: str) -> Checked:
    """Resolve ``host`` and check every address it has; the first is the one to connect to.

    ``what`` names the source for messages (``GET http://…``, ``git https://…``)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare:
        raise GrantError(f"{what}: no host in the URL")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise GrantError(f"{what}: cannot resolve {bare!r}: {getattr(e, 'strerror', None) or e}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise GrantError(f"{what}: {bare!r} has no address")
    if not allow_private:
        for a in addresses:
            why = refusal(a)
            if why is not None:
                shown = f"{bare} resolves to {a}" if bare != a else a
                raise GrantError(f"{what}: {shown}, which is {why}: the host's own or private networks are "
                                 f"reachable only when granted; pass {GRANT}")
    return Checked(bare, port, addresses[0])
