"""REAPI digests in irctl's spelling: ``("sha256:<hex>", size)``, converted to and from the protocol's
``Digest{hash, size_bytes}`` only here.

A digest read from a server (or from a message a server stored) is hostile input: it names a path
(ByteStream resource names, a worker's input files), so its hash must be exactly 64 lowercase hex
digits and its size a non-negative integer before anything uses it.  Messages are hashed as their
deterministic serialisation, the bytes every REAPI client and server agrees on for the same message.
"""

from __future__ import annotations

import hashlib
import re

from backend.errors import BackendError
from backend.reapi.protos import remote_execution_pb2 as re_pb2

Digest = tuple[str, int]  # ("sha256:<64 lowercase hex>", size in bytes)

PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")
MAX_SIZE = 1 << 62  # REAPI's size_bytes is an int64; anything near its end is a lie


class DigestError(BackendError, ValueError):
    """A digest that is not a SHA-256 digest of a plausible size; ``str()`` shows it (escaped)."""


def digest_of(data: bytes) -> Digest:
    return PREFIX + hashlib.sha256(data).hexdigest(), len(data)


EMPTY: Digest = digest_of(b"")  # REAPI: every server has the empty blob without being sent it


def check(digest: Digest) -> Digest:
    """``digest`` itself when it is well formed (a caller's value about to name a path or a request)."""
    try:
        text, size = digest
    except (TypeError, ValueError):
        raise DigestError(f"not a digest: {digest!r:.100}") from None
    if (not isinstance(text, str) or not text.startswith(PREFIX) or not _HEX.fullmatch(text[len(PREFIX):])
            or type(size) is not int or not 0 <= size <= MAX_SIZE):
        raise DigestError(f"not a sha256 digest: {text!r:.100} ({size!r:.30} bytes)")
    return digest


def hex_of(digest: Digest) -> str:
    return check(digest)[0][len(PREFIX):]


def to_proto(digest: Digest) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hex_of(digest), size_bytes=digest[1])


def from_proto(pb: re_pb2.Digest) -> Digest:
    """The digest a (hostile) message names; ``DigestError`` unless 64 lowercase hex and a sane size."""
    return check((PREFIX + pb.hash, pb.size_bytes))


def message_digest(message) -> tuple[bytes, Digest]:
    """A message's deterministic bytes and their digest: what is uploaded and what refers to it."""
    data = message.SerializeToString(deterministic=True)
    return data, digest_of(data)
