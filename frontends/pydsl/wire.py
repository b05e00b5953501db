"""The pipe between irctl and a sandboxed build file: length-prefixed msgpack maps, both ways.

Each frame is a 4-byte big-endian length and a msgpack map with an ``op`` (or ``ok``/``error`` for
a resolver answer).  The parent reads the child's frames as hostile: the length is checked against
the reader's limit before anything is allocated, and :mod:`.sandbox` checks every field's type.
"""

from __future__ import annotations

import struct

import msgpack

from frontends import BuildRequest, NamedContext
from ir import ops

MAX_FRAME = 64 << 20  # the largest reply accepted (the uncompressed IR document)


class WireError(Exception):
    """A frame that is not what the protocol allows."""


# What the parent accepts from the child beyond the frame size: msgpack spends ~64 bytes on an empty
# array or map that costs one byte on the wire, so a 64 MiB frame of them would take 4 GiB of the
# parent's memory; the child's messages are small maps (a few short lists and one bytes document).
MAX_ITEMS = 65536  # list elements and map entries in one message, all levels together
MAX_LEN = 4096  # one list's or map's length


class Channel:
    def __init__(self, reader, writer, limit: int = MAX_FRAME, hostile: bool = False) -> None:
        """``hostile``: frames from the other side are untrusted (the parent's end): bounded in items
        as well as bytes."""
        self.reader, self.writer, self.limit, self.hostile = reader, writer, limit, hostile

    def send(self, msg: dict) -> None:
        data = msgpack.packb(msg, use_bin_type=True)
        self._write(struct.pack(">I", len(data)) + data)

    def _write(self, data: bytes) -> None:
        self.writer.write(data)
        self.writer.flush()

    def _read(self, n: int) -> bytes:
        return self.reader.read(n)

    def _exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self._read(min(n - got, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the pipe")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def receive(self) -> dict:
        (n,) = struct.unpack(">I", self._exact(4))
        if n > self.limit:
            raise WireError(f"a {n}-byte message (the limit is {self.limit})")
        try:
            msg = msgpack.unpackb(self._exact(n), raw=False, strict_map_key=True, use_list=True,
                                  **(_bounded() if self.hostile else {}))
        except (ValueError, msgpack.UnpackException) as e:
            raise WireError(f"not a message: {e}") from None
        if not isinstance(msg, dict):
            raise WireError("not a map")
        return msg


def _bounded() -> dict:
    """msgpack options refusing a message with more than MAX_ITEMS items or a list or map longer
    than MAX_LEN (checked on the declared length, before it is built)."""
    seen = [0]

    def count(obj):
        seen[0] += len(obj) + 1
        if seen[0] > MAX_ITEMS:
            raise ValueError(f"more than {MAX_ITEMS} items in one message")
        return obj

    return {"max_array_len": MAX_LEN, "max_map_len": MAX_LEN, "list_hook": count, "object_hook": count}


def platform_out(p: ops.Platform) -> list[str]:
    return [p.os, p.architecture, p.variant]


def request_out(r: BuildRequest) -> dict:
    return {"source": r.source, "filename": r.filename, "target": r.target, "build_args": dict(r.build_args),
            "contexts": {k: [v.kind, v.value] for k, v in r.contexts.items()}, "context_name": r.context_name,
            "ignore_patterns": list(r.ignore_patterns), "platform": platform_out(r.platform),
            "build_platform": platform_out(r.build_platform),
            "extra_hosts": [[h.host, h.ip] for h in r.extra_hosts], "shm_size": r.shm_size,
            "ulimits": [[u.name, u.soft, u.hard] for u in r.ulimits], "labels": dict(r.labels)}


def request_in(m: dict) -> BuildRequest:
    return BuildRequest(source=m["source"], filename=m["filename"], target=m["target"], build_args=m["build_args"],
                        contexts={k: NamedContext(*v) for k, v in m["contexts"].items()},
                        context_name=m["context_name"], ignore_patterns=tuple(m["ignore_patterns"]),
                        platform=ops.Platform(*m["platform"]), build_platform=ops.Platform(*m["build_platform"]),
                        extra_hosts=tuple(ops.HostIP(*h) for h in m["extra_hosts"]), shm_size=m["shm_size"],
                        ulimits=tuple(ops.Ulimit(*u) for u in m["ulimits"]), labels=m["labels"])
