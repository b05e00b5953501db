"""Hostile IR files that try to make a reader spend memory: compression bombs, lying frame
headers, declared lengths with nothing behind them, deep nesting, and payloads of tiny repeated
tokens (each a Python object many times its size) shaped to pass as much of the schema as they can.

Shared by ``test_bounds.py`` (each file through the real CLI, peak RSS measured) and the fuzz
target (``tests/fuzz/targets.py:ir_memory``)."""

from __future__ import annotations

import struct
import sys

import msgpack
import zstandard

from ir import limits
from ir.codec import HEADER, MAGIC

DIGEST = "sha256:" + "0" * 64


def frame(payload: bytes, compress: bool = True) -> bytes:
    if compress:
        payload = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(payload)
    return HEADER.pack(MAGIC, 1, 1 if compress else 0, 0) + payload


def array_of(n: int, item: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", n) + item * n


def doc(op: dict | None = None, **extra) -> bytes:
    """msgpack of a document with one op (keys in canonical order: ``features``, ``ops``, ``roots``…)."""
    body = {"ops": {DIGEST: op or {}}, "roots": {"default": {"op": DIGEST}}, "version": 1, **extra}
    return msgpack.packb(body)


def lying_frame(actual: int, declared: int) -> bytes:
    """A zstd frame of ``actual`` zero bytes whose header declares ``declared``."""
    z = bytearray(zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * actual))
    assert z[4] >> 6 == 2 and (z[4] >> 5) & 1  # 4-byte content size, single segment
    z[5:9] = struct.pack("<I", declared)
    return HEADER.pack(MAGIC, 1, 1, 0) + bytes(z)


def splice(template: bytes, marker: bytes, replacement: bytes) -> bytes:
    assert template.count(marker) == 1
    return template.replace(marker, replacement)


def _exec_with(field: str, n: int, item: bytes) -> bytes:
    """An exec op whose ``field`` is an array of ``n`` copies of ``item`` (spliced in raw)."""
    marker = "MARK" * 8
    return splice(doc({"exec": {"args": ["sh"], "mounts": [{"target": "/"}], field: marker}}),
                  msgpack.packb(marker), array_of(n, item))


def at_budget(make, unit: int, compress: bool) -> bytes:
    """``make(n)`` with the largest ``n`` whose payload the limits still let in (its estimate just
    under ``limits.MIN_BUDGET``): the most memory a file of that shape can ask for."""
    per_item = (limits.estimate(make(2 * unit)) - limits.estimate(make(unit))) / unit
    base = limits.estimate(make(unit)) - per_item * unit
    n = int((limits.MIN_BUDGET - base) / per_item) - 16
    return frame(make(n), compress=compress)


def _random_args(n: int) -> bytes:
    """An exec op with ``n`` random two-character arguments: compresses about 6:1 (inside the
    ratio limit), so a file under 1 MiB carries the most small strings the budget allows."""
    import random

    rnd = random.Random(n)
    alphabet = [c.encode() for c in "abcd"]
    items = b"".join(b"\xa2" + rnd.choice(alphabet) + rnd.choice(alphabet) for _ in range(n))
    return _exec_with("args", n, b"").replace(b"\xdd" + struct.pack(">I", n), b"\xdd" + struct.pack(">I", n) + items, 1)


def cases(scale: int = 1) -> dict[str, bytes]:
    """name → file bytes; each below 1 MiB (``scale`` shrinks the big ones for quick fuzz runs)."""
    n = 900_000 // scale
    return {
        # zstd run-length blocks: a few KiB declaring up to 1 GiB
        "rle-bomb-nils": frame(array_of(200_000_000 // scale, b"\xc0")),
        "rle-bomb-empty-lists": frame(array_of(200_000_000 // scale, b"\x90")),
        "rle-bomb-string": frame(doc(description="a" * (200_000_000 // scale))),
        "rle-bomb-args": frame(_exec_with("args", 30_000_000 // scale, b"\xa2ab")),
        "bomb-at-ratio-limit": frame(array_of(30 * 30_000 // scale, b"\x90")),
        "lying-frame-size": lying_frame(1 << 20, 1000),
        # declared lengths with nothing behind them
        "array32-declared-4g": frame(b"\xdd\xff\xff\xff\xff", compress=False),
        "map32-declared-4g": frame(b"\xdf\xff\xff\xff\xff", compress=False),
        "str32-declared-4g": frame(b"\xdb\xff\xff\xff\xff", compress=False),
        "bin32-declared-4g": frame(b"\xc6\xff\xff\xff\xff", compress=False),
        "ops-map-declared-4g": frame(splice(doc(), msgpack.packb({DIGEST: {}}), b"\xdf\xff\xff\xff\xff"),
                                     compress=False),
        # nesting
        "deep-arrays": frame(b"\x91" * n + b"\xc0", compress=False),
        "deep-maps": frame(b"\x81\xa1k" * (n // 3) + b"\xc0", compress=False),
        "deep-arrays-zstd": frame(b"\x91" * (n * 30) + b"\xc0"),
        # tiny repeated tokens, uncompressed (≤ 1 MiB) and compressed (as many as the limits let in)
        "empty-lists": frame(array_of(n, b"\x90"), compress=False),
        "empty-maps": frame(array_of(n, b"\x80"), compress=False),
        "negative-ints": frame(array_of(n, b"\xe0"), compress=False),
        "exts": frame(array_of(n // 3, b"\xd4\x01\x00"), compress=False),
        "args-2-letter": frame(_exec_with("args", n // 3, b"\xa2ab"), compress=False),
        "args-2-letter-zstd": frame(_exec_with("args", 10 * n, b"\xa2ab")),
        "env-zstd": frame(_exec_with("env", 10 * n, b"\xa3a=b")),
        "file-actions-empty-zstd": frame(splice(doc({"file": {"actions": "MARK" * 8}}), msgpack.packb("MARK" * 8),
                                                array_of(10 * n, b"\x80"))),
        "mounts-zstd": frame(_exec_with("mounts", 10 * n, b"\x81\xa6target\xa1/")),
        # as many tiny tokens as the estimate lets in: the real peak stays under it
        "at-budget-empty-lists": at_budget(lambda k: array_of(k, b"\x90"), 1000, False),
        "at-budget-empty-maps": at_budget(lambda k: array_of(k, b"\x80"), 1000, False),
        "at-budget-file-actions": at_budget(
            lambda k: splice(doc({"file": {"actions": "MARK" * 8}}), msgpack.packb("MARK" * 8), array_of(k, b"\x80")),
            1000, False),
        "at-budget-args": at_budget(_random_args, 1000, True),
        "roots-map-zstd": frame(splice(doc(), msgpack.packb({"default": {"op": DIGEST}}),
                                       b"\xdf" + struct.pack(">I", 2 * n) +
                                       b"".join(msgpack.packb(f"r{i}") + b"\x80" for i in range(2 * n)))),
    }


def valid_near_budget() -> bytes:
    """A *valid* graph under 1 MiB whose decoding estimate is near the budget (one exec op with
    900,000 two-letter arguments and 100,000 env entries): what every reader of a valid file —
    the listing, JSON, Graphviz — must also handle within the limit."""
    import random

    from ir import builder as b
    from ir.codec import dump_document

    rnd = random.Random(1)
    args = [rnd.choice("abcd") + rnd.choice("abcd") for _ in range(900_000)]
    st = b.image("busybox", digest="sha256:" + "ab" * 32).run(args, env=[f"{a}=1" for a in args[:100_000]])
    return dump_document(b.build_document({"default": st}))


if __name__ == "__main__":  # write the cases to a directory, to try them by hand
    import pathlib

    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, data in cases().items():
        (out / f"{name}.irg").write_bytes(data)
        print(f"{name}: {len(data)} bytes")
