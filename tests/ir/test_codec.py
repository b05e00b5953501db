"""The codec: round trips, byte stability, digests, and the strict reference decoder against the fast msgspec load."""

from __future__ import annotations


import types
import typing

import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from ir import builder as b
from ir import codec, ops, spec_tables, validate, wire
from ir.errors import DecodeError
from tests.ir.strategies import D1, documents, states

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(documents())
def test_round_trip_is_identity_and_byte_stable(doc: ops.Document) -> None:
    for compress in (False, True):
        data = codec.dump_document(doc, compress=compress)
        back = validate.load_and_validate(data)
        assert back == doc
        assert codec.dump_document(back, compress=compress) == data
        assert {d: codec.op_digest(op) for d, op in back.ops.items()} == {d: d for d in doc.ops}


@SETTINGS
@given(states())
def test_digest_is_sha256_of_canonical_bytes_and_canonical_bytes_are_a_fixpoint(state: b.State) -> None:
    op = state.vertex.op
    data = codec.canonical_bytes(op)
    assert codec.op_digest(op) == state.vertex.digest == codec.digest_bytes(data)
    raw = msgpack.unpackb(data, raw=False)
    assert msgpack.packb(raw, use_bin_type=True) == data
    fresh = wire.decode(ops.Op, raw)
    assert fresh == op and hash(fresh) == hash(op)
    assert codec.canonical_bytes(ops.replace(fresh)) == data  # a fresh object, no cached bytes


@SETTINGS
@given(documents())
def test_decoded_objects_are_the_real_frozen_classes(doc: ops.Document) -> None:
    back = codec.load_document(codec.dump_document(doc))
    stack: list = [back]
    while stack:
        obj = stack.pop()
        if isinstance(obj, ops.Node):
            assert type(obj).__module__ == "ir.ops"
            for f in ops.field_specs(type(obj)):
                stack.append(getattr(obj, f.name))
            if ops.field_specs(type(obj)):
                name = ops.field_specs(type(obj))[0].name
                with pytest.raises(AttributeError, match="immutable"):
                    setattr(obj, name, getattr(obj, name))
        elif isinstance(obj, (tuple, list)):
            assert type(obj) is tuple
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())


def test_identical_ops_from_different_places_are_one_node() -> None:
    a = b.image("busybox", digest=D1).run(["true"])
    c = b.image("busybox", digest=D1).run(["true"])
    assert a.vertex.digest == c.vertex.digest
    doc = b.build_document({"default": a.merge([c])})
    assert len(doc.ops) == 3


def test_metadata_is_not_hashed() -> None:
    a = b.image("busybox", digest=D1).with_meta("one", "g", [ops.Location(0, 1)]).run(["true"])
    c = b.image("busybox", digest=D1).with_meta("two", "h", [ops.Location(0, 9)]).run(["true"])
    assert a.vertex.digest == c.vertex.digest


def test_encoder_omits_defaults_and_sorts_keys_and_sets() -> None:
    cfg = ops.ImageConfig(labels={"é": "1", "Z": "2", "a": "3"}, exposed_ports=("80/tcp", "443/tcp", "80/tcp"))
    wire_form = wire.encode(cfg)
    assert list(wire_form) == ["exposed_ports", "labels"]
    assert wire_form["exposed_ports"] == ["443/tcp", "80/tcp"]
    assert list(wire_form["labels"]) == ["Z", "a", "é"]
    assert wire.encode(ops.Mount("/")) == {"target": "/"}
    assert wire.encode(ops.Op(source=ops.SourceOp(scratch=ops.ScratchSource()))) == {"source": {"scratch": {}}}


def test_shortest_integer_forms() -> None:
    def enc(n: int) -> bytes:
        return codec.canonical_bytes(ops.Ref("x", n))[len(b"\x82\xa2op\xa1x\xa6output"):]

    assert enc(1) == b"\x01"
    assert enc(127) == b"\x7f"
    assert enc(128) == b"\xcc\x80"
    assert enc(65536) == b"\xce\x00\x01\x00\x00"
    assert enc(2 ** 64 - 1) == b"\xcf" + b"\xff" * 8
    assert enc(-1) == b"\xff"
    assert enc(-33) == b"\xd0\xdf"


def test_decoder_caches_shapes_but_still_checks_values() -> None:
    dec = wire._class_decoder(ops.Ref)
    assert dec({"op": "a"}) == ops.Ref("a")
    with pytest.raises(Exception) as info:
        wire.decode(ops.Ref, {"op": 1})
    assert str(info.value) == "op: expected a string, got integer"
    with pytest.raises(DecodeError, match="output: expected an integer, got boolean"):
        wire.decode(ops.Ref, {"op": "a", "output": True})
    with pytest.raises(DecodeError, match="output: field 'output' equals its default"):
        wire.decode(ops.Ref, {"op": "a", "output": 0})


@pytest.mark.parametrize("value, message", [
    ([], "expected a map, got array"),
    ("", "expected a map, got string"),
    ({"output": 1, "op": "a"}, "field 'op' is out of canonical (sorted) order"),
    ({"op": "a", "ouput": 1}, "unknown field 'ouput' (did you mean 'output'?)"),
    ({1: "a"}, "unknown field 1"),
    ({"output": 1}, "missing required field 'op'"),
    ({"op": None}, "op: expected a string, got nil"),
    ({"op": b"a"}, "op: expected a string, got binary"),
    ({"op": "a", "output": 1.0}, "output: expected an integer, got float"),
])
def test_decoder_errors(value, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        wire.decode(ops.Ref, value)
    assert str(info.value) == message


def test_decoder_error_paths_through_lists_and_maps() -> None:
    raw = {"args": ["true"], "mounts": [{"target": "/"}, {"input": "0", "target": "/x"}]}
    with pytest.raises(DecodeError) as info:
        wire.decode(ops.ExecOp, raw, "ops[sha256:abc]")
    assert str(info.value) == "ops[sha256:abc].mounts[1].input: expected an integer, got string"
    raw = {"config": {"labels": {"a": "1", "b": 2}}}
    with pytest.raises(DecodeError) as info:
        wire.decode(ops.ImageOp, raw)
    assert str(info.value) == "config.labels.b: expected a string, got integer"
    with pytest.raises(DecodeError) as info:
        wire.decode(ops.ImageOp, {"config": {"labels": {"b": "1", "a": "2"}}})
    assert str(info.value) == "config.labels: map keys are not in canonical (sorted) order"


def test_union_members() -> None:
    with pytest.raises(DecodeError, match="exactly one of copy, mkdir, mkfile, rm, symlink must be set, got none"):
        wire.decode(ops.FileAction, {})
    assert wire.decode(ops.SourceOp, {"scratch": {}}) == ops.SourceOp(scratch=ops.ScratchSource())


@SETTINGS
@given(documents())
def test_document_bytes_are_the_reference_encoding(doc: ops.Document) -> None:
    assert codec.document_bytes(doc) == msgpack.packb(wire.encode(doc), use_bin_type=True)


def test_classes_outside_the_ops_have_only_shared_defaults() -> None:
    """What lets ``document_bytes`` encode roots, metadata and sources with msgspec (which leaves
    out a field when it *is* its default object): defaults that every equal value is."""
    for cls in (ops.Ref, ops.OpMetadata, ops.Location, ops.SourceFile):
        for f in ops.field_specs(cls):
            assert f.required or any(f.default is v for v in (0, "", (), b"", None, False)), (cls, f)
    built = ops.OpMetadata(description="abc"[3:], group=str(), locations=tuple([]))
    assert codec.canonical_bytes(built) == b"\x80" == msgspec.msgpack.encode(built)


def test_ops_are_immutable_and_hashable_even_with_labels() -> None:
    import copy
    import pickle

    cfg = ops.ImageConfig(labels={"b": "1", "a": "2"})
    assert type(cfg.labels) is ops.FrozenMap and cfg.labels == {"a": "2", "b": "1"}
    with pytest.raises(TypeError, match="read-only"):
        cfg.labels["c"] = "3"  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        cfg.labels.update(c="3")
    op = b.image("busybox", digest=D1).with_image(cfg).vertex.op
    assert hash(op) == hash(copy.deepcopy(op)) and pickle.loads(pickle.dumps(op)) == op
    back = codec.load_document(codec.dump_document(b.build_document({"default": b.image("x").with_image(cfg)})))
    assert all(type(o.image.config.labels) is ops.FrozenMap for o in back.ops.values() if o.image)


def _minimal(tp):
    """A small wire value of type ``tp`` that differs from any default."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return typing.get_args(tp)[-1]
    if origin is tuple:
        return []
    if origin is dict:
        return {}
    if ops.is_node(tp):
        return {f.name: _minimal(f.type) for f in ops.field_specs(tp) if f.required}
    return {str: "x", int: 7, bool: True, bytes: b"x"}[tp]


@pytest.mark.parametrize("cls, field", [(c, f) for c in spec_tables.classes() for f in ops.field_specs(c)
                                        if not f.required and f.default is not None],
                         ids=lambda v: getattr(v, "__name__", getattr(v, "name", "")))
def test_every_field_spelled_at_its_default_changes_on_reencoding(cls, field) -> None:
    """The fast load's canonical check, field by field: a map holding a field at its default value
    decodes (msgspec) to a struct whose re-encoding drops that field, so the bytes differ and the
    file is refused.  Needs ``ops.Node``'s identity rules to be right for every default."""
    value = _minimal(cls)
    value[field.name] = wire.encode(field.default) if ops.is_node(type(field.default)) else (
        list(field.default) if isinstance(field.default, tuple) else dict(field.default)
        if isinstance(field.default, dict) else field.default)
    data = msgpack.packb(dict(sorted(value.items())), use_bin_type=True)
    decoded = msgspec.msgpack.decode(data, type=cls)
    assert msgspec.msgpack.Encoder(order="sorted").encode(decoded) != data
