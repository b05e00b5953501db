"""Mutation fuzzing of the reader with hypothesis: byte-level edits of valid files and structural
edits of their msgpack maps.  Every input is either accepted — and then it is canonical — or
refused with an ``IRError``; nothing else may escape.  Regression cases found by fuzzing are at
the end.  (``tests/ir/fuzz_ir.py`` is the longer, coverage-guided atheris run.)"""

from __future__ import annotations

import hashlib
import typing

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ir import codec, ops, validate, wire
from ir.errors import IRError, ValidationErrors
from tests.ir.strategies import documents

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def check(data: bytes) -> str:
    """Run the reader; return "ok" or the error text, asserting the contract."""
    try:
        doc = validate.load_and_validate(data)
    except ValidationErrors as e:
        assert all(str(err) and "\n" not in str(err) for err in e.errors)
        return str(e)
    except IRError as e:
        text = str(e)
        assert text and "\n" not in text, text
        return text
    assert codec.document_bytes(doc) == codec.load_payload(data)[0]
    return "ok"


@st.composite
def byte_mutants(draw) -> bytes:
    data = bytearray(codec.dump_document(draw(documents()), compress=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[i] = draw(st.sampled_from([0x00, 0x7f, 0x80, 0x90, 0xa0, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xca, 0xcc,
                                            0xd9, 0xdc, 0xde, 0xff]))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[i:]
        elif kind == "dup":
            j = draw(st.integers(i, len(data)))
            data[j:j] = data[i:j][:64]
    return bytes(data)


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1), st.floats(allow_nan=False), st.text(max_size=8),
              st.binary(max_size=8), st.sampled_from(["sha256:" + "0" * 64, "/", "bind", "exec", "default"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


@st.composite
def structural_mutants(draw) -> bytes:
    raw = msgpack.unpackb(codec.dump_document(draw(documents()), compress=False)[12:], raw=False)
    for _ in range(draw(st.integers(1, 3))):
        # Walk to a random container and change one entry.
        node = raw
        for _depth in range(draw(st.integers(0, 8))):
            children = list(node.values()) if isinstance(node, dict) else node
            children = [c for c in children if isinstance(c, (dict, list)) and c]
            if not children:
                break
            node = draw(st.sampled_from(children))
        if isinstance(node, dict) and node:
            k = draw(st.sampled_from(sorted(node)))
            action = draw(st.sampled_from(["replace", "delete", "add", "reorder"]))
            if action == "replace":
                node[k] = draw(values)
            elif action == "delete":
                del node[k]
            elif action == "add":
                node[draw(st.text(max_size=10))] = draw(values)
            else:
                items = list(node.items())
                node.clear()
                node.update(reversed(items))
        elif isinstance(node, list) and node:
            i = draw(st.integers(0, len(node) - 1))
            action = draw(st.sampled_from(["replace", "delete", "dup"]))
            if action == "replace":
                node[i] = draw(values)
            elif action == "delete":
                del node[i]
            else:
                node.insert(i, node[i])
    return codec.HEADER.pack(codec.MAGIC, 1, 0, 0) + msgpack.packb(raw, use_bin_type=True)


@FUZZ
@given(byte_mutants())
def test_byte_mutants(data: bytes) -> None:
    check(data)


@FUZZ
@given(structural_mutants())
def test_structural_mutants(data: bytes) -> None:
    check(data)


# --------------------------------------------------------------------------- fast load = reference


def reference(data: bytes) -> ops.Document | None:
    """What the strict reference decoder (``ir.wire``) makes of a file, or ``None``."""
    try:
        return codec.load_document_strict(data)
    except IRError:
        return None


def assert_agree(data: bytes) -> None:
    """msgspec's canonical load accepts exactly what the reference decoder accepts."""
    try:
        payload = codec.unframe(data)
    except IRError:
        return
    fast, slow = codec._load_canonical(payload), reference(data)
    assert (fast is None) == (slow is None), (fast, slow)
    assert fast == slow


@FUZZ
@given(byte_mutants())
def test_fast_load_agrees_on_byte_mutants(data: bytes) -> None:
    assert_agree(data)


@FUZZ
@given(structural_mutants())
def test_fast_load_agrees_on_structural_mutants(data: bytes) -> None:
    assert_agree(data)


def _node_maps(raw, cls: type):
    """(map, class) for every map in a wire value that decodes as an IR class, with its class."""
    yield raw, cls
    for f in ops.field_specs(cls):
        if f.name not in raw:
            continue
        tp = f.type
        args = typing.get_args(tp)
        inner = next((a for a in (tp, *args) if ops.is_node(a)), None)
        value = raw[f.name]
        if inner is not None and type(value) is dict and typing.get_origin(tp) is not dict:
            yield from _node_maps(value, inner)
        elif inner is not None and type(value) is list:
            for item in value:
                yield from _node_maps(item, inner)
        elif inner is not None and type(value) is dict:
            for item in value.values():
                yield from _node_maps(item, inner)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents(), st.data())
def test_a_field_spelled_out_at_its_default_is_refused_by_both(doc: ops.Document, data) -> None:
    """The case identity-based omission could miss: a present field equal to its default (``mode:
    420``, ``platform: {}``) must make the file non-canonical for the fast load too."""
    raw = msgpack.unpackb(codec.document_bytes(doc), raw=False)
    candidates = [(m, f) for m, cls in _node_maps(raw, ops.Document) for f in ops.field_specs(cls)
                  if not f.required and f.name not in m and f.default is not None]
    if not candidates:
        return
    node, f = data.draw(st.sampled_from(candidates))
    node[f.name] = wire.encode(f.default) if isinstance(f.default, ops.Node) else (
        list(f.default) if isinstance(f.default, tuple) else dict(f.default) if isinstance(f.default, dict) else f.default)
    items = sorted(node.items())
    node.clear()
    node.update(items)
    payload = msgpack.packb(rekeyed(raw), use_bin_type=True)  # digests true: only canonical form is wrong
    assert codec._load_canonical(payload) is None
    assert reference(codec.HEADER.pack(codec.MAGIC, codec.VERSION, codec.COMPRESSION_NONE, 0) + payload) is None


def rekeyed(raw: dict) -> dict:
    """``raw`` with every op stored under the digest of its bytes as they now are (inputs, roots
    and metadata following), so a mutation is not refused merely for a digest mismatch."""
    old_ops, new_ops, renamed = raw["ops"], {}, {}

    def visit(digest: str) -> str:
        if digest not in renamed:
            op = old_ops[digest]
            for ref in op.get("inputs", []):
                ref["op"] = visit(ref["op"])
            renamed[digest] = "sha256:" + hashlib.sha256(msgpack.packb(op, use_bin_type=True)).hexdigest()
            new_ops[renamed[digest]] = op
        return renamed[digest]

    for digest in list(old_ops):
        visit(digest)
    raw["ops"] = dict(sorted(new_ops.items()))
    for ref in raw["roots"].values():
        ref["op"] = renamed[ref["op"]]
    if "metadata" in raw:
        raw["metadata"] = dict(sorted((renamed[d], m) for d, m in raw["metadata"].items()))
    return raw


# --------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("data, message", [
    # A map whose key is itself a map or an array: msgpack raised TypeError (a traceback).
    (codec.HEADER.pack(codec.MAGIC, 1, 0, 0) + b"\x81\x91\x01\x01", "payload is not valid msgpack: unhashable type: 'list'"),
    (codec.HEADER.pack(codec.MAGIC, 1, 0, 0) + b"\x81\x80\x01", "payload is not valid msgpack: unhashable type: 'dict'"),
    # A reserved msgpack byte: the message was empty.
    (codec.HEADER.pack(codec.MAGIC, 1, 0, 0) + b"\xc1", "payload is not valid msgpack: FormatError"),
])
def test_regressions(data: bytes, message: str) -> None:
    assert check(data) == message
