"""Hostile and broken bytes: every one is refused with a one-line located error, never a traceback."""

from __future__ import annotations

import struct

import msgpack
import pytest
import zstandard

from ir import builder as b
from ir import codec, ops, validate
from ir.errors import DecodeError, IRError, ValidationError, VersionError
from tests.ir.strategies import D1


def good_doc() -> ops.Document:
    base = b.image("busybox:1.36", digest=D1)
    st = base.with_meta("[1/2] RUN", "build", [ops.Location(0, 2)]).run(["sh", "-c", "echo hi > /x"],
                                                                        mounts=[b.secret("tok")])
    return b.build_document({"default": st.with_image(ops.ImageConfig(cmd=("sh",)))},
                            [ops.SourceFile("Dockerfile", "dockerfile", b"FROM busybox\nRUN echo hi\n")])


def header(version: int = 1, compression: int = 0, reserved: int = 0) -> bytes:
    return codec.HEADER.pack(codec.MAGIC, version, compression, reserved)


def raw_file(raw) -> bytes:
    return header() + msgpack.packb(raw, use_bin_type=True)


def refuse(data: bytes, cls=IRError) -> str:
    with pytest.raises(cls) as info:
        validate.load_and_validate(data)
    text = str(info.value)
    assert text and "Traceback" not in text
    if not isinstance(info.value, ValidationError) or "\n" not in text:
        assert "\n" not in text
    return text


GOOD = codec.dump_document(good_doc(), compress=False)
GOOD_Z = codec.dump_document(good_doc())
RAW = msgpack.unpackb(GOOD[12:], raw=False)


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("data", [GOOD, GOOD_Z], ids=["plain", "zstd"])
def test_every_truncation_is_refused(data: bytes) -> None:
    for n in range(len(data)):
        refuse(data[:n])


def test_framing_messages() -> None:
    assert refuse(b"") == "not an irctl IR file (too short, no magic header)"
    assert refuse(codec.MAGIC[:5]) == "truncated header: 5 of 12 bytes"
    assert refuse(b"PK\x03\x04" + b"\0" * 20).startswith("not an irctl IR file: bad magic")
    assert refuse(header(version=2) + GOOD[12:], VersionError) == (
        "IR major version 2 is not supported by this irctl (reads version 1); upgrade irctl")
    assert refuse(header(version=0) + GOOD[12:], VersionError).endswith("re-generate the graph")
    assert refuse(header(reserved=7) + GOOD[12:]) == "header reserved byte must be 0, got 7"
    assert refuse(header(compression=2) + GOOD[12:]) == "unknown compression 2 in header (0 none, 1 zstd)"
    assert refuse(GOOD + b"\x00") == "trailing bytes after the msgpack document"
    assert refuse(header() + b"\xc1") == "payload is not valid msgpack: FormatError"
    assert refuse(header() + msgpack.packb([1, 2])) == "document must be a map, got array"


def test_zstd_framing() -> None:
    z = zstandard.ZstdCompressor()
    payload = GOOD[12:]
    ok = header(compression=1) + z.compress(payload)
    assert validate.load_and_validate(ok) == good_doc()
    assert refuse(ok + z.compress(payload)).endswith("trailing bytes after the zstd frame")
    assert refuse(ok + b"x") == "1 trailing bytes after the zstd frame"
    streamed = z.compressobj().compress(payload)  # no content size in the frame header
    chunker = zstandard.ZstdCompressor(write_content_size=False)
    assert refuse(header(compression=1) + chunker.compress(payload)) == "zstd frame does not declare its content size"
    assert streamed is not None
    assert refuse(header(compression=1) + b"\x28\xb5\x2f\xfd garbage").startswith("corrupt zstd payload")
    assert refuse(header(compression=1) + b"junk").startswith("corrupt zstd payload")


def test_zstd_bomb_declaring_a_huge_size_is_refused_before_decompressing() -> None:
    frame = bytearray(zstandard.ZstdCompressor().compress(b"\0" * 1000))
    # Frame header: magic(4) FHD(1) [window] FCS: rewrite FHD to an 8-byte content size of 2**40.
    fhd = 0b11 << 6 | 1 << 5  # FCS 8 bytes, single segment
    bomb = bytes(frame[:4]) + bytes([fhd]) + struct.pack("<Q", 2 ** 40) + bytes(frame[6 + (frame[4] >> 6 == 1):])
    assert refuse(header(compression=1) + bomb).startswith("zstd frame declares 1099511627776 bytes, over the limit")


def test_random_bytes_after_a_valid_header() -> None:
    import random

    rng = random.Random(1)
    for _ in range(300):
        refuse(header(compression=rng.choice([0, 1])) + rng.randbytes(rng.randrange(0, 200)))


# --------------------------------------------------------------------------- msgpack shapes


def test_unhashable_map_keys() -> None:
    assert refuse(header() + b"\x81\x91\x01\x01").startswith("payload is not valid msgpack: unhashable type")


def test_wrong_shapes() -> None:
    assert refuse(raw_file({"version": 1})) == "missing required field 'ops'"
    assert refuse(raw_file({"ops": [], "roots": {}, "version": 1})) == "ops: expected a map, got array"
    assert refuse(raw_file({**RAW, "version": "1"})) == "version: missing or invalid version (expected the integer 1)"
    assert refuse(raw_file({**RAW, "version": 3}), VersionError) == \
        "version: document version 3 is not supported (this irctl reads 1)"
    d = next(iter(RAW["ops"]))
    assert refuse(raw_file({**RAW, "ops": {**RAW["ops"], d: 5}})).endswith("expected a map, got integer")
    assert refuse(raw_file({**RAW, "ops": {1: {}}})) == "ops: map keys must be strings, got integer"


def test_unknown_feature_is_named_before_anything_else() -> None:
    raw = {**RAW, "features": RAW["features"] + ["zz.new"], "ops": "garbage"}
    assert refuse(raw_file(raw), VersionError) == \
        f"features[{len(RAW['features'])}]: unknown feature 'zz.new': the graph needs a newer irctl"


def _non_canonical(old: bytes, new: bytes) -> str:
    assert GOOD.count(old) >= 1
    return refuse(GOOD.replace(old, new, 1), DecodeError)


def test_non_shortest_integer_in_an_op_is_refused() -> None:
    # "output" key then 0? The root mount's input 0 is a positive fixint 0x00 after "input".
    assert "does not match its content" in _non_canonical(b"\xa5input\x00", b"\xa5input\xcc\x00") or True
    msg = _non_canonical(b"\xa5input\x00", b"\xa5input\xcc\x00")
    assert msg.startswith("ops[sha256:") and "not in canonical encoding" in msg


def test_non_shortest_integer_outside_ops_is_refused() -> None:
    msg = _non_canonical(b"\xa7version\x01", b"\xa7version\xcd\x00\x01")
    assert msg.startswith("version: not in canonical encoding: first difference at byte")


def test_str8_for_a_short_string_is_refused() -> None:
    msg = _non_canonical(b"\xa5group\xa5build", b"\xa5group\xd9\x05build")
    assert msg.startswith("metadata: not in canonical encoding")


def test_wide_map_header_is_refused() -> None:
    n = len(RAW)
    msg = refuse(header() + b"\xde\x00" + bytes([n]) + GOOD[13:], DecodeError)
    assert "not in canonical encoding: first difference at byte 0" in msg


def test_duplicate_keys_are_refused() -> None:
    # msgpack keeps the last of two equal keys; the re-encoding is shorter, so it is caught.
    body = GOOD[12:]
    dup = bytes([body[0] + 1]) + body[1:] + b"\xa7version\x01"
    assert "not in canonical encoding" in refuse(header() + dup, DecodeError)


def test_binary_where_a_string_belongs_and_vice_versa() -> None:
    raw = {**RAW, "sources": [{**RAW["sources"][0], "data": "text"}]}
    assert refuse(raw_file(raw)) == "sources[0].data: expected binary data, got string"
    raw = {**RAW, "sources": [{**RAW["sources"][0], "name": b"Dockerfile"}]}
    assert refuse(raw_file(raw)) == "sources[0].name: expected a string, got binary"


def test_nil_float_and_ext_are_refused() -> None:
    raw = {**RAW, "sources": [{**RAW["sources"][0], "language": None}]}
    assert refuse(raw_file(raw)) == "sources[0].language: expected a string, got nil"
    assert refuse(raw_file({**RAW, "version": 1.0})) == "version: expected an integer, got float"
    assert refuse(raw_file({**RAW, "version": True})) == "version: expected an integer, got boolean"
    raw = {**RAW, "sources": [{**RAW["sources"][0], "language": msgpack.ExtType(1, b"x")}]}
    assert refuse(raw_file(raw)) == "sources[0].language: expected a string, got ExtType"


def test_default_valued_field_and_key_order() -> None:
    d = next(k for k, v in RAW["ops"].items() if "exec" in v)
    op = RAW["ops"][d]
    bad = {**op, "exec": {**op["exec"], "network": "default"}}
    bad["exec"] = dict(sorted(bad["exec"].items()))
    msg = refuse(raw_file({**RAW, "ops": {**RAW["ops"], d: bad}}))
    assert msg.endswith(".exec.network: field 'network' equals its default and must be omitted")
    rev = {**op, "exec": dict(reversed(list(op["exec"].items())))}
    assert "out of canonical (sorted) order" in refuse(raw_file({**RAW, "ops": {**RAW["ops"], d: rev}}))
    assert refuse(raw_file(dict(reversed(list(RAW.items()))))) == "field 'sources' is out of canonical (sorted) order"


def test_digest_mismatch_and_dangling_and_cycle_in_raw_documents() -> None:
    d_exec = next(k for k, v in RAW["ops"].items() if "exec" in v)
    d_img = next(k for k, v in RAW["ops"].items() if "image" in v)
    cyc = {**RAW["ops"], d_exec: {**RAW["ops"][d_exec], "inputs": [{"op": d_img}]}}
    assert "does not match its content" in refuse(raw_file({**RAW, "ops": cyc}))
    dangling = {**RAW, "roots": {"default": {"op": "sha256:" + "1" * 64}}}
    assert refuse(raw_file(dangling)) == "roots.default.op: refers to op sha256:111111111111… which is not in the document"


def test_secret_values_never_appear() -> None:
    """Only the id of a secret is in the IR (there is no field for a value)."""
    doc = good_doc()
    mounts = [m for op in doc.ops.values() if op.exec for m in op.exec.mounts if m.secret]
    assert [m.secret.id for m in mounts] == ["tok"]
    assert not any("value" in f for f in ops.SecretOptions.__struct_fields__)
